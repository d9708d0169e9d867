"""Re-measure the golden figures of tests/core/test_golden_translation.py after the bundled translation models
were retrained, and write them into that file (its GOLDEN block) so the test pins the new models.

    python scripts/measure_golden_translation.py          # measure and rewrite the block
    python scripts/measure_golden_translation.py --check  # measure and only print (exit 1 if they differ)

Each figure is the per-band mean and standard deviation (DN = reflectance x 10,000) of the plugin's output for a
real Sentinel-1 sample, measured exactly as the test does (core.inference.translate_sar_to_eo on CPU).
"""
from __future__ import annotations

import argparse
import ast
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TEST = REPO / "tests" / "core" / "test_golden_translation.py"
BLOCK = re.compile(r"^GOLDEN = \{.*?^\}\n", re.S | re.M)


def measure(band_set: str, patches) -> dict:
    import rasterio

    from sar2eo_cloud_plugin.core import inference

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for patch in patches:
            src = next(p for p in sorted((REPO / "sample_data" / "s1").glob("*_VVVH.tif")) if f"_{patch}_" in p.name)
            dst = Path(tmp) / f"{band_set}_{patch}.tif"
            inference.translate_sar_to_eo(inference.TranslationRequest(str(src), str(dst), band_set=band_set,
                                                                       device="cpu"))
            with rasterio.open(dst) as ds:
                data = ds.read().astype(np.float64)
            out[patch] = ([round(float(v), 1) for v in data.mean(axis=(1, 2))],
                          [round(float(v), 1) for v in data.std(axis=(1, 2))])
    return out


def render(golden: dict) -> str:
    lines = ["GOLDEN = {   # band set -> patch -> (per-band means, per-band standard deviations), DN = reflectance x "
             "10,000"]
    for bs in sorted(golden):
        items = [f'"{p}": ({m}, {s})' for p, (m, s) in golden[bs].items()]
        lines.append(f'    "{bs}": {{' + (",\n" + " " * (len(bs) + 9)).join(items) + "},")
    return "\n".join(lines) + "\n}\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    text = TEST.read_text(encoding="utf-8")
    m = BLOCK.search(text)
    if not m:
        raise SystemExit(f"no GOLDEN block in {TEST}")
    old = ast.literal_eval(m.group(0).split("=", 1)[1])
    new = {bs: measure(bs, list(old[bs])) for bs in sorted(old)}
    print(render(new))
    if args.check:
        return 0 if new == old else 1
    TEST.write_text(text[:m.start()] + render(new) + text[m.end():], encoding="utf-8")
    print(f"updated {TEST.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

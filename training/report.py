"""Markdown tables of the SAR -> EO results, from the runs' ``eval/metrics.json`` (the numbers in the README and in
training/RESULTS.md are pasted from this output, never typed by hand).

    python -m training.report runs/bundled_sar2eo_rgb runs/bundled_sar2eo_nir_swir_re runs/bundled_sar2eo_rgbn \
        runs/bundled_sar2eo_rgb_unpaired
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List

from sar2eo_cloud_plugin.core.bands import band_set

from .cyclegan import SEED_METRICS


def _f(x, nd: int) -> str:
    return "–" if x is None else f"{x:.{nd}f}"


def tables(run_dirs: List[Path]) -> str:
    evs = [(Path(r).name, json.loads((Path(r) / "eval" / "metrics.json").read_text(encoding="utf-8")))
           for r in run_dirs]
    out = ["| Run | Steps | Model PSNR / SSIM | Baseline PSNR / SSIM | Seed (SEN12MS) PSNR / SSIM | Target met? |",
           "| --- | --- | --- | --- | --- | --- |"]
    for name, ev in evs:
        m, b, t = ev["model"], ev["baseline"], ev["targets"]
        seed = SEED_METRICS[ev["band_set"]]
        verdict = "yes" if t["all"] else ("no (" + ", ".join(k.upper() for k in ("psnr", "ssim") if not t[k])
                                          + " missed): experimental")
        out.append(f"| {band_set(ev['band_set']).label} `{name}` | {ev['steps']} | {_f(m['psnr'], 2)} / "
                   f"{_f(m['ssim'], 3)} | {_f(b['psnr'], 2)} / {_f(b['ssim'], 3)} | {seed['psnr_db']} / "
                   f"{seed['ssim']} | {verdict} |")
    out += ["", "| Run | Band RMSE model | Band RMSE baseline | NDVI RMSE / corr. model | NDVI RMSE baseline |",
            "| --- | --- | --- | --- | --- |"]
    for name, ev in evs:
        m, b = ev["model"], ev["baseline"]
        rm = ", ".join(f"{k} {_f(v, 4)}" for k, v in m["band_rmse"].items())
        rb = ", ".join(f"{k} {_f(v, 4)}" for k, v in b["band_rmse"].items())
        nd = (f"{_f(m['ndvi']['ndvi_rmse'], 3)} / {_f(m['ndvi']['ndvi_corr'], 2)}" if m["ndvi"].get("applicable")
              else "n/a")
        ndb = _f(b["ndvi"]["ndvi_rmse"], 3) if b["ndvi"].get("applicable") else "n/a"
        out.append(f"| `{name}` | {rm} | {rb} | {nd} | {ndb} |")
    out += ["", "| Run | Sen1Floods11 L1C (apart) model PSNR / SSIM | baseline PSNR / SSIM |", "| --- | --- | --- |"]
    for name, ev in evs:
        f = ev.get("sen1floods11")
        if f:
            out.append(f"| `{name}` | {_f(f['model']['psnr'], 2)} / {_f(f['model']['ssim'], 3)} | "
                       f"{_f(f['baseline']['psnr'], 2)} / {_f(f['baseline']['ssim'], 3)} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(tables([Path(a) for a in sys.argv[1:]]))

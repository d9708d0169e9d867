"""A full Sentinel-2 tile through the cloud mask: end to end vs the bare network, peak memory, and
ukis-csmask's own ``CSmask`` on the same 30 m array, all in one run.

    .venv/bin/python benchmarks/bench_cloud_scene.py             # 10,980 x 10,980 px (a whole S2 tile)
    .venv/bin/python benchmarks/bench_cloud_scene.py --size 3660 # a ninth of it, for a quick look

Input (GENERATED from REAL values): a six-band uint16 stack B2, B3, B4, B8, B11, B12 on the 10 m grid
(the 20 m bands as the L2A sample stores them, on the 10 m grid), made by repeating the real BigEarthNet
patch of ``sample_data/s2``; named ``S2A_MSIL2A_...`` so the level is detected. Speed does not depend
on the content.

Each measurement runs in a fresh subprocess so its peak RSS (VmHWM, reset after the imports, the model
load and a warm-up run; what torch and the model hold is inside it) is its own, with GDAL's block cache
capped at 64 MB (``--gdal-cache-mb``; it is a cache QGIS sizes for the whole application, not the run's):

- ``plugin``: ``core.cloud.cloud_mask`` with the defaults (auto -> the 4-band model at 30 m), the class
  raster written at 10 m. The network's forward calls are timed inside the run and their inputs kept;
  right after the run the same network is replayed on tensors of exactly those shapes ("bare"). The ratio is
  end-to-end time / bare time, both measured in the same process, one after the other. The replay
  feeds random tensors of the recorded shapes (a convolutional network's cost does not depend on the
  values; keeping the real ones would add hundreds of MB to the measured peak).
- the same with ``precision="bfloat16"`` (autocast; the replay too).
- ``csmask``: ukis-csmask 1.0.0 ``CSmask`` (onnxruntime, its own 256 px tiling) on the 30 m array that
  the plugin's network sees (the 10 m bands averaged 3 x 3, reflectance 0-1), 4-band L2A model.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_engine import _reset_peak_rss, _rss_mb  # noqa: E402  (the peak-RSS readings, one definition)

SOURCE = REPO / "sample_data" / "s2" / "S2A_MSIL2A_20170613T101031_87_48_L2A12.tif"
BANDS = ("B2", "B3", "B4", "B8", "B11", "B12")


def make_scene(path: Path, size: int) -> Path:
    """GENERATED six-band stack of ``size`` x ``size`` px repeating the real patch, written strip by strip."""
    import rasterio
    from rasterio.windows import Window

    if path.exists():
        return path
    with rasterio.open(SOURCE) as src:
        order = [list(src.descriptions).index(b) + 1 for b in BANDS]
        patch, profile = src.read(order), src.profile
    ph, pw = patch.shape[1:]
    strip = np.tile(patch, (1, 512 // ph + 2, size // pw + 2))
    profile.update(width=size, height=size, count=len(BANDS), tiled=True, blockxsize=512, blockysize=512,
                   compress="deflate", BIGTIFF="IF_SAFER", nodata=0)
    tmp = path.with_name(path.stem + ".part.tif")
    with rasterio.open(tmp, "w", **profile) as dst:
        for y0 in range(0, size, 512):
            h = min(512, size - y0)
            off = y0 % ph
            dst.write(strip[:, off:off + h, :size], window=Window(0, y0, size, h))
        dst.descriptions = BANDS
    os.replace(tmp, path)
    return path


def run_plugin(scene: str, out: str, precision: str) -> dict:
    import torch

    from sar2eo_cloud_plugin.core import cloud, modelfile

    calls = {"seconds": 0.0, "inputs": []}
    real_load = modelfile.load_model

    def timed_load(path, task=None, device="cpu"):
        net, card = real_load(path, task, device)
        forward = net.forward

        def timed_forward(x):
            t0 = time.perf_counter()
            y = forward(x)
            calls["seconds"] += time.perf_counter() - t0
            calls["inputs"].append(tuple(x.shape))   # shapes only: keeping the tensors would inflate the peak
            return y

        net.forward = timed_forward
        calls["net"], calls["forward"] = net, forward
        return net, card

    modelfile.load_model = timed_load
    # warm-up on the real patch: imports, first-call set-up of the kernels (per process, not per raster)
    cloud.cloud_mask(cloud.CloudMaskRequest(str(SOURCE), out + ".warm.tif", precision=precision))
    # ... and once at the scene's tile shape: oneDNN sets up its kernels per input shape on the first call
    # (seconds); a user pays that once per QGIS session, not per scene.
    spec = cloud.read_spec(modelfile.BUNDLED_DIR / "ukis_csmask_4b_l2a.json")
    tile = int(spec.tiling["tile_size"])
    shape = (int(spec.tiling["batch_size"]), len(spec.bands), tile, tile)
    with torch.inference_mode():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16"):
            calls["forward"](torch.zeros(shape).contiguous(memory_format=torch.channels_last))
    calls.update(seconds=0.0, inputs=[])
    _reset_peak_rss()
    t0 = time.perf_counter()
    result = cloud.cloud_mask(cloud.CloudMaskRequest(scene, out, precision=precision))
    end_to_end = time.perf_counter() - t0
    peak = _rss_mb("VmHWM")
    forward = calls["forward"]
    t0 = time.perf_counter()
    torch.manual_seed(0)
    with torch.inference_mode():
        for shape in calls["inputs"]:
            x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
            if precision == "bfloat16":
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    forward(x)
            else:
                forward(x)
    bare = time.perf_counter() - t0
    return {"what": f"plugin, {result.model}, {precision}", "end_to_end_s": end_to_end, "bare_replay_s": bare,
            "forward_in_run_s": calls["seconds"], "ratio": end_to_end / bare, "peak_rss_mb": peak,
            "tiles": result.run.tiles, "batches": len(calls["inputs"]),
            "network_input": list(calls["inputs"][0]), "scale": result.scale,
            "load_avg": os.getloadavg()}


def run_csmask(scene: str) -> dict:
    import rasterio
    from rasterio.enums import Resampling
    from ukis_csmask.mask import CSmask

    with rasterio.open(scene) as src:
        h, w = src.height // 3, src.width // 3
        img = src.read([1, 2, 3, 4], out_shape=(4, h, w), resampling=Resampling.average, out_dtype="float32")
    img = np.ascontiguousarray(np.moveaxis(img, 0, -1) / 10000.0, dtype=np.float32)
    _reset_peak_rss()
    t0 = time.perf_counter()
    CSmask(img, band_order=["blue", "green", "red", "nir"], product_level="l2a", nodata_value=0)
    seconds = time.perf_counter() - t0
    return {"what": "ukis-csmask CSmask 4b l2a (onnxruntime)", "seconds": seconds, "peak_rss_mb": _rss_mb("VmHWM"),
            "array": [h, w, 4], "load_avg": os.getloadavg()}


def _child(kind: str, scene: str, out: str, precision: str) -> None:
    result = run_plugin(scene, out, precision) if kind == "plugin" else run_csmask(scene)
    print("RESULT " + json.dumps(result))


def _spawn(kind: str, scene: Path, workdir: Path, precision: str = "float32", gdal_cache_mb: int = 64) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--scene", str(scene), "--precision", precision,
           "--out", str(workdir / f"mask_{precision}.tif")]
    env = dict(os.environ)
    if gdal_cache_mb:
        env["GDAL_CACHEMAX"] = str(gdal_cache_mb)   # GDAL's block cache (default 5 % of RAM): QGIS sizes its own
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"{kind} failed (rc {proc.returncode}): {proc.stderr[-3000:]}")
    return json.loads(lines[-1][7:])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=10980, help="scene edge in 10 m pixels (10980: a full tile)")
    parser.add_argument("--workdir", default="", help="keep the generated scene here (default: a temp folder)")
    parser.add_argument("--skip", default="", help="comma list of plugin32,plugin16,csmask to leave out")
    parser.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "cloud_scene.json"))
    parser.add_argument("--gdal-cache-mb", type=int, default=64,
                        help="GDAL_CACHEMAX of the measured processes (0 = GDAL's default, 5%% of RAM)")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--scene", default="", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="float32", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.scene, args.out, args.precision)
        return 0
    skip = set(filter(None, args.skip.split(",")))
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_cloud_"))
    workdir.mkdir(parents=True, exist_ok=True)
    scene = make_scene(workdir / f"S2A_MSIL2A_20170613T101031_bench_{args.size}.tif", args.size)
    rows = []
    for kind, precision, key in (("plugin", "float32", "plugin32"), ("plugin", "bfloat16", "plugin16"),
                                 ("csmask", "float32", "csmask")):
        if key in skip:
            continue
        row = _spawn(kind, scene, workdir, precision, args.gdal_cache_mb)
        print(json.dumps(row), file=sys.stderr)
        rows.append(row)
    report = {"size": args.size, "cpus": os.cpu_count(), "gdal_cache_mb": args.gdal_cache_mb, "rows": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    cs = next((r for r in rows if r["what"].startswith("ukis")), None)
    print(f"| run ({args.size}² px at 10 m) | end to end s | bare network s | ratio | peak RSS MB | vs CSmask |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        if "ratio" in r:
            vs = f"{r['end_to_end_s'] / cs['seconds']:.2f} x" if cs else "-"
            print(f"| {r['what']} | {r['end_to_end_s']:.1f} | {r['bare_replay_s']:.1f} | {r['ratio']:.3f} | "
                  f"{r['peak_rss_mb']:.0f} | {vs} |")
        else:
            print(f"| {r['what']} on {r['array'][0]}² px at 30 m | {r['seconds']:.1f} | - | - | "
                  f"{r['peak_rss_mb']:.0f} | 1 |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""ONNX Runtime vs PyTorch, side by side in one run on the same tiles, for both tasks.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_runtimes.py [--threads 2] [--scene 1830] [--tiles 8]

Variants (each on exactly the same input tiles, same thread count):
- ``ort``: ONNX Runtime, CPU provider, graph optimisations disabled (the graph as exported);
- ``ort_opt``: ONNX Runtime, CPU provider, all graph optimisations (the plugin's default);
- ``torch``: PyTorch eager, float32 (channels_last for the U-Net, as the plugin runs it);
- ``torch_bf16``: PyTorch eager under bfloat16 autocast, timed on a CROP of the first tile (``BF16_CROP``² px,
  one call after one warm-up on it) and reported per pixel like the others: on a CPU without AVX-512 BF16 / AMX
  bfloat16 is emulated and a whole tile takes minutes, which a shared 2-core machine cannot spend.

Translation: 256² tiles of REAL Sentinel-1 values (the BigEarthNet patches of ``sample_data/s1``, normalised as the
plugin does, tiled up to 256²), batch 1; the bundled generator and a RANDOMLY INITIALISED one of the other width
(ngf 32 / 64; speed does not depend on the weights). Tiles/s.

Cloud mask: a GENERATED 6-band L2A stack (the real patch of ``sample_data/s2`` repeated to ``--scene`` px at 10 m;
speed does not depend on the content) through ``core.cloud.cloud_mask`` with its defaults (auto -> the 4-band
ukis model at 30 m), end to end, once per runtime; the network inputs of the run are recorded and every variant is
timed on the same tiles ("bare"). Ratio: end to end / the fastest bare runtime; with ``--cloud-repeats N`` the
median over N adjacent pairs of an end-to-end run and the fastest runtime bare (the first pair is the one above).
Also the same run with a network that costs nothing: what the pipeline itself costs in wall and CPU time.

Writes ``benchmarks/results/runtimes.json`` and prints markdown tables (README, "Runtimes").
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from sar2eo_cloud_plugin.core import modelfile, runtime  # noqa: E402

VARIANTS = ("ort", "ort_opt", "torch", "torch_bf16")
BF16_CROP = 64


def tiles_for(name: str, tiles: List[np.ndarray]) -> List[np.ndarray]:
    """The tiles a variant is timed on: all of them, or for bf16 a BF16_CROP² crop of the first."""
    if name != "torch_bf16":
        return tiles
    return [np.ascontiguousarray(tiles[0][..., :BF16_CROP, :BF16_CROP])]


def timed(fn: Callable[[np.ndarray], np.ndarray], tiles: List[np.ndarray], warm: int = 1) -> float:
    """Seconds for fn over ``tiles`` after ``warm`` untimed calls on the first."""
    for _ in range(warm):
        fn(tiles[0])
    t0 = time.perf_counter()
    for x in tiles:
        fn(x)
    return time.perf_counter() - t0


def predictors(card_file: Path, task: str, activation, threads: int, net=None) -> Dict[str, Callable]:
    """Every variant's predictor for one model (``net``: a torch network to use instead of the card's)."""
    import torch

    from sar2eo_cloud_plugin.core.onnxexport import graph_bytes

    card = modelfile.read_card(card_file, task)
    if net is None:
        net, card = modelfile.load_model(card_file, task, "cpu")
        graph = modelfile.verify_onnx(card_file, card)
    else:
        graph = Path(tempfile.mkdtemp(prefix="bench_rt_")) / "net.onnx"
        graph.write_bytes(graph_bytes(net, runtime.channels_of(card)[0]))
    out = {}
    for name, level in (("ort", "disable"), ("ort_opt", "all")):
        out[name] = runtime.OrtPredictor(runtime.ort_session(graph, [runtime.CPU_PROVIDER], level, threads), activation)
    torch.set_num_threads(threads)
    cl = card.architecture == "unet"
    tnet = net.to(memory_format=torch.channels_last) if cl else net
    out["torch"] = runtime.TorchPredictor(tnet, "cpu", activation, channels_last=cl)
    out["torch_bf16"] = runtime.TorchPredictor(tnet, "cpu", activation, channels_last=cl, precision="bfloat16")
    return out


def translation(args) -> Dict:
    import rasterio
    import torch

    from sar2eo_cloud_plugin.core import normalisation as norm
    from sar2eo_cloud_plugin.core.cards import sar2eo_card
    from sar2eo_cloud_plugin.core.networks import build_network, init_weights

    tiles = []
    for src in sorted((REPO / "sample_data" / "s1").glob("*_VVVH.tif")):
        with rasterio.open(src) as ds:
            db = ds.read(out_dtype="float32")
        x = norm.normalise_sar_db(db, ("VV", "VH"), norm.SAR_DB_RANGES)
        reps = (1, 256 // x.shape[1] + 1, 256 // x.shape[2] + 1)
        tiles.append(np.ascontiguousarray(np.tile(x, reps)[None, :, :256, :256], dtype=np.float32))
    tiles = (tiles * args.tiles)[:args.tiles]
    card_file = modelfile.BUNDLED_DIR / "sar2eo_rgb.json"
    bundled_ngf = int(modelfile.read_card(card_file).architecture_args["ngf"])
    other_ngf = 64 if bundled_ngf != 64 else 32     # the other width, for comparison (64 is the seed's)
    torch.manual_seed(0)
    other = sar2eo_card("rgb", ngf=other_ngf, n_blocks=9)
    net_other = init_weights(build_network(other.architecture, other.architecture_args)).eval()
    rows = {}
    for label, net in ((f"ngf {bundled_ngf} (bundled sar2eo_rgb)", None),
                       (f"ngf {other_ngf} (random weights)", net_other)):
        preds = predictors(card_file, "sar2eo", None, args.threads, net)
        rows[label] = {}
        for name in VARIANTS:
            use = tiles_for(name, tiles)
            secs = timed(preds[name], use)
            px = sum(int(np.prod(t.shape[-2:])) * t.shape[0] for t in use)
            per_tile = secs / px * 256 * 256      # seconds per 256² tile (bf16: from its crop)
            rows[label][name] = {"tiles": len(use), "tile_px": list(use[0].shape[-2:]), "seconds": round(secs, 3),
                                 "tiles_per_s": round(1.0 / per_tile, 3), "load": os.getloadavg()[0]}
            print(f"translation {label} {name}: {1.0 / per_tile:.3f} tiles/s", flush=True)
        ref = preds["torch"](tiles[0])
        rows[label]["max_abs_diff_ort_opt_vs_torch"] = float(np.abs(preds["ort_opt"](tiles[0]) - ref).max())
    return rows


def translation_end_to_end(args) -> Dict:
    """The bundled RGB model through ``core.inference.translate_sar_to_eo`` (runtime auto, the plugin's defaults:
    256² tiles, overlap 32) on a GENERATED scene of ``--translation-scene`` px that repeats the real Sentinel-1
    sample of ``sample_data/s1``: the engine's tiles per second end to end, reading, blending and writing included."""
    import rasterio

    from sar2eo_cloud_plugin.core import inference

    work = Path(tempfile.mkdtemp(prefix="bench_rt_translate_"))
    src_path = sorted((REPO / "sample_data" / "s1").glob("*_VVVH.tif"))[0]
    with rasterio.open(src_path) as src:
        patch, profile = src.read(), src.profile
    n = args.translation_scene
    reps = (1, n // patch.shape[1] + 1, n // patch.shape[2] + 1)
    profile.update(width=n, height=n, tiled=True, blockxsize=256, blockysize=256)
    scene = work / "S1_bench_VVVH.tif"
    with rasterio.open(scene, "w", **profile) as dst:
        dst.write(np.tile(patch, reps)[:, :n, :n])
        dst.descriptions = ("VV", "VH")
    t0 = time.perf_counter()
    res = inference.translate_sar_to_eo(inference.TranslationRequest(str(scene), str(work / "out.tif")))
    secs = time.perf_counter() - t0
    row = {"scene_px": n, "tiles": res.run.tiles, "seconds": round(secs, 2),
           "tiles_per_s": round(res.run.tiles / secs, 3), "runtime": res.runtime.label if res.runtime else "",
           "load": os.getloadavg()[0]}
    print(f"translation end to end: {row['tiles']} tiles in {secs:.1f} s = {row['tiles_per_s']} tiles/s "
          f"({row['runtime']})", flush=True)
    return row


def pipeline_alone(cloudmod, scene: Path, work: Path, real_load) -> Dict:
    """The cloud mask end to end with a network that costs nothing (it answers "clear" at once, as the real one
    does on this scene): the wall time and the CPU time (all threads) of everything but the network: reading,
    averaging, blending, the 10 m pass, writing, and building the ONNX Runtime session."""
    def load(*a, **kw):
        _pred, card, info = real_load(*a, **kw)

        def clear(batch: np.ndarray) -> np.ndarray:
            out = np.full((batch.shape[0], 3) + batch.shape[2:], 0.05, np.float32)
            out[:, 0] = 0.9
            return out
        return clear, card, info

    cloudmod.load_predictor = load
    try:
        c0, t0 = os.times(), time.perf_counter()
        cloudmod.cloud_mask(cloudmod.CloudMaskRequest(str(scene), str(work / "mask_zero.tif")))
        wall, c1 = time.perf_counter() - t0, os.times()
    finally:
        cloudmod.load_predictor = real_load
    row = {"seconds": round(wall, 2), "cpu_seconds": round(c1.user - c0.user + c1.system - c0.system, 2),
           "system_cpu_seconds": round(c1.system - c0.system, 2)}
    print(f"cloud with a zero-cost network: {row['seconds']} s, {row['cpu_seconds']} CPU-s", flush=True)
    return row


def cloud(args) -> Dict:
    from bench_cloud_scene import make_scene

    from sar2eo_cloud_plugin.core import cloud as cloudmod

    work = Path(tempfile.mkdtemp(prefix="bench_rt_cloud_"))
    scene = make_scene(work / "S2A_MSIL2A_20170613T101031_N0205_R022_T32TNS_bench.tif", args.scene)
    card_file = modelfile.BUNDLED_DIR / "ukis_csmask_4b_l2a.json"
    recorded: List[np.ndarray] = []
    result: Dict = {"scene_px": args.scene, "model": "ukis_csmask_4b_l2a", "end_to_end": {}, "bare": {}}
    real_load = runtime.load_predictor

    def spying(record: bool):
        """load_predictor whose predictor times its calls (and, with ``record``, keeps its input tiles)."""
        def load(*a, **kw):
            pred, card, info = real_load(*a, **kw)

            def spy(batch):
                if record:
                    recorded.append(np.array(batch, copy=True))
                t0 = time.perf_counter()
                y = pred(batch)
                spy.network += time.perf_counter() - t0
                return y
            spy.network = 0.0
            load.spy = spy
            return spy, card, info
        return load

    for rt in ("onnxruntime", "torch")[:1 if args.cloud_ort_only else 2]:
        spying_load = spying(rt == "onnxruntime")
        cloudmod.load_predictor = spying_load
        try:
            t0 = time.perf_counter()
            res = cloudmod.cloud_mask(cloudmod.CloudMaskRequest(str(scene), str(work / f"mask_{rt}.tif"), runtime=rt))
            total = time.perf_counter() - t0
        finally:
            cloudmod.load_predictor = real_load
        result["end_to_end"][rt] = {"seconds": round(total, 2), "network_seconds": round(spying_load.spy.network, 2),
                                    "runtime": res.runtime.label, "load": os.getloadavg()[0]}
        print(f"cloud end to end {rt}: {total:.1f} s (network {spying_load.spy.network:.1f} s)", flush=True)
    result["tiles"] = [list(t.shape) for t in recorded]
    preds = predictors(card_file, "cloudmask", "softmax", args.threads)
    for name in VARIANTS[:2] if args.cloud_ort_only else VARIANTS:
        tiles = tiles_for(name, recorded)
        c0 = os.times()
        secs = timed(preds[name], tiles)
        c1 = os.times()
        px = sum(int(np.prod(t.shape[-2:])) * t.shape[0] for t in tiles)
        result["bare"][name] = {"tiles": len(tiles), "tile_px": list(tiles[0].shape[-2:]), "seconds": round(secs, 2),
                                "cpu_seconds": round(c1.user - c0.user + c1.system - c0.system, 2),   # + 1 warm-up
                                "s_per_mpx": round(secs / px * 1e6, 3), "load": os.getloadavg()[0]}
        print(f"cloud bare {name}: {secs:.1f} s for {len(tiles)} tile(s)", flush=True)
    full = {k: v["seconds"] for k, v in result["bare"].items() if v["tiles"] == len(recorded)}
    fastest = min(full, key=full.get)
    e2e = result["end_to_end"]["onnxruntime"]["seconds"]
    result["fastest_bare"] = fastest
    pairs = [(e2e, full[fastest])]
    # The machine's speed drifts by 10-20 % between minutes (a shared VM): more adjacent pairs of an end-to-end
    # run and the fastest runtime bare on its tiles, and the median of their ratios.
    for _ in range(args.cloud_repeats - 1):
        cloudmod.load_predictor = spying(False)
        try:
            t0 = time.perf_counter()
            cloudmod.cloud_mask(cloudmod.CloudMaskRequest(str(scene), str(work / "mask_repeat.tif")))
            total = time.perf_counter() - t0
        finally:
            cloudmod.load_predictor = real_load
        pairs.append((round(total, 2), round(timed(preds[fastest], recorded), 2)))
        print(f"cloud repeat: end to end {pairs[-1][0]:.1f} s, bare {fastest} {pairs[-1][1]:.1f} s", flush=True)
    result["zero_cost_network"] = pipeline_alone(cloudmod, scene, work, real_load)
    ratios = sorted(a / b for a, b in pairs)
    result["pairs_end_to_end_and_fastest_bare_s"] = pairs
    result["ratio_end_to_end_vs_fastest_bare"] = round(ratios[len(ratios) // 2], 3)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--scene", type=int, default=1830, help="cloud scene edge in 10 m px (10980 = a whole tile)")
    ap.add_argument("--tiles", type=int, default=8, help="translation tiles per variant")
    ap.add_argument("--translation-scene", type=int, default=2048,
                    help="translation end to end: scene edge in px (GENERATED from the real S1 sample)")
    ap.add_argument("--skip", choices=("translation", "cloud"), action="append", default=[])
    ap.add_argument("--cloud-repeats", type=int, default=1,
                    help="cloud: adjacent (end to end, fastest bare) pairs; the ratio is their median")
    ap.add_argument("--cloud-ort-only", action="store_true",
                    help="cloud: end to end on ONNX Runtime only, bare ort / ort_opt only (a bigger scene)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "runtimes.json")
    args = ap.parse_args()
    os.environ["SAR2EO_ORT_THREADS"] = str(args.threads)
    import onnxruntime as ort
    import torch

    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "threads": args.threads,
              "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
              "onnxruntime": ort.__version__, "torch": torch.__version__}
    if "translation" not in args.skip:
        report["translation"] = translation(args)
        report["translation_end_to_end"] = translation_end_to_end(args)
    if "cloud" not in args.skip:
        report["cloud"] = cloud(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

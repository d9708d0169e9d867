"""Cloud and shadow quality of every bundled cloud model on REAL hand-labelled scenes, through the
plugin's own engine (``core.cloud.cloud_mask``, exactly as the Processing algorithm runs it).

Data: ``../shared/data/cloud-labelled/`` (ukis-csmask's test scenes, Apache-2.0): ``sentinel2_north.npz``
(rows 0-255 of a Sentinel-2 L1C scene, 30 m, top-of-atmosphere reflectance B2, B3, B4, B8, B11, B12)
and two Landsat scenes with the same bands (an extra row: another sensor). Labels: 0 shadow, 1 and 3
clear, 4 cloud. Each array is written to a GeoTIFF first (digital numbers = reflectance x 10,000,
uint16, band descriptions B2..B12, "MSIL1C" in the name so the level is detected). The scenes carry
no georeference; the GeoTIFF gets a PLACEHOLDER grid (30 m pixels at the origin of UTM zone 32N,
tagged as such) only because the engine writes georeferenced outputs: the scores compare pixel arrays.

Beside each model, scored the same way: "all clear" (the baseline) and ukis-csmask's own ``CSmask``
(its ONNX models through onnxruntime, on the same reflectance array), when ukis-csmask is installed.

    .venv/bin/python benchmarks/cloud_quality.py                 # table + benchmarks/results/cloud_quality.json
    .venv/bin/python benchmarks/cloud_quality.py --update-cards  # also write the figures into the model cards

Note (from the data's README): ukis-csmask's published models may have seen these scenes in training,
so they can look better here than on unseen data; for the seed's RGB model they are independent.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from a checkout

from sar2eo_cloud_plugin.core import cloud, modelfile  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "cloud-labelled"
SCENES = {"sentinel2_north": "Sentinel-2 L1C, north half (256 x 512 px, 30 m)",
          "landsat5": "Landsat 5 TM (other sensor)", "landsat7": "Landsat 7 ETM+ (other sensor)"}
BANDS = ("B2", "B3", "B4", "B8", "B11", "B12")
UKIS_BANDS = ("blue", "green", "red", "nir", "swir16", "swir22")
PIXEL_M = 30.0


def labels_to_classes(msk: np.ndarray) -> np.ndarray:
    """Hand labels (0 shadow, 1/3 clear, 4 cloud) -> the plugin's codes (0 clear, 1 cloud, 2 shadow)."""
    out = np.zeros(msk.shape, dtype=np.uint8)
    out[msk == 4] = cloud.CLOUD
    out[msk == 0] = cloud.SHADOW
    return out


def write_scene(img: np.ndarray, path: Path) -> Path:
    """(H, W, 6) reflectance -> 6-band uint16 GeoTIFF of digital numbers on a placeholder 30 m grid."""
    import rasterio
    from rasterio.transform import from_origin

    dn = np.clip(np.rint(img.transpose(2, 0, 1) * 10000.0), 1, 65535).astype(np.uint16)
    with rasterio.open(path, "w", driver="GTiff", width=dn.shape[2], height=dn.shape[1], count=dn.shape[0],
                       dtype="uint16", crs="EPSG:32632", transform=from_origin(500000, 0, PIXEL_M, PIXEL_M)) as dst:
        dst.write(dn)
        for i, band in enumerate(BANDS, start=1):
            dst.set_band_description(i, band)
        dst.update_tags(PLACEHOLDER_GEOREFERENCE="yes: the labelled scene has none; pixels only")
    return path


def scores(pred: np.ndarray, truth: np.ndarray) -> Dict[str, float]:
    """Cloud IoU/F1/accuracy (cloud vs not cloud), shadow IoU and three-class accuracy."""
    out: Dict[str, float] = {}
    for name, value in (("cloud", cloud.CLOUD), ("shadow", cloud.SHADOW)):
        p, t = pred == value, truth == value
        tp, fp, fn = int((p & t).sum()), int((p & ~t).sum()), int((~p & t).sum())
        out[f"{name}_iou"] = tp / (tp + fp + fn) if tp + fp + fn else 1.0
        out[f"{name}_f1"] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    out["cloud_accuracy"] = float(((pred == cloud.CLOUD) == (truth == cloud.CLOUD)).mean())
    out["three_class_accuracy"] = float((pred == truth).mean())
    out["cloud_fraction_predicted"] = float((pred == cloud.CLOUD).mean())
    out["shadow_fraction_predicted"] = float((pred == cloud.SHADOW).mean())
    return out


def run_plugin(tif: Path, model: str, out_dir: Path, level: str = "L1C") -> np.ndarray:
    """The plugin's class raster for a bundled model name, or for a model card path (``*.json``)."""
    import rasterio

    card = model if model.endswith(".json") else None
    dst = out_dir / f"{tif.stem}_{Path(model).stem}.tif"
    req = cloud.CloudMaskRequest(str(tif), str(dst), model="auto" if card else model, model_path=card, level=level,
                                 device="cpu")
    cloud.cloud_mask(req)
    with rasterio.open(dst) as ds:
        return ds.read(1)


def run_csmask(img: np.ndarray, bands: int, level: str = "l1c") -> Optional[np.ndarray]:
    try:
        from ukis_csmask.mask import CSmask
    except ImportError:
        return None
    csm = CSmask(np.ascontiguousarray(img[:, :, :bands], dtype=np.float32), band_order=list(UKIS_BANDS[:bands]),
                 product_level=level, nodata_value=None)
    return csm.csm[:, :, 0]


def evaluate(models: List[str], scenes: List[str], own_code: bool = True) -> Dict[str, Dict[str, Dict[str, float]]]:
    """Scores per scene and model (bundled names or card paths); ``own_code`` adds ukis-csmask's CSmask rows."""
    results: Dict[str, Dict[str, Dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="cloud_quality_") as tmp:
        out_dir = Path(tmp)
        for scene in scenes:
            data = np.load(DATA / f"{scene}.npz")
            img, truth = data["img"].astype(np.float32), labels_to_classes(data["msk"][:, :, 0])
            tif = write_scene(img, out_dir / f"{scene}_MSIL1C.tif")
            rows: Dict[str, Dict[str, float]] = {"all clear (baseline)": scores(np.zeros_like(truth), truth)}
            for model in models:
                rows[model] = scores(run_plugin(tif, model, out_dir), truth)
                print(f"  {scene} {model}: cloud IoU {rows[model]['cloud_iou']:.3f}, shadow IoU "
                      f"{rows[model]['shadow_iou']:.3f}", file=sys.stderr)
            for bands in (4, 6) if own_code else ():
                pred = run_csmask(img, bands)
                if pred is not None:
                    rows[f"ukis-csmask CSmask {bands}b l1c (its own code)"] = scores(pred, truth)
            results[scene] = rows
    return results


def table(results) -> str:
    lines = ["| scene | model | cloud IoU | cloud F1 | cloud accuracy | shadow IoU | 3-class accuracy |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for scene, rows in results.items():
        for model, s in rows.items():
            lines.append(f"| {scene} | {model} | {s['cloud_iou']:.3f} | {s['cloud_f1']:.3f} | "
                         f"{s['cloud_accuracy']:.3f} | {s['shadow_iou']:.3f} | {s['three_class_accuracy']:.3f} |")
    return "\n".join(lines)


def figure(path: Path, scene: str = "sentinel2_north", model: str = "auto") -> None:
    """Real image, hand labels and the plugin's classes side by side (for the README)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = np.load(DATA / f"{scene}.npz")
    img, truth = data["img"].astype(np.float32), labels_to_classes(data["msk"][:, :, 0])
    with tempfile.TemporaryDirectory(prefix="cloud_figure_") as tmp:
        tif = write_scene(img, Path(tmp) / f"{scene}_MSIL1C.tif")
        pred = run_plugin(tif, model, Path(tmp))
    rgb = np.clip(img[:, :, [2, 1, 0]] / np.percentile(img[:, :, :3], 99), 0, 1)
    colours = np.array([[0, 0, 0, 0], [1.0, 0.0, 1.0, 0.75], [1.0, 0.75, 0.0, 0.75]])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    s = scores(pred, truth)
    for ax, (title, classes) in zip(axes, (("Sentinel-2 L1C B4/B3/B2, real (30 m)", None),
                                           ("Hand labels: cloud magenta, shadow amber", truth),
                                           (f"Plugin, default model: cloud IoU {s['cloud_iou']:.2f}, "
                                            f"shadow IoU {s['shadow_iou']:.2f}", pred))):
        ax.imshow(rgb, interpolation="nearest")
        if classes is not None:
            ax.imshow(colours[np.minimum(classes, 2)], interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def update_cards(results, models: List[str]) -> None:
    for model in models:
        card_file = modelfile.BUNDLED_DIR / f"{model}.json"
        data = json.loads(card_file.read_text(encoding="utf-8"))
        data.setdefault("metrics", {})["hand_labelled"] = {
            "measured_by": "benchmarks/cloud_quality.py (the plugin's engine, level L1C, CPU, float32)",
            "data": "ukis-csmask test scenes in shared/data/cloud-labelled (hand labels; 30 m TOA reflectance); "
                    "ukis-csmask's own models may have seen them in training",
            **{scene: {k: round(v, 4) for k, v in rows[model].items()}
               | {"baseline_all_clear": {k: round(v, 4) for k, v in rows["all clear (baseline)"].items()}}
               for scene, rows in results.items()},
        }
        card_file.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        print(f"updated {card_file.name}", file=sys.stderr)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="", help="comma list of bundled cloud models (default: all, and auto)")
    parser.add_argument("--scenes", default=",".join(SCENES), help="comma list of " + ", ".join(SCENES))
    parser.add_argument("--update-cards", action="store_true", help="write the figures into the model cards")
    parser.add_argument("--figure", default="", help="also save image / labels / plugin classes to this PNG")
    parser.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "cloud_quality.json"),
                        help="where to write the figures as JSON")
    args = parser.parse_args(argv)
    models = [m for m in args.models.split(",") if m] or cloud.bundled_cloud_models() + ["auto"]
    results = evaluate(models, [s for s in args.scenes.split(",") if s])
    print(table(results))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    if args.update_cards:
        update_cards(results, [m for m in models if m != "auto"])
    if args.figure:
        figure(Path(args.figure))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

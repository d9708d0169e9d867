"""Metrics, stated precisely.

Translation (all on reflectance in [0, 1], i.e. Sentinel-2 DN / 10,000 clipped to ``OPTICAL_RANGE``):

* PSNR = 10 log10(data_range^2 / MSE) over all bands and pixels of one image, ``data_range = 1.0``.
* SSIM: ``skimage.metrics.structural_similarity`` with ``data_range = 1.0``, ``channel_axis = 0`` (mean over bands),
  default 7 x 7 uniform window.
* band-wise RMSE: sqrt(mean((pred - target)^2)) per band.
* NDVI consistency: NDVI = (B8 - B4) / (B8 + B4) computed on the prediction and on the target; reported as the
  RMSE and the Pearson correlation between the two NDVI maps. It is only defined when the band set holds both B4
  and B8 (RGB+NIR). For RGB (no B8) and NIR+SWIR+Red-Edge (no B4) it is reported as not applicable.

Every metric is averaged over held-out images (one value per image, then the mean). The baseline is the same
computation with a prediction that is the training set's per-band mean reflectance at every pixel.

Cloud masks (binary, 1 = cloud), from the confusion counts summed over all held-out pixels:
IoU = TP / (TP + FP + FN), F1 = 2TP / (2TP + FP + FN), pixel accuracy = (TP + TN) / N. IoU and F1 are undefined
(NaN, written as null) when there is no cloud in either mask.
"""
from __future__ import annotations

import math
from typing import Dict, List, Sequence

import numpy as np

DATA_RANGE = 1.0


def psnr(pred: np.ndarray, target: np.ndarray, data_range: float = DATA_RANGE) -> float:
    mse = float(np.mean((pred.astype(np.float64) - target.astype(np.float64)) ** 2))
    if mse == 0:
        return math.inf
    return 10.0 * math.log10(data_range ** 2 / mse)


def ssim(pred: np.ndarray, target: np.ndarray, data_range: float = DATA_RANGE) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(target.astype(np.float64), pred.astype(np.float64), data_range=data_range,
                                       channel_axis=0))


def band_rmse(pred: np.ndarray, target: np.ndarray) -> List[float]:
    diff = pred.astype(np.float64) - target.astype(np.float64)
    return [float(np.sqrt(np.mean(diff[b] ** 2))) for b in range(diff.shape[0])]


def ndvi(red: np.ndarray, nir: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    red = red.astype(np.float64)
    nir = nir.astype(np.float64)
    return (nir - red) / np.maximum(nir + red, eps)


def ndvi_consistency(pred: np.ndarray, target: np.ndarray, bands: Sequence[str]) -> Dict[str, object]:
    bands = list(bands)
    if "B4" not in bands or "B8" not in bands:
        missing = [b for b in ("B4", "B8") if b not in bands]
        return {"applicable": False,
                "reason": f"NDVI needs B4 (red) and B8 (NIR); this band set lacks {', '.join(missing)}"}
    r, n = bands.index("B4"), bands.index("B8")
    a, b = ndvi(pred[r], pred[n]), ndvi(target[r], target[n])
    rmse = float(np.sqrt(np.mean((a - b) ** 2)))
    if np.std(a) < 1e-12 or np.std(b) < 1e-12:
        corr = float("nan")  # a flat map has no correlation
    else:
        corr = float(np.corrcoef(a.ravel(), b.ravel())[0, 1])
    return {"applicable": True, "ndvi_rmse": rmse, "ndvi_corr": corr}


def translation_metrics(pred: np.ndarray, target: np.ndarray, bands: Sequence[str]) -> Dict[str, object]:
    """All translation metrics for one (C, H, W) image pair in reflectance."""
    return {"psnr": psnr(pred, target), "ssim": ssim(pred, target),
            "band_rmse": dict(zip(bands, band_rmse(pred, target))),
            "ndvi": ndvi_consistency(pred, target, bands)}


def _nanmean(values: List[float]) -> float:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(vals)) if vals else float("nan")


def average_translation(per_image: List[Dict[str, object]]) -> Dict[str, object]:
    """Mean over images of :func:`translation_metrics` results."""
    if not per_image:
        return {}
    bands = list(per_image[0]["band_rmse"])
    out: Dict[str, object] = {
        "psnr": _nanmean([m["psnr"] for m in per_image]),
        "ssim": _nanmean([m["ssim"] for m in per_image]),
        "band_rmse": {b: _nanmean([m["band_rmse"][b] for m in per_image]) for b in bands},
        "images": len(per_image),
    }
    first = per_image[0]["ndvi"]
    if first.get("applicable"):
        out["ndvi"] = {"applicable": True,
                       "ndvi_rmse": _nanmean([m["ndvi"]["ndvi_rmse"] for m in per_image]),
                       "ndvi_corr": _nanmean([m["ndvi"]["ndvi_corr"] for m in per_image])}
    else:
        out["ndvi"] = dict(first)
    return out


# ----------------------------------------------------------------------------------------------- segmentation
def confusion(pred: np.ndarray, target: np.ndarray, valid: np.ndarray = None) -> np.ndarray:
    """[TP, FP, FN, TN] for binary masks (any truthy value = 1)."""
    p = np.asarray(pred).astype(bool)
    t = np.asarray(target).astype(bool)
    if valid is not None:
        p, t = p[valid], t[valid]
    tp = int(np.sum(p & t))
    fp = int(np.sum(p & ~t))
    fn = int(np.sum(~p & t))
    tn = int(np.sum(~p & ~t))
    return np.array([tp, fp, fn, tn], dtype=np.int64)


def segmentation_scores(counts: np.ndarray) -> Dict[str, float]:
    tp, fp, fn, tn = (float(c) for c in counts)
    n = tp + fp + fn + tn
    iou = tp / (tp + fp + fn) if (tp + fp + fn) > 0 else float("nan")
    f1 = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) > 0 else float("nan")
    acc = (tp + tn) / n if n > 0 else float("nan")
    return {"iou": iou, "f1": f1, "accuracy": acc, "tp": int(tp), "fp": int(fp), "fn": int(fn), "tn": int(tn),
            "positive_fraction_target": (tp + fn) / n if n else float("nan"),
            "positive_fraction_pred": (tp + fp) / n if n else float("nan")}


def clean_nan(obj):
    """NaN/inf -> None recursively, for JSON cards."""
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, dict):
        return {k: clean_nan(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_nan(v) for v in obj]
    return obj

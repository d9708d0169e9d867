"""Metrics against values computed by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from training import metrics


def test_psnr_and_rmse_by_hand():
    t = np.zeros((2, 2, 2), np.float32)
    p = t.copy()
    p[0, 0, 0] = 0.1  # one error of 0.1 among 8 values -> MSE = 0.01 / 8
    assert metrics.psnr(p, t) == pytest.approx(10 * math.log10(1 / (0.01 / 8)))
    assert metrics.band_rmse(p, t) == pytest.approx([math.sqrt(0.01 / 4), 0.0])
    assert metrics.psnr(t, t) == math.inf


def test_ssim_identity_and_data_range():
    rng = np.random.default_rng(0)
    t = rng.random((3, 32, 32)).astype(np.float32)
    assert metrics.ssim(t, t) == pytest.approx(1.0)
    assert metrics.ssim(np.clip(t + 0.2, 0, 1), t) < 1.0


def test_ndvi_consistency():
    red = np.full((4, 4), 0.1)
    nir = np.full((4, 4), 0.3)
    assert metrics.ndvi(red, nir)[0, 0] == pytest.approx(0.5)
    t = np.stack([red, red, red, nir])
    p = t.copy()
    p[3] = 0.1  # NDVI 0 everywhere on the prediction
    res = metrics.ndvi_consistency(p, t, ["B4", "B3", "B2", "B8"])
    assert res["applicable"] and res["ndvi_rmse"] == pytest.approx(0.5)
    assert math.isnan(res["ndvi_corr"])  # flat maps have no correlation
    na = metrics.ndvi_consistency(p[:3], t[:3], ["B4", "B3", "B2"])
    assert na["applicable"] is False and "B8" in na["reason"]
    assert "B4" in metrics.ndvi_consistency(p[:3], t[:3], ["B8", "B11", "B5"])["reason"]


def test_segmentation_scores_by_hand():
    pred = np.array([[1, 1, 0], [0, 0, 1]])
    target = np.array([[1, 0, 0], [1, 0, 1]])
    counts = metrics.confusion(pred, target)
    assert counts.tolist() == [2, 1, 1, 2]  # TP, FP, FN, TN
    s = metrics.segmentation_scores(counts)
    assert s["iou"] == pytest.approx(2 / 4)
    assert s["f1"] == pytest.approx(4 / 6)
    assert s["accuracy"] == pytest.approx(4 / 6)
    empty = metrics.segmentation_scores(metrics.confusion(np.zeros((2, 2)), np.zeros((2, 2))))
    assert math.isnan(empty["iou"]) and empty["accuracy"] == 1.0
    assert metrics.clean_nan({"a": float("nan"), "b": [1.0, float("inf")]}) == {"a": None, "b": [1.0, None]}


def test_baseline_row_is_computed_like_the_model():
    rng = np.random.default_rng(1)
    t = rng.random((3, 16, 16)).astype(np.float32) * 0.3
    mean = t.mean(axis=(1, 2))
    base = np.broadcast_to(mean[:, None, None], t.shape)
    m = metrics.translation_metrics(base, t, ["B4", "B3", "B2"])
    assert m["band_rmse"]["B4"] == pytest.approx(float(t[0].std()), rel=1e-5)
    avg = metrics.average_translation([m, m])
    assert avg["psnr"] == pytest.approx(m["psnr"]) and avg["images"] == 2

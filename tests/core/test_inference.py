"""Both tasks end to end on the REAL samples, with the GENERATED random-weight
``tiny_models`` (so the values are meaningless; shapes, types, georeferencing,
nodata and error handling are what is tested)."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import rasterio
import torch

from core_helpers import write_raster
from sar2eo_cloud_plugin.core import inference
from sar2eo_cloud_plugin.core.errors import DeviceError, InputError, ModelFileError
from sar2eo_cloud_plugin.core.inference import CloudMaskRequest, TranslationRequest


def _same_grid(a, b):
    with rasterio.open(a) as x, rasterio.open(b) as y:
        return x.crs == y.crs and x.transform == y.transform and x.shape == y.shape


@pytest.mark.parametrize("key, bands", [("rgb", ("B4", "B3", "B2")), ("nir_swir_re", ("B8", "B11", "B5")),
                                        ("rgbn", ("B4", "B3", "B2", "B8"))])
def test_translate_real_s1(tmp_path, s1_sample, tiny_models, key, bands):
    dst = tmp_path / "eo.tif"
    progress, logs = [], []
    res = inference.translate_sar_to_eo(
        TranslationRequest(str(s1_sample), str(dst), band_set=key, model_path=str(tiny_models / f"sar2eo_{key}.json"),
                           device="cpu", tile_size=64, overlap=16),
        progress.append, None, logs.append)
    assert res.outputs == {"OUTPUT": str(dst)} and res.device == "cpu"
    assert progress[-1] == pytest.approx(100)
    assert any("Input units: dB" in m for m in logs)
    with rasterio.open(dst) as out:
        assert out.count == len(bands) and out.dtypes == ("uint16",) * len(bands)
        assert out.descriptions == bands and out.nodata == 0
        data = out.read()
        assert out.tags()["SAR2EO_MODEL"] == f"sar2eo_{key}"
    assert _same_grid(dst, s1_sample)
    assert data.min() >= 1  # the real sample has no nodata: every pixel valid, 0 is nodata only
    assert res.run.valid_pixels == 120 * 120


def test_translate_linear_input_matches_db(tmp_path, s1_sample, tiny_models):
    """The real sample converted to linear power (derived, written by the test) gives the same result."""
    with rasterio.open(s1_sample) as s:
        db, crs, transform = s.read(), s.crs, s.transform
    lin = write_raster(tmp_path / "lin.tif", (10 ** (db / 10)).astype(np.float32), crs=crs.to_wkt(),
                       transform=transform)
    model = str(tiny_models / "sar2eo_rgb.json")
    logs = []
    inference.translate_sar_to_eo(TranslationRequest(str(s1_sample), str(tmp_path / "a.tif"), model_path=model,
                                                     device="cpu"))
    inference.translate_sar_to_eo(TranslationRequest(str(lin), str(tmp_path / "b.tif"), model_path=model,
                                                     device="cpu"), log=logs.append)
    assert any("Input units: linear" in m for m in logs)
    with rasterio.open(tmp_path / "a.tif") as a, rasterio.open(tmp_path / "b.tif") as b:
        assert np.abs(a.read().astype(int) - b.read().astype(int)).max() <= 2


def test_translate_nodata_in_nodata_out(tmp_path, s1_sample, tiny_models):
    """The real sample with a GENERATED nodata block and zero-power pixels (linear input)."""
    with rasterio.open(s1_sample) as s:
        db, crs, transform = s.read(), s.crs, s.transform
    lin = (10 ** (db / 10)).astype(np.float32)
    lin[:, 20:40, 30:60] = -1.0      # tagged nodata
    lin[1, 80:85, 80:85] = 0.0       # zero power in VH: no dB value -> nodata
    src = write_raster(tmp_path / "in.tif", lin, crs=crs.to_wkt(), transform=transform, nodata=-1.0)
    dst = tmp_path / "out.tif"
    inference.translate_sar_to_eo(TranslationRequest(str(src), str(dst), model_path=str(tiny_models / "sar2eo_rgb.json"),
                                                     device="cpu", units="linear", tile_size=64, overlap=8))
    with rasterio.open(dst) as out:
        data = out.read()
    invalid = np.zeros((120, 120), bool)
    invalid[20:40, 30:60] = True
    invalid[80:85, 80:85] = True
    assert (data[:, invalid] == 0).all() and (data[:, ~invalid] >= 1).all()


def test_translate_refuses_bad_requests(tmp_path, s1_sample, s2_sample, tiny_models):
    model = str(tiny_models / "sar2eo_rgb.json")
    with pytest.raises(InputError, match="does not look like Sentinel-1"):
        inference.translate_sar_to_eo(TranslationRequest(str(s2_sample), str(tmp_path / "o.tif"), vv_band=4,
                                                         vh_band=3, model_path=model, device="cpu"))
    with pytest.raises(InputError, match="band number 3 does not exist"):
        inference.translate_sar_to_eo(TranslationRequest(str(s1_sample), str(tmp_path / "o.tif"), vh_band=3,
                                                         model_path=model))
    with pytest.raises(InputError, match="must be different"):
        inference.translate_sar_to_eo(TranslationRequest(str(s1_sample), str(tmp_path / "o.tif"), vv_band=1,
                                                         vh_band=1, model_path=model))
    with pytest.raises(InputError, match="VH_BAND is 1, but band 1 is described as 'VV"):   # VV is band 1
        inference.translate_sar_to_eo(TranslationRequest(str(s1_sample), str(tmp_path / "o.tif"), vh_band=1,
                                                         model_path=model))
    with pytest.raises(InputError, match="writes bands"):   # an RGB model asked for the RGBN band set
        inference.translate_sar_to_eo(TranslationRequest(str(s1_sample), str(tmp_path / "o.tif"), band_set="rgbn",
                                                         model_path=model))
    with pytest.raises(ModelFileError, match="not a 'sar2eo' model"):
        inference.translate_sar_to_eo(TranslationRequest(str(s1_sample), str(tmp_path / "o.tif"),
                                                         model_path=str(tiny_models / "cloudmask.json")))
    one_band = write_raster(tmp_path / "one.tif", np.full((1, 20, 20), -10, np.float32))  # GENERATED
    with pytest.raises(InputError, match="needs two bands"):
        inference.translate_sar_to_eo(TranslationRequest(str(one_band), str(tmp_path / "o.tif"), model_path=model))
    assert not (tmp_path / "o.tif").exists()


def test_cloud_mask_real_s2(tmp_path, s2_sample, tiny_models):
    dst, prob = tmp_path / "mask.tif", tmp_path / "prob.tif"
    logs = []
    res = inference.cloud_mask(CloudMaskRequest(str(s2_sample), str(dst), probability_path=str(prob), device="cpu",
                                                model_path=str(tiny_models / "cloudmask.json"), tile_size=64,
                                                overlap=16),
                               log=logs.append)
    assert res.outputs == {"OUTPUT": str(dst), "PROBABILITY": str(prob)}
    assert any("B4, B3, B2 = 4, 3, 2" in m for m in logs)
    with rasterio.open(dst) as m, rasterio.open(prob) as p:
        assert m.dtypes == ("uint8",) and m.nodata == 255 and p.dtypes == ("float32",) and p.nodata == -1
        mask, pr = m.read(1), p.read(1)
    assert _same_grid(dst, s2_sample) and _same_grid(prob, s2_sample)
    assert set(np.unique(mask)) <= {0, 1}
    assert pr.min() >= 0 and pr.max() <= 1
    np.testing.assert_array_equal(mask, (pr >= res.extra["THRESHOLD"]).astype(np.uint8))
    assert res.extra["CLOUD_FRACTION"] == pytest.approx(mask.mean())
    assert res.extra["VALID_PIXELS"] == 120 * 120


def test_cloud_mask_nodata_and_threshold(tmp_path, s2_sample, tiny_models):
    """The real sample with a GENERATED zero (nodata) block."""
    with rasterio.open(s2_sample) as s:
        data, crs, transform, desc = s.read(), s.crs, s.transform, s.descriptions
    data[:, :30, :] = 0
    src = write_raster(tmp_path / "in.tif", data, crs=crs.to_wkt(), transform=transform, nodata=0,
                       descriptions=desc)
    res = inference.cloud_mask(CloudMaskRequest(str(src), str(tmp_path / "m.tif"), threshold=0.3, device="cpu",
                                                model_path=str(tiny_models / "cloudmask.json"), tile_size=128))
    with rasterio.open(tmp_path / "m.tif") as m:
        mask = m.read(1)
    assert (mask[:30] == 255).all() and set(np.unique(mask[30:])) <= {0, 1}
    assert res.extra["THRESHOLD"] == 0.3 and res.extra["VALID_PIXELS"] == 90 * 120


def test_cloud_mask_refuses_bad_requests(tmp_path, s2_sample, s1_sample, tiny_models):
    model = str(tiny_models / "cloudmask.json")
    with pytest.raises(InputError, match="Threshold"):
        inference.cloud_mask(CloudMaskRequest(str(s2_sample), str(tmp_path / "m.tif"), threshold=1.5,
                                              model_path=model, device="cpu"))
    with pytest.raises(InputError, match="set all three"):
        inference.cloud_mask(CloudMaskRequest(str(s2_sample), str(tmp_path / "m.tif"), red_band=4, model_path=model))
    with pytest.raises(InputError, match="bands seen"):
        inference.cloud_mask(CloudMaskRequest(str(s1_sample), str(tmp_path / "m.tif"), model_path=model))
    with rasterio.open(s2_sample) as s:
        refl = (s.read([4, 3, 2]) / 10000.0).astype(np.float32)
        crs, transform = s.crs, s.transform
    src = write_raster(tmp_path / "refl.tif", refl, crs=crs.to_wkt(), transform=transform,
                       descriptions=("B4", "B3", "B2"))  # the real sample scaled to 0..1 (derived)
    with pytest.raises(InputError, match="reflectance in 0..1"):
        inference.cloud_mask(CloudMaskRequest(str(src), str(tmp_path / "m.tif"), model_path=model))
    assert not (tmp_path / "m.tif").exists()


def test_cloud_mask_manual_bands(tmp_path, s2_sample, tiny_models):
    logs = []
    inference.cloud_mask(CloudMaskRequest(str(s2_sample), str(tmp_path / "m.tif"), red_band=4, green_band=3,
                                          blue_band=2, model_path=str(tiny_models / "cloudmask.json"), device="cpu",
                                          tile_size=64, overlap=0),
                         log=logs.append)
    assert any("set by the user" in m for m in logs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU behaviour")
def test_devices_without_gpu():
    assert inference.resolve_device("auto") == "cpu"
    assert inference.resolve_device("cpu") == "cpu"
    assert inference.resolve_device(None) == "cpu"
    with pytest.raises(DeviceError, match="CUDA was requested but is not available"):
        inference.resolve_device("cuda")
    assert "CPU only" in inference.describe_devices()


def test_unknown_device():
    with pytest.raises(DeviceError, match="Unknown device 'tpu'"):
        inference.resolve_device("tpu")


def test_core_never_imports_qgis(repo_root):
    core = repo_root / "sar2eo_cloud_plugin" / "core"
    for py in core.glob("*.py"):
        text = py.read_text()
        assert "import qgis" not in text and "from qgis" not in text, py
    code = ("import sys; import sar2eo_cloud_plugin.core.inference, sar2eo_cloud_plugin.core.cards, "
            "sar2eo_cloud_plugin.core.networks; assert not [m for m in sys.modules if m.split('.')[0] in "
            "('qgis', 'PyQt5')], 'qgis imported'")
    env = dict(os.environ, PYTHONPATH=str(repo_root))
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=str(repo_root))


def test_predictor_scale_pools_and_upsamples():
    """TorchPredictor(scale=2) with an identity network: constant tiles come back exactly,
    smooth ones nearly; the output has the input's size."""
    from torch import nn

    p = inference.TorchPredictor(nn.Identity(), "cpu", scale=2)
    const = np.full((2, 3, 64, 64), 0.25, np.float32)
    np.testing.assert_array_equal(p(const), const)
    yy, xx = np.mgrid[0:64, 0:64].astype(np.float32)
    ramp = np.broadcast_to((yy + xx) / 128.0, (1, 1, 64, 64)).copy()
    out = p(ramp)
    assert out.shape == ramp.shape
    np.testing.assert_allclose(out[..., 2:-2, 2:-2], ramp[..., 2:-2, 2:-2], atol=1e-6)


def test_cloud_mask_at_half_resolution_matches_a_manual_forward(tmp_path, s2_sample, tiny_models):
    """scale=2 on the real sample, one tile covering it: the probability equals preprocess -> reflect pad ->
    2x2 average -> U-Net -> sigmoid -> bilinear x2 -> crop, done by hand."""
    import torch.nn.functional as F

    from sar2eo_cloud_plugin.core import modelfile
    from sar2eo_cloud_plugin.core import normalisation as norm

    model = tiny_models / "cloudmask.json"
    prob = tmp_path / "p.tif"
    logs = []
    res = inference.cloud_mask(CloudMaskRequest(str(s2_sample), str(tmp_path / "m.tif"), probability_path=str(prob),
                                                model_path=str(model), device="cpu", scale=2, tile_size=128,
                                                overlap=0), log=logs.append)
    assert res.extra["SCALE"] == 2 and any("1/2 of the input resolution" in m for m in logs)
    assert _same_grid(prob, s2_sample) and _same_grid(tmp_path / "m.tif", s2_sample)
    with rasterio.open(s2_sample) as s, rasterio.open(prob) as p:
        x = norm.cloud_preprocess(s.read([4, 3, 2]).astype(np.float32))
        got = p.read(1)
    x = np.pad(x, ((0, 0), (0, 8), (0, 8)), mode="reflect")
    net, _card = modelfile.load_model(model, "cloudmask")
    with torch.inference_mode():
        y = torch.sigmoid(net(F.avg_pool2d(torch.from_numpy(x)[None], 2)))
        y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)[0, 0, :120, :120].numpy()
    np.testing.assert_allclose(got, y, atol=1e-5)


def test_cloud_mask_scale_checks(tmp_path, s2_sample, tiny_models):
    model = str(tiny_models / "cloudmask.json")
    with pytest.raises(InputError, match="multiple of 64"):
        inference.cloud_mask(CloudMaskRequest(str(s2_sample), str(tmp_path / "m.tif"), model_path=model,
                                              device="cpu", scale=2, tile_size=96))
    with pytest.raises(InputError, match="Scale 0"):
        inference.cloud_mask(CloudMaskRequest(str(s2_sample), str(tmp_path / "m.tif"), model_path=model,
                                              device="cpu", scale=0))
    assert not (tmp_path / "m.tif").exists()


def test_cloud_mask_scale_default_comes_from_the_card(tmp_path, s2_sample, tiny_models):
    import json
    import shutil

    for f in ("cloudmask.json", "cloudmask.safetensors"):
        shutil.copy(tiny_models / f, tmp_path / f)
    card = json.loads((tmp_path / "cloudmask.json").read_text())
    card["tiling"]["scale"] = 2
    (tmp_path / "cloudmask.json").write_text(json.dumps(card))
    res = inference.cloud_mask(CloudMaskRequest(str(s2_sample), str(tmp_path / "m.tif"), device="cpu",
                                                model_path=str(tmp_path / "cloudmask.json"), tile_size=128))
    assert res.extra["SCALE"] == 2
    res = inference.cloud_mask(CloudMaskRequest(str(s2_sample), str(tmp_path / "m.tif"), device="cpu", scale=1,
                                                model_path=str(tmp_path / "cloudmask.json"), tile_size=128))
    assert res.extra["SCALE"] == 1


def test_cancelled_translation_leaves_nothing_and_keeps_an_existing_output(tmp_path, s1_sample, tiny_models):
    from sar2eo_cloud_plugin.core.errors import CancelledError

    dst = tmp_path / "eo.tif"
    dst.write_bytes(b"an earlier result")
    calls = {"n": 0}

    def cancel_on_second_batch():
        calls["n"] += 1
        return calls["n"] >= 2

    with pytest.raises(CancelledError):
        inference.translate_sar_to_eo(TranslationRequest(str(s1_sample), str(dst), device="cpu", tile_size=64,
                                                         overlap=16, batch_size=1,
                                                         model_path=str(tiny_models / "sar2eo_rgb.json")),
                                      is_cancelled=cancel_on_second_batch)
    assert dst.read_bytes() == b"an earlier result"
    assert sorted(os.listdir(tmp_path)) == ["eo.tif"]


def test_cloud_mask_bfloat16_close_to_float32(tmp_path, s2_sample, tiny_models):
    model = str(tiny_models / "cloudmask.json")
    probs = {}
    for precision in ("float32", "bfloat16"):
        logs = []
        inference.cloud_mask(CloudMaskRequest(str(s2_sample), str(tmp_path / f"m_{precision}.tif"), device="cpu",
                                              probability_path=str(tmp_path / f"p_{precision}.tif"),
                                              model_path=model, tile_size=128, precision=precision),
                             log=logs.append)
        with rasterio.open(tmp_path / f"p_{precision}.tif") as p:
            probs[precision] = p.read(1)
        assert any("precision: bfloat16" in m for m in logs) == (precision == "bfloat16")
    diff = np.abs(probs["float32"] - probs["bfloat16"])
    assert diff.max() < 0.05
    assert ((probs["float32"] >= 0.5) == (probs["bfloat16"] >= 0.5)).mean() > 0.99
    with pytest.raises(InputError, match="Unknown precision 'int8'"):
        inference.cloud_mask(CloudMaskRequest(str(s2_sample), str(tmp_path / "x.tif"), device="cpu",
                                              model_path=model, precision="int8"))
    assert not (tmp_path / "x.tif").exists()

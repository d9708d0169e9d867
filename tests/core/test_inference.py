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

from sar2eo_cloud_plugin.core import inference
from sar2eo_cloud_plugin.core.errors import DeviceError, InputError, ModelFileError
from sar2eo_cloud_plugin.core.inference import TranslationRequest

from core_helpers import write_raster


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
    model = str(tiny_models / "sar2eo_rgb.json")
    inference.translate_sar_to_eo(TranslationRequest(str(src), str(dst), model_path=model,
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
            "sar2eo_cloud_plugin.core.cloud, "
            "sar2eo_cloud_plugin.core.networks; assert not [m for m in sys.modules if m.split('.')[0] in "
            "('qgis', 'PyQt5')], 'qgis imported'")
    env = dict(os.environ, PYTHONPATH=str(repo_root))
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=str(repo_root))


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


@pytest.mark.parametrize("overviews", [False, True])
def test_sample_of_a_large_raster_is_512_square_with_nodata_as_nan(tmp_path, overviews):
    """A raster larger than the sample is sampled without reading all of it (windows at block corners, or its
    overviews), 512 x 512 px of its own values, nodata as NaN. GENERATED raster: value = 1 + row // 100."""
    from core_helpers import write_raster

    rows = np.arange(1500, dtype=np.uint16)[:, None] // 100 + 1
    data = np.repeat(rows, 1300, axis=1)[None].repeat(2, axis=0)
    data[:, :, :50] = 0
    path = write_raster(tmp_path / "big.tif", data, nodata=0)
    if overviews:
        with rasterio.open(path, "r+") as ds:
            ds.build_overviews([4])
    sample, _desc, dtype = inference.sample_bands(str(path), [2, 1])
    assert sample.shape == (2, 512, 512) and dtype == "uint16"
    assert np.isnan(sample[:, :, 0]).all()                      # the nodata columns on the left
    values = set(np.unique(sample[np.isfinite(sample)]).astype(int))
    assert values <= set(range(1, 16)) and len(values) >= 4     # spread over the rows, not just the top

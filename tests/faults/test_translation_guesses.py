"""Silent wrong guesses on the translation side (issue 11), through core.inference.

Inputs are GENERATED from the REAL Sentinel-1 samples (sample_data/s1, dB): converted to linear
power, to amplitude, with the bands swapped, or made of zeros; the 0-1 reflectance pair is made
from a REAL Sentinel-2 sample (B4, B3 / 10,000). The model is the GENERATED random-weight
``tiny_models`` one; outputs are compared with each other, never judged for quality.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from sar2eo_cloud_plugin.core import inference, normalisation as norm
from sar2eo_cloud_plugin.core.errors import InputError
from sar2eo_cloud_plugin.core.inference import TranslationRequest

from fault_helpers import write_raster

REPO = Path(__file__).resolve().parents[2]
FLOODS_S1 = REPO.parent / "shared" / "data" / "sen1floods11-sample" / "Spain_7370579_S1Hand.tif"


def _read(path):
    with rasterio.open(path) as src:
        return src.read().astype("float32"), src.descriptions


def _derived(tmp_path, name, data, descriptions, nodata=None):
    """GENERATED: a raster written from (real) values on the sample's grid."""
    return write_raster(tmp_path / name, np.asarray(data, dtype="float32"), nodata=nodata, descriptions=descriptions)


def _run(src, out, model, **kw):
    lines = []
    res = inference.translate_sar_to_eo(TranslationRequest(str(src), str(out), model_path=str(model), device="cpu",
                                                           **kw), log=lines.append)
    return res, lines


def test_linear_power_described_as_db_is_read_as_linear(s1_sample, tmp_path, tiny_models):
    db, _ = _read(s1_sample)
    src = _derived(tmp_path, "linear_says_db.tif", 10 ** (db / 10), ("VV (dB)", "VH (dB)"))
    res, lines = _run(src, tmp_path / "o.tif", tiny_models / "sar2eo_rgb.json")
    assert res.messages[0].startswith("Input units: linear")
    assert any("band descriptions say dB but the values are linear power" in ln for ln in lines)


def test_bands_stored_vh_vv_are_taken_from_the_descriptions(s1_sample, tmp_path, tiny_models):
    db, desc = _read(s1_sample)
    assert desc == ("VV (dB)", "VH (dB)")
    swapped = _derived(tmp_path, "vh_vv.tif", db[::-1], ("VH (dB)", "VV (dB)"))
    same = _derived(tmp_path, "vv_vh.tif", db, ("VV (dB)", "VH (dB)"))
    _run(same, tmp_path / "a.tif", tiny_models / "sar2eo_rgb.json")
    _res, lines = _run(swapped, tmp_path / "b.tif", tiny_models / "sar2eo_rgb.json")
    assert any("Bands VV = 2, VH = 1 (from the band descriptions" in ln for ln in lines)
    with rasterio.open(tmp_path / "a.tif") as a, rasterio.open(tmp_path / "b.tif") as b:
        assert np.array_equal(a.read(), b.read())
    with pytest.raises(InputError, match=r"VV_BAND is 1, but band 1 is described as 'VH \(dB\)'"):
        _run(swapped, tmp_path / "c.tif", tiny_models / "sar2eo_rgb.json", vv_band=1, vh_band=2)


def test_all_zero_raster_without_nodata_is_refused_before_the_run(s1_sample, tmp_path, tiny_models, monkeypatch):
    src = _derived(tmp_path, "zeros.tif", np.zeros((2, 120, 120)), ("VV", "VH"))

    def no_run(*_a, **_k):
        raise AssertionError("the tiled run started on an all-zero raster")

    monkeypatch.setattr(inference, "run_tiled", no_run)
    with pytest.raises(InputError, match=r"zeros.tif', band\(s\) \[1, 2\]: every sampled pixel is 0 and the raster "
                                         "has no nodata value"):
        _run(src, tmp_path / "o.tif", tiny_models / "sar2eo_rgb.json")
    assert not (tmp_path / "o.tif").exists()


def test_amplitude_and_reflectance_are_not_taken_for_linear_power(s1_sample, s2_sample, tmp_path, tiny_models):
    db, _ = _read(s1_sample)
    amp = _derived(tmp_path, "amplitude.tif", np.sqrt(10 ** (db / 10)), ("VV", "VH"))
    with pytest.raises(InputError, match="look like amplitude"):
        _run(amp, tmp_path / "o.tif", tiny_models / "sar2eo_rgb.json")
    s2, _ = _read(s2_sample)
    refl = _derived(tmp_path, "reflectance.tif", s2[[3, 2]] / 10000.0, ("band 1", "band 2"))
    with pytest.raises(InputError, match="0-1 optical reflectance"):
        _run(refl, tmp_path / "o.tif", tiny_models / "sar2eo_rgb.json")
    assert not (tmp_path / "o.tif").exists()


def test_real_sentinel1_samples_in_linear_power_still_pass(s1_samples):
    """The REAL samples (5 BigEarthNet + sen1floods11) converted to linear power are linear power."""
    files = list(s1_samples) + ([FLOODS_S1] if FLOODS_S1.is_file() else [])
    for f in files:
        db, desc = _read(f)
        assert norm.decide_sar_units(10 ** (db / 10), desc, "float32", "auto", f.name).units == "linear"
        assert norm.decide_sar_units(db, desc, "float32", "auto", f.name).units == "dB"


def test_output_records_the_input_file_name_not_its_path(s1_sample, tmp_path, tiny_models):
    _run(s1_sample, tmp_path / "o.tif", tiny_models / "sar2eo_rgb.json")
    with rasterio.open(tmp_path / "o.tif") as out:
        assert out.tags()["SAR2EO_SOURCE"] == s1_sample.name

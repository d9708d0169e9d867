"""sar2eo_cloud:download_models (headless model download) and the one message a missing model gives."""
from __future__ import annotations

import shutil

import pytest
from generated import WEIGHTS
from qgis.core import QgsProcessingException, QgsProcessingFeedback

from sar2eo_cloud_plugin.core import modelfile, modelstore


def _run(alg_id, params):
    import processing

    return processing.run(alg_id, params, feedback=QgsProcessingFeedback())


def test_download_models_algorithm(provider, world, tmp_path):
    folder = tmp_path / "chosen"
    folder.mkdir()
    res = _run("sar2eo_cloud:download_models", {"MODELS": ["sar2eo_rgb"], "FOLDER": str(folder)})
    assert res["INSTALLED"] == str(folder / "sar2eo_rgb.json")
    assert (folder / "sar2eo_rgb.safetensors").read_bytes() == WEIGHTS


def test_download_models_unknown_or_none(provider, world):
    with pytest.raises(QgsProcessingException):
        _run("sar2eo_cloud:download_models", {"MODELS": []})


def test_translate_without_model_says_how_to_get_it(provider, world, s1_sample, tmp_path):
    out = tmp_path / "o.tif"
    with pytest.raises(QgsProcessingException) as err:
        _run("sar2eo_cloud:translate_sar_to_eo", {"INPUT": str(s1_sample), "BAND_SET": 0, "OUTPUT": str(out)})
    assert str(err.value) == modelstore.how_to_get("sar2eo_rgb")
    assert not out.exists()


def test_cloud_mask_without_model_says_how_to_get_it(provider, world, s2_sample, tmp_path, monkeypatch):
    bundled, _store, _server = world
    real = modelfile.BUNDLED_DIR.__class__(modelfile.__file__).resolve().parent.parent / "models"
    for name in ("ukis_csmask_4b_l2a", "ukis_csmask_4b_l1c", "cloudmask"):   # the cards, not the weights
        shutil.copy(real / f"{name}.json", bundled)
    out = tmp_path / "m.tif"
    with pytest.raises(QgsProcessingException) as err:
        _run("sar2eo_cloud:cloud_mask", {"INPUT": str(s2_sample), "OUTPUT": str(out)})
    assert str(err.value) == modelstore.how_to_get("ukis_csmask_4b_l2a")

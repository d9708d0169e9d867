"""core/modelstore.py: installing models from an index into a store, via a 127.0.0.1 server.

The model files here are GENERATED: a real card layout (cards.sar2eo_card) naming random bytes as its
weights; nothing loads them as a network, the store only moves and verifies files.
"""
from __future__ import annotations

import zipfile

import pytest
from generated import ONNX, WEIGHTS, sha as _sha

from sar2eo_cloud_plugin.core import modelfile, modelstore, runtime
from sar2eo_cloud_plugin.core.errors import DownloadError, ModelFileError, NoBundledWeightsError


def test_missing_model_says_how_to_get_it(world):
    bundled, store, _ = world
    assert modelstore.status("sar2eo_rgb") == modelstore.AVAILABLE
    card_file = modelfile.bundled_model_path("sar2eo_rgb")
    assert card_file == bundled / "sar2eo_rgb.json"
    with pytest.raises(NoBundledWeightsError) as err:   # where every run picks its model file
        runtime.select_model_file(card_file, modelfile.read_card(card_file))
    assert str(err.value) == modelstore.how_to_get("sar2eo_rgb")
    assert "download_models" in str(err.value) and "Model" in str(err.value)


def test_install_then_lookup_then_remove(world):
    bundled, store, server = world
    seen = []
    card_file = modelstore.install("sar2eo_rgb", progress=lambda d, t: seen.append(d))
    assert card_file == store / "sar2eo_rgb.json"
    assert (store / "sar2eo_rgb.safetensors").read_bytes() == WEIGHTS
    assert (store / "sar2eo_rgb.onnx").read_bytes() == ONNX        # extracted from the (mirrored) wheel
    assert seen and modelstore.status("sar2eo_rgb") == modelstore.INSTALLED
    assert modelfile.bundled_model_path("sar2eo_rgb") == card_file   # the run finds the store's copy
    modelfile.verify_weights(card_file, modelfile.read_card(card_file))
    removed = modelstore.remove("sar2eo_rgb")
    assert {p.name for p in removed} == {"sar2eo_rgb.json", "sar2eo_rgb.safetensors", "sar2eo_rgb.onnx"}
    assert modelstore.status("sar2eo_rgb") == modelstore.AVAILABLE
    assert (bundled / "sar2eo_rgb.json").is_file()                  # the plugin's own card is never deleted


def test_bad_download_leaves_nothing_installed(world):
    bundled, store, server = world
    server.add("sar2eo_rgb.safetensors", WEIGHTS[::-1])             # same size, wrong content
    with pytest.raises(DownloadError, match="not the expected one"):
        modelstore.install("sar2eo_rgb")
    assert not (store / "sar2eo_rgb.json").exists()
    assert not (store / "sar2eo_rgb.safetensors").exists()
    assert modelstore.status("sar2eo_rgb") == modelstore.AVAILABLE


def test_wrong_member_in_archive_refused(world, tmp_path):
    bundled, store, server = world
    wheel = tmp_path / "other.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("pkg/model.onnx", ONNX[::-1])
    with pytest.raises(DownloadError, match="does not have the expected sha256"):
        modelstore.extract_member(wheel, "pkg/model.onnx", store / "x.onnx", _sha(ONNX))
    assert not (store / "x.onnx").exists() and not (store / "x.onnx.part").exists()


def test_unknown_model(world):
    with pytest.raises(DownloadError, match="No model named 'nope'"):
        modelstore.install("nope")


def test_import_local_card(world, tmp_path):
    bundled, store, _ = world
    from generated import write_local_card

    elsewhere = tmp_path / "mine"
    out = modelstore.import_card(write_local_card(elsewhere))
    assert out == store / "my_rgbn.json" and (store / "my_rgbn.safetensors").read_bytes() == WEIGHTS
    assert "my_rgbn" in modelstore.known_names("sar2eo")
    (elsewhere / "my_rgbn.safetensors").write_bytes(WEIGHTS[::-1])
    (store / "my_rgbn.json").unlink()
    with pytest.raises(ModelFileError, match="does not match its card"):
        modelstore.import_card(elsewhere / "my_rgbn.json")
    assert not (store / "my_rgbn.json").exists()

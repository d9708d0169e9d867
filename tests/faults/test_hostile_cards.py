"""Hostile or broken model cards (issue 11): each is refused with one ModelFileError naming the
field, before any real network is built (a card must not make smp contact a hub, allocate
gigabytes or build a network its weights do not fit).

Model files: the GENERATED random-weight ``tiny_models`` (tests/conftest.py), copied and edited.
Every network builder is wrapped so that building a network anywhere but on torch's ``meta``
device (which allocates nothing) fails the test.
"""
from __future__ import annotations

import json
import shutil

import pytest

from sar2eo_cloud_plugin.core import cardschema, modelfile, networks
from sar2eo_cloud_plugin.core.errors import ModelFileError


@pytest.fixture
def no_real_build(monkeypatch):
    import torch

    def guard(builder):
        def wrapped(*args, **kwargs):
            if torch.get_default_device().type != "meta":
                raise AssertionError("a real network was built from a card that should have been refused")
            return builder(*args, **kwargs)
        return wrapped

    for name, builder in list(networks.ARCHITECTURES.items()):
        monkeypatch.setitem(networks.ARCHITECTURES, name, guard(builder))


def _copy(tiny_models, tmp_path, stem):
    for suffix in (".json", ".safetensors"):
        shutil.copy(tiny_models / f"{stem}{suffix}", tmp_path / f"{stem}{suffix}")
    return tmp_path / f"{stem}.json"


def _edit(card_path, edit):
    data = json.loads(card_path.read_text())
    edit(data)
    card_path.write_text(json.dumps(data))
    return card_path


def _set(path, value):
    def edit(data):
        *parents, last = path.split(".")
        node = data
        for p in parents:
            node = node[p]
        node[last] = value
    return edit


SAR_CASES = [
    ("architecture_args.ngf", 100000, "architecture_args.ngf"),             # would allocate tens of GB
    ("architecture_args.ngf", "64", "architecture_args.ngf"),               # wrong type
    ("architecture_args.n_blocks", 9, "do not fit"),                        # weights have 2 blocks
    ("architecture_args.ngf", 16, "tensor 'model.1.bias' has shape [8]"),      # weights have ngf 8
    ("architecture_args.input_nc", 3, "architecture_args.input_nc"),
    ("architecture_args.output_nc", 4, "output.bands"),
    ("architecture_args.use_gpu_kernel", True, "architecture_args.use_gpu_kernel"),
    ("normalisation.sar_db_ranges.VV", [0.0, -25.0], "normalisation.sar_db_ranges.VV"),
    ("normalisation.sar_db_ranges.VH", [-32.5, "0"], "normalisation.sar_db_ranges.VH[1]"),
    ("normalisation.optical_range", [1.0, 1.0], "normalisation.optical_range"),
    ("tiling.tile_size", 10**6, "tiling.tile_size"),
    ("input.units", "amplitude", "input.units"),
    ("output.bands", ["B4", "B3", "B99"], "output.bands[2]"),
]




CLOUD_CASES = [
    ("architecture_args.encoder_weights", "imagenet", "architecture_args.encoder_weights"),   # a hub download
    ("architecture_args.encoder_name", "mit_b5", "architecture_args.encoder_name"),
    ("architecture_args.encoder_name", "efficientnet-b3", "do not fit"),
    ("architecture_args.classes", 3, "architecture_args.classes"),          # sigmoid needs 1 channel
    ("architecture_args.in_channels", 4, "input.bands"),
    ("output.threshold", 1.5, "output.threshold"),
    ("output.activation", "relu", "output.activation"),
    ("normalisation.std", [0.229, 0.0, 0.225], "normalisation.std[1]"),
    ("normalisation.mean", [0.5, 0.5], "normalisation.mean"),
    ("input.bands", ["B4", "B3", "blue"], "input.bands[2]"),
]


# (model file, card task, field, value, what the error must name)
BAD_CARDS = [("sar2eo_rgb", "sar2eo", *c) for c in SAR_CASES] + [("cloudmask", "cloudmask", *c) for c in CLOUD_CASES]


@pytest.mark.parametrize("stem,task,field,value,named", BAD_CARDS,
                         ids=[f"{c[1]}:{c[2]}={c[3]!r}"[:50] for c in BAD_CARDS])
def test_bad_card_is_refused_before_building(tiny_models, tmp_path, no_real_build, stem, task, field, value, named):
    card = _edit(_copy(tiny_models, tmp_path, stem), _set(field, value))
    with pytest.raises(ModelFileError) as err:
        modelfile.load_model(card, task)
    assert named in str(err.value) and str(card) in str(err.value)


def new_cloud_card() -> dict:
    """A cloud card in the format of docs/model_cards.md (an ukis-csmask-like 6-band softmax model)."""
    return {
        "format": 1, "task": "cloudmask", "name": "ukis_csmask_6b_l1c", "architecture": "unet",
        "architecture_args": {"encoder_name": "efficientnet-b4", "in_channels": 6, "classes": 3,
                              "encoder_weights": None},
        "input": {"bands": ["B2", "B3", "B4", "B8", "B11", "B12"], "units": "reflectance", "level": "L1C",
                  "resolution_m": 30},
        "normalisation": {"method": "mean_std", "mean": [0.1] * 6, "std": [0.05] * 6},
        "output": {"activation": "softmax", "classes": [{"value": 0, "name": "clear"}, {"value": 1, "name": "cloud"},
                                                        {"value": 2, "name": "shadow"}]},
        "tiling": {"tile_size": 256, "overlap": 32, "batch_size": 2},
        "weights": {"file": "ukis_csmask_6b_l1c.safetensors", "sha256": "0" * 64, "bytes": 10, "dtype": "float32"},
        "source": {"package": "ukis-csmask", "version": "1.0.0", "licence": "Apache-2.0"},
    }


def test_new_format_cloud_card_and_bundled_cards_are_accepted():
    cardschema.validate_card(new_cloud_card(), "new")
    clip = new_cloud_card()
    clip["normalisation"] = {"method": "clip_mean_std", "clip": [4000.0] * 6, "mean": [0.4] * 6, "std": [0.2] * 6}
    cardschema.validate_card(clip, "clip")
    for card_file in sorted(modelfile.BUNDLED_DIR.glob("*.json")):
        modelfile.read_card(card_file)


@pytest.mark.parametrize("path,value,named", [
    ("input.units", "radiance", "input.units"),
    ("input.level", "L3", "input.level"),
    ("input.resolution_m", 0.2, "input.resolution_m"),
    ("normalisation.method", "minmax", "normalisation.method"),
    ("normalisation.std", [0.05] * 5, "normalisation.std"),
    ("output.classes", [{"value": 0, "name": "clear"}], "output.classes"),
    ("architecture_args.encoder_weights", "imagenet", "architecture_args.encoder_weights"),
    ("source", "pypi", "source"),
])
def test_new_format_cloud_card_fields_are_validated(path, value, named):
    data = new_cloud_card()
    _set(path, value)(data)
    with pytest.raises(ModelFileError, match=named.replace(".", r"\.")):
        cardschema.validate_card(data, "card.json")

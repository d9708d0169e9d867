"""Shared fixtures.

Real data: ``sample_data/`` holds the real BigEarthNet patches stacked per scene (see sample_data/README.md).
Generated data: ``tiny_models`` writes small, randomly initialised model files for tests only — they are
never presented as results and never written into the plugin's bundled-models folder.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO = Path(__file__).resolve().parents[1]   # on sys.path through pytest.ini's `pythonpath = .`

SAMPLES = REPO / "sample_data"
SHARED_DATA = REPO.parent / "shared" / "data" / "bigearthnet-example"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def s1_samples() -> list:
    """The five real Sentinel-1 VV/VH stacks (float32 dB)."""
    files = sorted((SAMPLES / "s1").glob("*_VVVH.tif"))
    assert len(files) == 5, "sample_data/s1 is incomplete; run scripts/make_sample_data.py"
    return files


@pytest.fixture(scope="session")
def s2_samples() -> list:
    """The five real Sentinel-2 L2A 12-band stacks (uint16, 10 m grid)."""
    files = sorted((SAMPLES / "s2").glob("*_L2A12.tif"))
    assert len(files) == 5, "sample_data/s2 is incomplete; run scripts/make_sample_data.py"
    return files


@pytest.fixture(scope="session")
def s1_sample(s1_samples) -> Path:
    return s1_samples[0]


@pytest.fixture(scope="session")
def s2_sample(s2_samples) -> Path:
    return s2_samples[0]


@pytest.fixture(scope="module")
def provider(qgis_app, qgis_processing):
    """The plugin's Processing provider, registered for the test module (and removed afterwards when
    this fixture added it, leaving the registry as other test modules expect it)."""
    from qgis.core import QgsApplication

    from sar2eo_cloud_plugin.core.tasks import PROVIDER_ID
    from sar2eo_cloud_plugin.processing.provider import Sar2EoCloudProvider

    registry = QgsApplication.processingRegistry()
    added = None
    if registry.providerById(PROVIDER_ID) is None:
        added = Sar2EoCloudProvider()
        assert registry.addProvider(added)
    yield registry.providerById(PROVIDER_ID)
    if added is not None:
        registry.removeProvider(added)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Path:
    """GENERATED test-only model files: small random-weight generators for every band set
    (ngf 8, 2 residual blocks) and a randomly initialised U-Net/EfficientNet-B2 cloud model."""
    import torch

    from sar2eo_cloud_plugin.core import cards, modelfile, networks
    from sar2eo_cloud_plugin.core.bands import BAND_SET_KEYS

    out = tmp_path_factory.mktemp("tiny_models")
    torch.manual_seed(0)
    for key in BAND_SET_KEYS:
        card = cards.sar2eo_card(key, ngf=8, n_blocks=2)
        card.notes = "GENERATED for tests: random weights"
        net = networks.init_weights(networks.build_network(card.architecture, card.architecture_args))
        modelfile.save_model(net, card, out, dtype="float32")
    card = cards.cloudmask_card()
    card.notes = "GENERATED for tests: random weights"
    modelfile.save_model(networks.build_network(card.architecture, card.architecture_args), card, out)
    card = tiny_cloud_shadow_card()
    modelfile.save_model(networks.build_network(card.architecture, card.architecture_args), card, out)
    return out


def tiny_cloud_shadow_card():
    """GENERATED test-only card in the ukis-csmask form (docs/model_cards.md): B2, B3, B4, B8 reflectance
    at 30 m, mean/std normalisation, softmax over clear / cloud / shadow; a small random EfficientNet-B0."""
    from sar2eo_cloud_plugin.core.modelfile import ModelCard

    return ModelCard(
        task="cloudmask", name="tiny_cloud_shadow", architecture="unet",
        architecture_args={"encoder_name": "efficientnet-b0", "in_channels": 4, "classes": 3},
        input={"bands": ["B2", "B3", "B4", "B8"], "units": "reflectance", "level": "L2A", "resolution_m": 30},
        normalisation={"method": "mean_std", "mean": [0.1, 0.1, 0.1, 0.2], "std": [0.05, 0.05, 0.05, 0.1]},
        output={"classes": [{"value": 0, "name": "clear"}, {"value": 1, "name": "cloud"},
                            {"value": 2, "name": "shadow"}], "activation": "softmax"},
        tiling={"tile_size": 64, "overlap": 16, "batch_size": 2},
        notes="GENERATED for tests: random weights")

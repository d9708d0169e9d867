"""Both algorithms through ``qgis_process.bin`` in a QGIS whose Python cannot import torch, torchvision,
safetensors or segmentation-models-pytorch (tests/no_torch_site/sitecustomize.py, first on PYTHONPATH, blocks
them at start-up): the bundled models run on ONNX Runtime, on REAL samples (a BigEarthNet Sentinel-1 patch and a
BigEarthNet Sentinel-2 L2A patch), and RUNTIME_USED says so."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio

from sar2eo_cloud_plugin.core import runtime
from tests.plugin_install import copy_plugin, qgis_process_env
from tests.qgis.test_qgis_process import CLOUD, EXE, TRANSLATE, qgis_process, run_json

pytestmark = pytest.mark.qgis_process

SITE = Path(__file__).resolve().parents[1] / "no_torch_site"


@pytest.fixture(scope="module")
def no_torch_env(tmp_path_factory):
    if shutil.which(EXE) is None:
        pytest.skip(f"{EXE} is not installed (apt install qgis)")
    if not runtime.onnxruntime_available():
        pytest.fail("onnxruntime is not installed (requirements.txt)")
    base = tmp_path_factory.mktemp("qgis_process_no_torch")
    copy_plugin(base / "plugins")
    config = base / "config"
    config.mkdir()
    env = qgis_process_env(base / "plugins", config, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(SITE), env["PYTHONPATH"]])
    out = qgis_process(env, "plugins", "enable", "sar2eo_cloud_plugin")
    assert out.returncode == 0, out.stdout + out.stderr
    return env


def test_the_blocker_works_inside_qgis_process(no_torch_env, s1_sample, tmp_path):
    """What makes the other test mean something: inside qgis_process, asking for PyTorch fails as in a QGIS
    without it, with a message that says what to do."""
    out = qgis_process(no_torch_env, "run", TRANSLATE, "--", f"INPUT={s1_sample}", "RUNTIME=2",
                       f"OUTPUT={tmp_path / 'eo.tif'}")
    assert out.returncode != 0
    assert "torch / safetensors are not installed" in out.stdout + out.stderr, out.stdout[-2000:] + out.stderr[-2000:]
    assert not (tmp_path / "eo.tif").exists()


def test_both_algorithms_run_on_onnxruntime_without_torch(no_torch_env, s1_sample, s2_sample, tmp_path):
    eo = tmp_path / "eo.tif"
    doc = run_json(no_torch_env, TRANSLATE, INPUT=s1_sample, OUTPUT=eo)
    res = doc["results"]
    assert res["RUNTIME_USED"].startswith("ONNX Runtime (CPUExecutionProvider)"), res
    assert res["DEVICE_USED"] == "cpu" and Path(res["OUTPUT"]) == eo
    with rasterio.open(eo) as ds:
        assert ds.count == 3 and ds.dtypes[0] == "uint16" and (ds.read() > 0).mean() > 0.99

    mask = tmp_path / "mask.tif"
    doc = run_json(no_torch_env, CLOUD, INPUT=s2_sample, OUTPUT=mask)
    res = doc["results"]
    assert res["RUNTIME_USED"].startswith("ONNX Runtime (CPUExecutionProvider)"), res
    assert res["MODEL_USED"].startswith("ukis_csmask_4b") and res["VALID_PIXELS"] > 0
    with rasterio.open(mask) as ds:
        assert set(np.unique(ds.read(1))) <= {0, 1, 2, 255}

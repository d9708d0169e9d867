"""Both tasks through the core in a Python where torch, torchvision, safetensors and segmentation-models-pytorch
cannot be imported (tests/no_torch_site/sitecustomize.py blocks them at start-up): ONNX Runtime runs the bundled
models on REAL samples (a BigEarthNet Sentinel-1 patch; a BigEarthNet Sentinel-2 L2A patch, whose 30 m ukis
model takes the network-grid path with its numpy back-sampling; the Sen1Floods11 L1C scene in EPSG:4326). The
outputs are compared with the same runs on PyTorch in this (torch-enabled) process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from sar2eo_cloud_plugin.core import cloud, inference, modelfile, runtime

REPO = Path(__file__).resolve().parents[2]
SITE = REPO / "tests" / "no_torch_site"
SEN1FLOODS_S2 = REPO.parent / "shared" / "data" / "sen1floods11-sample" / "Spain_7370579_S2Hand.tif"

CHILD = r"""
import json, sys
assert "torch" in sys.modules and sys.modules["torch"] is None, "the blocker did not run"
try:
    import torch  # noqa: F401
    sys.exit("torch imported despite the blocker")
except ImportError:
    pass
from sar2eo_cloud_plugin.core import cloud, inference, runtime
jobs = json.loads(sys.argv[1])
out = {}
t = inference.translate_sar_to_eo(inference.TranslationRequest(jobs["s1"], jobs["eo"], band_set="rgb"))
out["translate"] = [t.runtime.runtime, t.runtime.provider, t.device]
for key in ("l2a", "l1c"):
    src, dst, prob = jobs[key]
    r = cloud.cloud_mask(cloud.CloudMaskRequest(src, dst, probability_path=prob))
    out[key] = [r.runtime.runtime, r.runtime.provider, r.model, r.scale]
blocked = [m for m in ("torch", "torchvision", "safetensors", "segmentation_models_pytorch")
           if sys.modules.get(m) is not None]
out["imported"] = blocked
out["describe"] = runtime.describe_runtimes()
print(json.dumps(out))
"""


def run_without_torch(jobs: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SITE), str(REPO)]), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(jobs)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def read(path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read()


@pytest.mark.skipif(not runtime.onnxruntime_available(), reason="onnxruntime is not installed")
def test_both_tasks_run_without_torch_and_agree_with_torch(tmp_path, s1_sample, s2_sample):
    for name in ("sar2eo_rgb", "ukis_csmask_4b_l2a", "ukis_csmask_4b_l1c"):
        card = modelfile.read_card(modelfile.BUNDLED_DIR / f"{name}.json")
        assert modelfile.onnx_present(modelfile.BUNDLED_DIR / f"{name}.json", card), \
            f"{name}.onnx is not installed: run scripts/setup.sh"
    jobs = {"s1": str(s1_sample), "eo": str(tmp_path / "eo.tif"),
            "l2a": [str(s2_sample), str(tmp_path / "l2a_mask.tif"), str(tmp_path / "l2a_prob.tif")],
            "l1c": [str(SEN1FLOODS_S2), str(tmp_path / "l1c_mask.tif"), str(tmp_path / "l1c_prob.tif")]}
    got = run_without_torch(jobs)

    assert got["imported"] == []
    assert got["translate"][:2] == ["onnxruntime", runtime.CPU_PROVIDER] and got["translate"][2] == "cpu"
    assert got["l2a"][:3] == ["onnxruntime", runtime.CPU_PROVIDER, "ukis_csmask_4b_l2a"] and got["l2a"][3] > 2.5
    assert got["l1c"][:3] == ["onnxruntime", runtime.CPU_PROVIDER, "ukis_csmask_4b_l1c"] and got["l1c"][3] > 3.0
    assert "PyTorch not installed" in got["describe"]

    # The same runs on PyTorch here: translation within 1 DN, the same classes, probabilities within 1e-3.
    ref = tmp_path / "eo_torch.tif"
    inference.translate_sar_to_eo(inference.TranslationRequest(str(s1_sample), str(ref), band_set="rgb",
                                                                runtime="torch"))
    a, b = read(jobs["eo"]).astype(np.int32), read(ref).astype(np.int32)
    assert a.shape == b.shape and (a > 0).mean() > 0.99
    assert np.abs(a - b).max() <= 1
    for key in ("l2a", "l1c"):
        src, mask, prob = jobs[key]
        tmask, tprob = tmp_path / f"{key}_mask_torch.tif", tmp_path / f"{key}_prob_torch.tif"
        res = cloud.cloud_mask(cloud.CloudMaskRequest(src, str(tmask), probability_path=str(tprob), runtime="torch"))
        assert res.runtime.runtime == "torch"
        np.testing.assert_array_equal(read(mask), read(tmask))
        assert np.abs(read(prob) - read(tprob)).max() <= 1e-3

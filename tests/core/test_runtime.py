"""core.runtime: which runtime runs a model, ONNX graphs beside (or instead of) the weights, a deterministic
export, and ONNX Runtime against PyTorch for EVERY bundled model on REAL samples.

Parity bounds (stated here, checked below): translation ≤ 1 DN on the uint16 output (reflectance x 10,000); the
RGB cloud model ≤ 1e-3 on its cloud probability; the ukis-csmask models ≤ 1e-3 on every class probability and
no class pixel differs."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from sar2eo_cloud_plugin.core import cloud, inference, modelfile, runtime
from sar2eo_cloud_plugin.core.errors import DeviceError, ModelFileError

REPO = Path(__file__).resolve().parents[2]
needs_ort = pytest.mark.skipif(not runtime.onnxruntime_available(), reason="onnxruntime is not installed")


def read(path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read()


# ------------------------------------------------------------------------------------------- choosing
def test_auto_prefers_onnxruntime_and_falls_back_to_torch():
    assert runtime.choose_runtime("auto", True, True, ort_ok=True, torch_ok=True)[0] == "onnxruntime"
    assert runtime.choose_runtime("auto", False, True, ort_ok=True, torch_ok=True)[0] == "torch"
    assert runtime.choose_runtime("auto", True, True, ort_ok=False, torch_ok=True)[0] == "torch"
    assert runtime.choose_runtime("auto", True, False, ort_ok=True, torch_ok=False)[0] == "onnxruntime"
    assert runtime.choose_runtime("torch", True, True, ort_ok=True, torch_ok=True)[0] == "torch"


@pytest.mark.parametrize("args, message", [
    (("onnxruntime", True, True, False, True), "onnxruntime is not installed"),
    (("onnxruntime", False, True, True, True), "has no ONNX graph"),
    (("torch", True, True, True, False), "torch / safetensors are not installed"),
    (("torch", True, False, True, True), "has no safetensors weights"),
    (("auto", False, True, True, False), "no ONNX graph and safetensors weights installed, and only onnxruntime"),
    (("auto", True, False, False, True), "an ONNX graph and no safetensors weights"),
])
def test_a_runtime_that_cannot_run_says_why(args, message):
    requested, graph, weights, ort_ok, torch_ok = args
    with pytest.raises(ModelFileError, match=message):
        runtime.choose_runtime(requested, graph, weights, "m.json", ort_ok=ort_ok, torch_ok=torch_ok)


def test_unknown_runtime_is_refused():
    with pytest.raises(Exception, match="Unknown runtime 'tensorflow'"):
        runtime.choose_runtime("tensorflow", True, True)


def test_providers_follow_the_device_and_what_the_build_offers():
    cpu = runtime.CPU_PROVIDER
    gpu_build = ["TensorrtExecutionProvider", "CUDAExecutionProvider", cpu]
    assert runtime.ort_providers("auto", gpu_build) == ["CUDAExecutionProvider", cpu]
    assert runtime.ort_providers("cuda", gpu_build) == ["CUDAExecutionProvider", cpu]
    assert runtime.ort_providers("cpu", gpu_build) == [cpu]
    assert runtime.ort_providers("auto", ["DmlExecutionProvider", cpu]) == ["DmlExecutionProvider", cpu]
    assert runtime.ort_providers("auto", ["CoreMLExecutionProvider", cpu]) == ["CoreMLExecutionProvider", cpu]
    assert runtime.ort_providers("auto", [cpu]) == [cpu]
    with pytest.raises(DeviceError, match="no CUDA provider"):
        runtime.ort_providers("cuda", [cpu])


def test_activations_match_their_definitions():
    x = np.random.default_rng(0).normal(0, 30, (2, 3, 4, 5)).astype(np.float32)
    e = np.exp(x.astype(np.float64) - x.max(axis=1, keepdims=True))
    np.testing.assert_allclose(runtime.apply_activation(x, "softmax"), e / e.sum(axis=1, keepdims=True), atol=1e-6)
    np.testing.assert_allclose(runtime.apply_activation(x, "sigmoid"), 1 / (1 + np.exp(-x.astype(np.float64))),
                               atol=1e-6)
    assert runtime.apply_activation(x, None) is not None and np.array_equal(runtime.apply_activation(x, None), x)


# ------------------------------------------------------------------------------------------- graph files
@pytest.fixture(scope="module")
def graph_only_model(tmp_path_factory, tiny_models):
    """GENERATED: the tiny random rgb generator, its graph exported, then its weights removed from the card."""
    from sar2eo_cloud_plugin.core.onnxexport import export_card_onnx

    folder = tmp_path_factory.mktemp("graph_only")
    for suffix in (".json", ".safetensors"):
        (folder / f"sar2eo_rgb{suffix}").write_bytes((tiny_models / f"sar2eo_rgb{suffix}").read_bytes())
    export_card_onnx(folder / "sar2eo_rgb.json")
    return folder


@needs_ort
def test_graph_only_card_runs_on_onnxruntime_and_agrees_with_torch(graph_only_model, s1_sample, tmp_path):
    card_file = graph_only_model / "sar2eo_rgb.json"
    with_both = tmp_path / "both.tif"
    inference.translate_sar_to_eo(inference.TranslationRequest(str(s1_sample), str(with_both),
                                                                model_path=str(card_file), runtime="torch"))
    data = json.loads(card_file.read_text())
    data.pop("weights")
    only = tmp_path / "only"
    only.mkdir()
    (only / "sar2eo_rgb.json").write_text(json.dumps(data))
    (only / "sar2eo_rgb.onnx").write_bytes((graph_only_model / "sar2eo_rgb.onnx").read_bytes())
    out = tmp_path / "ort.tif"
    res = inference.translate_sar_to_eo(inference.TranslationRequest(str(s1_sample), str(out),
                                                                     model_path=str(only / "sar2eo_rgb.json")))
    assert res.runtime.runtime == "onnxruntime"
    assert np.abs(read(out).astype(int) - read(with_both).astype(int)).max() <= 1
    with pytest.raises(ModelFileError, match="has no safetensors weights"):
        inference.translate_sar_to_eo(inference.TranslationRequest(str(s1_sample), str(tmp_path / "x.tif"),
                                                                   model_path=str(only / "sar2eo_rgb.json"),
                                                                   runtime="torch"))
    assert not (tmp_path / "x.tif").exists()


@needs_ort
def test_a_tampered_or_truncated_graph_is_refused(graph_only_model, s1_sample, tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    for name in ("sar2eo_rgb.json", "sar2eo_rgb.safetensors", "sar2eo_rgb.onnx"):
        (folder / name).write_bytes((graph_only_model / name).read_bytes())
    graph = folder / "sar2eo_rgb.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 1
    graph.write_bytes(bytes(data))
    req = inference.TranslationRequest(str(s1_sample), str(tmp_path / "o.tif"),
                                       model_path=str(folder / "sar2eo_rgb.json"), runtime="onnxruntime")
    with pytest.raises(ModelFileError, match="does not match its card"):
        inference.translate_sar_to_eo(req)
    graph.write_bytes(bytes(data[:1000]))
    with pytest.raises(ModelFileError, match="truncated"):
        inference.translate_sar_to_eo(req)
    assert not (tmp_path / "o.tif").exists()


def test_card_needs_weights_or_graph_and_a_graph_file_name(tiny_models):
    data = json.loads((tiny_models / "sar2eo_rgb.json").read_text())
    data.pop("weights")
    with pytest.raises(ModelFileError, match=r"lacks weights \(or onnx\)"):
        modelfile.ModelCard.from_dict(data, "c.json")
    data["onnx"] = {"file": "../x.onnx", "sha256": "0" * 64, "bytes": 1}
    with pytest.raises(ModelFileError, match="onnx.file"):
        modelfile.ModelCard.from_dict(data, "c.json")
    data["onnx"] = {"file": "x.bin", "sha256": "0" * 64, "bytes": 1}
    with pytest.raises(ModelFileError, match="must end with .onnx"):
        modelfile.ModelCard.from_dict(data, "c.json")
    data["onnx"] = {"file": "x.onnx", "sha256": "xyz", "bytes": 1}
    with pytest.raises(ModelFileError, match="onnx.sha256"):
        modelfile.ModelCard.from_dict(data, "c.json")


# ------------------------------------------------------------------------------------------- export
EXPORT = r"""
import hashlib, sys
from sar2eo_cloud_plugin.core import modelfile, onnxexport
net, card = modelfile.load_model(sys.argv[1])
print(hashlib.sha256(onnxexport.graph_bytes(net, 2 if card.task == "sar2eo" else 3)).hexdigest())
"""


def test_export_is_byte_identical_across_processes(tiny_models):
    """Two fresh processes (different hash seeds, different allocation) give the same graph bytes."""
    shas = []
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
        proc = subprocess.run([sys.executable, "-W", "ignore", "-c", EXPORT, str(tiny_models / "sar2eo_rgb.json")],
                              env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
        assert proc.returncode == 0, proc.stderr[-2000:]
        shas.append(proc.stdout.split()[-1])
    from sar2eo_cloud_plugin.core import onnxexport

    net, _card = modelfile.load_model(tiny_models / "sar2eo_rgb.json")
    here = hashlib.sha256(onnxexport.graph_bytes(net, 2)).hexdigest()
    assert shas[0] == shas[1] == here


# What the CPU at hand may change: ATen's vector width, MKL's code path, oneDNN's instruction set.
NARROW_CPU_DISPATCH = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
                       "ONEDNN_MAX_CPU_ISA": "SSE41"}


@pytest.mark.parametrize("dispatch", [{}, NARROW_CPU_DISPATCH], ids=["this_cpu", "narrow_dispatch"])
def test_export_with_batchnorm_matches_its_card_on_any_cpu(dispatch):
    """The bundled cloud U-Net (BatchNorm after every convolution) exports to the graph its card names, also with
    the CPU dispatch narrowed to plain SSE: fusing BatchNorm at export gave graphs one ULP apart on AVX2 and
    AVX-512 machines, and set-up refused the graph."""
    card_file = modelfile.BUNDLED_DIR / "cloudmask.json"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", **dispatch)
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", EXPORT, str(card_file)], env=env,
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-1] == modelfile.read_card(card_file).onnx["sha256"]


def test_bundled_graphs_are_installed_and_match_their_cards():
    """What scripts/setup.sh installed: every bundled card names a graph, and it is there with its sha256."""
    proc = subprocess.run([sys.executable, "scripts/derive_onnx.py", "--check"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for card_file in sorted(modelfile.BUNDLED_DIR.glob("*.json")):
        card = modelfile.read_card(card_file)
        assert card.onnx, f"{card_file.name} has no onnx entry"
        modelfile.verify_onnx(card_file, card)


# ------------------------------------------------------------------------------------------- parity
@needs_ort
@pytest.mark.parametrize("band_set", ["rgb", "nir_swir_re", "rgbn"])
def test_translation_parity_onnxruntime_vs_torch(band_set, s1_samples, tmp_path):
    """Bound: ≤ 1 DN (reflectance x 10,000) on every pixel of two real Sentinel-1 patches."""
    for src in s1_samples[:2]:
        outs = {}
        for rt in ("onnxruntime", "torch"):
            outs[rt] = tmp_path / f"{src.stem}_{rt}.tif"
            res = inference.translate_sar_to_eo(inference.TranslationRequest(str(src), str(outs[rt]),
                                                                             band_set=band_set, runtime=rt))
            assert res.runtime.runtime == rt
        a, b = read(outs["onnxruntime"]).astype(np.int32), read(outs["torch"]).astype(np.int32)
        assert np.abs(a - b).max() <= 1, f"{band_set} {src.name}: {np.abs(a - b).max()} DN"


@needs_ort
@pytest.mark.parametrize("model", ["cloudmask", "ukis_csmask_4b_l1c", "ukis_csmask_4b_l2a", "ukis_csmask_6b_l1c",
                                   "ukis_csmask_6b_l2a"])
def test_cloud_parity_onnxruntime_vs_torch(model, s2_samples, tmp_path):
    """Bounds: ≤ 1e-3 on every probability; for the softmax (ukis) models no class pixel differs. Real L2A
    patches; the ukis models take the 30 m network-grid path."""
    for src in s2_samples[:2]:
        masks, probs = {}, {}
        for rt in ("onnxruntime", "torch"):
            m, p = tmp_path / f"{src.stem}_{rt}_m.tif", tmp_path / f"{src.stem}_{rt}_p.tif"
            res = cloud.cloud_mask(cloud.CloudMaskRequest(str(src), str(m), model=model, level="L2A",
                                                          probability_path=str(p), runtime=rt))
            assert res.runtime.runtime == rt and res.model == model
            masks[rt], probs[rt] = read(m), read(p)
        diff = float(np.abs(probs["onnxruntime"] - probs["torch"]).max())
        assert diff <= 1e-3, f"{model} {src.name}: probabilities differ by {diff:.2e}"
        if model.startswith("ukis"):
            np.testing.assert_array_equal(masks["onnxruntime"], masks["torch"])
        else:   # a sigmoid threshold: only a pixel within the bound of it may flip
            threshold = modelfile.read_card(modelfile.BUNDLED_DIR / f"{model}.json").output.get("threshold", 0.5)
            flips = masks["onnxruntime"] != masks["torch"]
            assert np.all(np.abs(probs["torch"][1][flips[0]] - threshold) <= 1e-3)

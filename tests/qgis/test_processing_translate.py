"""Processing: the provider and ``sar2eo_cloud:translate_sar_to_eo`` on the REAL Sentinel-1 samples.

Model files: the GENERATED random-weight ``tiny_models`` (tests only) via MODEL_FILE; the bundled
model (once exported) in ``test_translate_bundled_model``. Layers derived from the real samples
(1-band copy) are generated in fixtures and say so.
"""
from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from qgis.core import (
    QgsApplication,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterDefinition,
    QgsProject,
    QgsRasterLayer,
)

from sar2eo_cloud_plugin.core import modelfile
from tests.qgis_versions import handle_algorithm_results

ALG = "sar2eo_cloud:translate_sar_to_eo"
BUNDLED_RGB = modelfile.BUNDLED_DIR / "sar2eo_rgb.json"


@pytest.fixture
def run(run_alg):
    def _run(params, feedback=None, context=None):
        return run_alg(ALG, params, feedback, context)

    return _run


# ---------------------------------------------------------------------------------------- provider
def test_provider_registers_both_algorithms(provider):
    ids = {alg.id() for alg in provider.algorithms()}
    assert {"sar2eo_cloud:translate_sar_to_eo", "sar2eo_cloud:cloud_mask"} <= ids
    assert provider.name() == "SAR2EO & Cloud"
    for alg_id in ("sar2eo_cloud:translate_sar_to_eo", "sar2eo_cloud:cloud_mask"):
        alg = QgsApplication.processingRegistry().algorithmById(alg_id)
        assert alg is not None
        assert alg.displayName() and alg.group() and alg.groupId()
        text = alg.shortHelpString()
        for section in ("<h3>Input</h3>", "<h3>Output", "<h3>Limits</h3>", "<h3>Bundled models</h3>"):
            assert section in text, f"{alg_id}: help has no {section} section"
        assert "nodata" in text.lower()
        for out in alg.outputDefinitions():   # every result the algorithm returns is explained by name
            if out.type() in ("outputString", "outputNumber"):
                assert out.name() in text, f"{alg_id}: help does not explain the result {out.name()}"


def test_translate_parameters_follow_the_contract(provider):
    alg = QgsApplication.processingRegistry().algorithmById(ALG)
    names = [p.name() for p in alg.parameterDefinitions()]
    assert names == ["INPUT", "VV_BAND", "VH_BAND", "UNITS", "BAND_SET", "DEVICE", "RUNTIME", "TILE_SIZE", "OVERLAP",
                     "BATCH_SIZE", "MODEL_FILE", "OUTPUT"]
    adv = {p.name() for p in alg.parameterDefinitions() if p.flags() & QgsProcessingParameterDefinition.FlagAdvanced}
    assert adv == {"RUNTIME", "TILE_SIZE", "OVERLAP", "BATCH_SIZE", "MODEL_FILE"}
    p = alg.parameterDefinition
    assert (p("VV_BAND").defaultValue(), p("VH_BAND").defaultValue()) == (1, 2)
    assert p("BAND_SET").options()[0].startswith("RGB") and len(p("BAND_SET").options()) == 3
    assert len(p("UNITS").options()) == 3 and len(p("DEVICE").options()) == 3
    assert (p("TILE_SIZE").defaultValue(), p("OVERLAP").defaultValue(), p("BATCH_SIZE").defaultValue()) == (256, 32, 4)
    assert len(p("RUNTIME").options()) == 3 and p("RUNTIME").defaultValue() == 0
    assert {o.name() for o in alg.outputDefinitions()} == {"OUTPUT", "DEVICE_USED", "RUNTIME_USED", "INPUT_UNITS"}


def test_plugin_modules_do_not_import_torch(repo_root):
    """The provider and algorithms load without importing torch (fast start, works without it)."""
    code = ("import sys; sys.path.insert(0, %r)\n"
            "import sar2eo_cloud_plugin.processing.translate_algorithm\n"
            "import sar2eo_cloud_plugin.processing.cloudmask_algorithm\n"
            "import sar2eo_cloud_plugin.processing.common, sar2eo_cloud_plugin.styling\n"
            "import sar2eo_cloud_plugin.processing.provider\n"
            "from sar2eo_cloud_plugin.processing.translate_algorithm import TranslateSarToEoAlgorithm as T\n"
            "from sar2eo_cloud_plugin.processing.cloudmask_algorithm import CloudMaskAlgorithm as C\n"
            "a, b = T(), C(); a.initAlgorithm(); b.initAlgorithm(); a.shortHelpString(); b.shortHelpString()\n"
            "print('torch' in sys.modules)\n") % str(repo_root)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_missing_torch_gives_a_clear_error(run, s1_sample, tiny_models, tmp_path, monkeypatch):
    """Without onnxruntime AND torch nothing can run: the message names what to install (the preferred
    runtime, onnxruntime). With onnxruntime only, the algorithms run (tests/qgis/test_no_torch_qgis_process.py)."""
    from sar2eo_cloud_plugin import deps

    real = deps.importlib.util.find_spec
    monkeypatch.setattr(deps.importlib.util, "find_spec",
                        lambda name, *a: None if name == "torch" else real(name, *a))
    alg = QgsApplication.processingRegistry().algorithmById(ALG)
    assert alg.canExecute()[0]          # onnxruntime is installed: torch is not needed
    monkeypatch.setattr(deps.importlib.util, "find_spec",
                        lambda name, *a: None if name in ("torch", "onnxruntime") else real(name, *a))
    ok, message = alg.canExecute()
    # neither runtime: the preferred one (ONNX Runtime) is asked for, pinned
    assert not ok and "onnxruntime is not installed" in message and "onnxruntime==" in message
    with pytest.raises(QgsProcessingException, match="onnxruntime"):
        run({"INPUT": str(s1_sample), "MODEL_FILE": str(tiny_models / "sar2eo_rgb.json"),
             "OUTPUT": str(tmp_path / "out.tif")})
    assert not (tmp_path / "out.tif").exists()


# ---------------------------------------------------------------------------------------- real runs
EXPECTED = {"rgb": ("B4", "B3", "B2"), "nir_swir_re": ("B8", "B11", "B5"), "rgbn": ("B4", "B3", "B2", "B8")}


def check_translation(out: Path, src: Path, bands):
    layer = QgsRasterLayer(str(out), "out", "gdal")
    source = QgsRasterLayer(str(src), "in", "gdal")
    assert layer.isValid()
    assert layer.crs() == source.crs() and layer.crs().isValid()
    assert layer.extent() == source.extent()
    assert (layer.width(), layer.height()) == (source.width(), source.height())
    assert layer.bandCount() == len(bands)
    with rasterio.open(out) as ds, rasterio.open(src) as s:
        assert ds.transform == s.transform and ds.crs == s.crs
        assert ds.dtypes == ("uint16",) * len(bands)
        assert ds.nodatavals == (0.0,) * len(bands)
        assert ds.descriptions == bands
        data = ds.read()
    assert data.max() > 0
    return data


@pytest.mark.parametrize("index,key", list(enumerate(EXPECTED)))
def test_translate_real_s1_every_band_set(run, s1_sample, tiny_models, tmp_path, index, key, log_feedback, leftovers):
    out = tmp_path / f"eo_{key}.tif"
    feedback = log_feedback()
    res = run({"INPUT": str(s1_sample), "BAND_SET": index, "MODEL_FILE": str(tiny_models / f"sar2eo_{key}.json"),
               "OUTPUT": str(out)}, feedback)
    assert res["OUTPUT"] == str(out)
    assert res["DEVICE_USED"] == "cpu"
    assert res["INPUT_UNITS"] == "dB"          # the real samples are dB, described "VV (dB)"
    data = check_translation(out, s1_sample, EXPECTED[key])
    assert (data > 0).all()                    # the real patch has no nodata: every pixel translated
    assert any("Input units: dB" in line for line in feedback.lines)
    assert leftovers(tmp_path) == [out.name]   # no partial files


def test_translate_with_advanced_parameters_and_explicit_units(run, s1_samples, tiny_models, tmp_path):
    """Small tiles, several batches, units given explicitly (what a batch/modeler run passes)."""
    out = tmp_path / "eo.tif"
    res = run({"INPUT": str(s1_samples[1]), "VV_BAND": 1, "VH_BAND": 2, "UNITS": 1, "BAND_SET": 0, "DEVICE": 1,
               "TILE_SIZE": 64, "OVERLAP": 16, "BATCH_SIZE": 2, "MODEL_FILE": str(tiny_models / "sar2eo_rgb.json"),
               "OUTPUT": str(out)})
    assert res["INPUT_UNITS"] == "dB"
    check_translation(out, s1_samples[1], EXPECTED["rgb"])


def test_translate_bundled_model(run, s1_sample, tmp_path):
    """The BUNDLED RGB model (no MODEL_FILE) on real data. The weights ship with the plugin."""
    assert BUNDLED_RGB.is_file(), f"bundled weights missing: {BUNDLED_RGB}"
    out = tmp_path / "eo_bundled.tif"
    res = run({"INPUT": str(s1_sample), "OUTPUT": str(out)})
    data = check_translation(Path(res["OUTPUT"]), s1_sample, EXPECTED["rgb"])
    # A trained model gives land-like reflectance, not saturated noise.
    assert 50 < np.median(data) < 5000


def test_output_opens_styled_via_post_processor(provider, s1_sample, tiny_models, tmp_path):
    """Loading on completion (Toolbox/batch/modeler path) styles the layer: multiband colour, stretched.
    Twice, each run with its own context deleted afterwards: a post-processor dies with its context, so
    a second run in the same session must get a fresh one (regression: a reused one was deleted)."""
    import gc

    from qgis.core import QgsProcessingOutputLayerDefinition

    for attempt in range(2):
        out = tmp_path / f"eo_styled{attempt}.tif"
        context = QgsProcessingContext()
        context.setProject(QgsProject.instance())
        alg = QgsApplication.processingRegistry().createAlgorithmById(ALG)
        feedback = QgsProcessingFeedback()
        params = {"INPUT": str(s1_sample), "BAND_SET": 1, "MODEL_FILE": str(tiny_models / "sar2eo_nir_swir_re.json"),
                  "OUTPUT": QgsProcessingOutputLayerDefinition(str(out), QgsProject.instance())}
        results, ok = alg.run(params, context, feedback)
        assert ok, results
        details = context.layerToLoadOnCompletionDetails(str(out))
        assert details.postProcessor() is not None
        gc.collect()     # the Python side of the post-processor must survive a collection
        assert handle_algorithm_results(alg, context, feedback, params)
        layers = [lyr for lyr in QgsProject.instance().mapLayers().values() if lyr.source() == str(out)]
        assert len(layers) == 1
        renderer = layers[0].renderer()
        assert renderer.type() == "multibandcolor"
        assert (renderer.redBand(), renderer.greenBand(), renderer.blueBand()) == (1, 2, 3)
        ce = renderer.redContrastEnhancement()
        assert ce is not None and ce.maximumValue() > ce.minimumValue() >= 0
        QgsProject.instance().removeAllMapLayers()
        del context, details
        gc.collect()


def test_no_post_processor_is_created_when_nothing_is_loaded(run, s1_sample, tiny_models, tmp_path):
    from sar2eo_cloud_plugin import styling

    styling._prune()
    before = len(styling._LIVE)
    run({"INPUT": str(s1_sample), "MODEL_FILE": str(tiny_models / "sar2eo_rgb.json"),
         "OUTPUT": str(tmp_path / "o.tif")})
    assert len(styling._LIVE) == before


# ---------------------------------------------------------------------------------------- errors
@pytest.fixture
def one_band_s1(s1_sample, tmp_path):
    """GENERATED from the real sample: its VV band only."""
    path = tmp_path / "s1_vv_only.tif"
    with rasterio.open(s1_sample) as src:
        profile = src.profile | {"count": 1}
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(src.read(1), 1)
            dst.set_band_description(1, "VV (dB)")
    return path


def test_one_band_layer_is_refused(run, one_band_s1, tiny_models, tmp_path):
    with pytest.raises(QgsProcessingException, match=r"1 band.*VV and VH"):
        run({"INPUT": str(one_band_s1), "VV_BAND": 1, "VH_BAND": 1,
             "MODEL_FILE": str(tiny_models / "sar2eo_rgb.json"), "OUTPUT": str(tmp_path / "o.tif")})
    assert not (tmp_path / "o.tif").exists()


def test_wrong_band_number_is_refused(run, s1_sample, tiny_models, tmp_path, leftovers):
    with pytest.raises(QgsProcessingException, match=r"VH band number 3 does not exist"):
        run({"INPUT": str(s1_sample), "VH_BAND": 3, "MODEL_FILE": str(tiny_models / "sar2eo_rgb.json"),
             "OUTPUT": str(tmp_path / "o.tif")})
    with pytest.raises(QgsProcessingException, match=r"must be different bands"):
        run({"INPUT": str(s1_sample), "VV_BAND": 2, "VH_BAND": 2, "MODEL_FILE": str(tiny_models / "sar2eo_rgb.json"),
             "OUTPUT": str(tmp_path / "o.tif")})
    assert leftovers(tmp_path) == []


def test_optical_reflectance_is_refused(run, s2_sample, tiny_models, tmp_path, leftovers):
    """A real uint16 Sentinel-2 stack fed as SAR: refused, naming what was seen."""
    with pytest.raises(QgsProcessingException, match=r"does not look like Sentinel-1.*uint16"):
        run({"INPUT": str(s2_sample), "MODEL_FILE": str(tiny_models / "sar2eo_rgb.json"),
             "OUTPUT": str(tmp_path / "o.tif")})
    assert leftovers(tmp_path) == []


def test_tampered_weights_are_refused(run, s1_sample, tiny_models, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    for suffix in (".json", ".safetensors"):
        (models / f"sar2eo_rgb{suffix}").write_bytes((tiny_models / f"sar2eo_rgb{suffix}").read_bytes())
    weights = models / "sar2eo_rgb.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[len(blob) // 2] ^= 0x01          # flip one bit in the middle of the tensors
    weights.write_bytes(bytes(blob))
    out = tmp_path / "o.tif"
    with pytest.raises(QgsProcessingException, match="sha256"):
        run({"INPUT": str(s1_sample), "MODEL_FILE": str(models / "sar2eo_rgb.json"), "OUTPUT": str(out)})
    assert not out.exists()


def test_model_for_another_band_set_is_refused(run, s1_sample, tiny_models, tmp_path):
    with pytest.raises(QgsProcessingException, match=r"writes bands"):
        run({"INPUT": str(s1_sample), "BAND_SET": 2, "MODEL_FILE": str(tiny_models / "sar2eo_rgb.json"),
             "OUTPUT": str(tmp_path / "o.tif")})


@pytest.mark.parametrize("index,key", list(enumerate(EXPECTED)))
def test_missing_bundled_weights_are_refused(run, s1_sample, tmp_path, monkeypatch, index, key):
    from sar2eo_cloud_plugin.core import inference

    empty = tmp_path / "no_models"
    empty.mkdir()
    monkeypatch.setattr(modelfile, "BUNDLED_DIR", empty)
    monkeypatch.setattr(inference, "bundled_model_path",
                        functools.partial(modelfile.bundled_model_path, models_dir=empty))
    out = tmp_path / "o.tif"
    with pytest.raises(QgsProcessingException, match=r"No weights bundled for band set"):
        run({"INPUT": str(s1_sample), "BAND_SET": index, "OUTPUT": str(out)})
    assert not out.exists()


def test_cancelled_run_leaves_no_output(run, s1_sample, tiny_models, tmp_path, log_feedback, leftovers):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "cancelled.tif"
    feedback = log_feedback(cancel_on_progress=True)
    with pytest.raises(QgsProcessingException, match="[Cc]ancel"):
        run({"INPUT": str(s1_sample), "TILE_SIZE": 32, "OVERLAP": 0, "BATCH_SIZE": 1,
             "MODEL_FILE": str(tiny_models / "sar2eo_rgb.json"), "OUTPUT": str(out)}, feedback)
    assert feedback.isCanceled()
    assert leftovers(out_dir) == []


def test_non_tiff_output_is_refused(run, s1_sample, tiny_models, tmp_path):
    with pytest.raises(QgsProcessingException, match="GeoTIFF"):
        run({"INPUT": str(s1_sample), "MODEL_FILE": str(tiny_models / "sar2eo_rgb.json"),
             "OUTPUT": str(tmp_path / "o.img")})


def test_non_file_layer_is_refused(provider, s1_sample, tiny_models, tmp_path):
    """A layer that is not a GDAL file (here a QGIS virtual raster) gets a clear error."""
    src = QgsRasterLayer(str(s1_sample), "s1", "gdal")
    ext = src.extent()
    uri = (f"?crs={src.crs().authid()}&extent={ext.xMinimum()},{ext.yMinimum()},{ext.xMaximum()},{ext.yMaximum()}"
           f"&width={src.width()}&height={src.height()}&formula=%22s1@1%22&s1:uri={s1_sample}&s1:provider=gdal")
    layer = QgsRasterLayer(uri, "virtual", "virtualraster")
    if not layer.isValid():
        pytest.skip("the virtualraster provider is not available in this QGIS build")
    QgsProject.instance().addMapLayer(layer)
    try:
        import processing

        with pytest.raises(QgsProcessingException, match="not from a raster file|not a file"):
            processing.run(ALG, {"INPUT": layer, "MODEL_FILE": str(tiny_models / "sar2eo_rgb.json"),
                                 "OUTPUT": str(tmp_path / "o.tif")}, feedback=QgsProcessingFeedback())
    finally:
        QgsProject.instance().removeMapLayer(layer.id())


def test_results_are_json_serialisable_for_batch_and_models(run, s1_sample, tiny_models, tmp_path):
    """Batch mode and models pass plain values in and read plain values out (no hidden state)."""
    outs = []
    for i, units in enumerate((0, 1)):
        out = tmp_path / f"b{i}.tif"
        res = run({"INPUT": str(s1_sample), "UNITS": units, "MODEL_FILE": str(tiny_models / "sar2eo_rgb.json"),
                   "OUTPUT": str(out)})
        json.dumps(res)
        outs.append(out)
    with rasterio.open(outs[0]) as a, rasterio.open(outs[1]) as b:
        assert np.array_equal(a.read(), b.read())   # auto decided dB, as given explicitly


# ---------------------------------------------------------------------------------------- units, nodata, device
@pytest.fixture
def s1_linear(s1_sample, tmp_path):
    """GENERATED from the real sample: the same backscatter as linear power (10^(dB/10)), no descriptions."""
    path = tmp_path / "s1_linear.tif"
    with rasterio.open(s1_sample) as src:
        profile = src.profile
        data = (10.0 ** (src.read().astype(np.float64) / 10.0)).astype(np.float32)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


@pytest.fixture
def s1_nodata_block(s1_sample, tmp_path):
    """GENERATED copy of the real sample with a 20 x 60 px block set to the nodata value -9999 (tagged)."""
    path = tmp_path / "s1_nodata_block.tif"
    with rasterio.open(s1_sample) as src:
        profile = src.profile | {"nodata": -9999.0}
        data = src.read()
        descriptions = src.descriptions
    data[:, 50:70, 30:90] = -9999.0
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for i, d in enumerate(descriptions, start=1):
            dst.set_band_description(i, d)
    return path


def test_linear_input_is_detected_and_gives_the_db_result(run, s1_sample, s1_linear, tiny_models, tmp_path):
    model = str(tiny_models / "sar2eo_rgb.json")
    ref, out = tmp_path / "db.tif", tmp_path / "lin.tif"
    run({"INPUT": str(s1_sample), "MODEL_FILE": model, "OUTPUT": str(ref)})
    res = run({"INPUT": str(s1_linear), "MODEL_FILE": model, "OUTPUT": str(out)})
    assert res["INPUT_UNITS"] == "linear"
    with rasterio.open(ref) as a, rasterio.open(out) as b:
        diff = np.abs(a.read().astype(np.int32) - b.read().astype(np.int32))
    assert diff.max() <= 2      # same backscatter, float round-off through log10 only


def test_input_nodata_becomes_output_nodata(run, s1_nodata_block, tiny_models, tmp_path):
    out = tmp_path / "eo.tif"
    run({"INPUT": str(s1_nodata_block), "MODEL_FILE": str(tiny_models / "sar2eo_rgbn.json"), "BAND_SET": 2,
         "OUTPUT": str(out)})
    data = check_translation(out, s1_nodata_block, EXPECTED["rgbn"])
    block = np.zeros(data.shape[1:], bool)
    block[50:70, 30:90] = True
    assert (data[:, block] == 0).all()
    assert (data[:, ~block] > 0).all()


def test_cuda_without_a_gpu_is_a_clear_error(run, s1_sample, tiny_models, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present here: DEVICE=cuda is valid")
    with pytest.raises(QgsProcessingException, match="CUDA was requested but is not available"):
        run({"INPUT": str(s1_sample), "DEVICE": 2, "MODEL_FILE": str(tiny_models / "sar2eo_rgb.json"),
             "OUTPUT": str(tmp_path / "o.tif")})
    assert not (tmp_path / "o.tif").exists()


def test_help_marks_an_experimental_band_set_from_its_card(provider, tmp_path, monkeypatch):
    """The card's metrics.experimental (written by training's export) reaches the algorithm's help."""
    import json

    from sar2eo_cloud_plugin.core import modelfile

    for key in ("rgb", "nir_swir_re", "rgbn"):
        card = json.loads((modelfile.BUNDLED_DIR / f"sar2eo_{key}.json").read_text(encoding="utf-8"))
        card["metrics"] = {"experimental": key == "nir_swir_re",
                           "targets": {"definition": "beat the baseline by > 0.0 dB PSNR and > 0.0 SSIM"}}
        (tmp_path / f"sar2eo_{key}.json").write_text(json.dumps(card), encoding="utf-8")
    monkeypatch.setattr(modelfile, "BUNDLED_DIR", tmp_path)
    text = QgsApplication.processingRegistry().algorithmById("sar2eo_cloud:translate_sar_to_eo").shortHelpString()
    items = {li.split("</b>", 1)[1].split("(")[0].strip(): li for li in text.split("<li><b>")[1:4]}
    assert "experimental" in items["NIR + SWIR + Red-Edge"] and "beat the baseline" in items["NIR + SWIR + Red-Edge"]
    assert "experimental" not in items["RGB"] and "experimental" not in items["RGB + NIR"]

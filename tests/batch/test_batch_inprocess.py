"""Folder batch in-process (pytest-qgis): cancellation within and between scenes and the batch-wide
checks; input discovery and the "already complete" check are tested without QGIS in
tests/core/test_batch.py. Inputs are copies of the REAL Sentinel-1 samples; the model is the GENERATED
random-weight ``tiny_models`` card; the rasters written by hand below are GENERATED and say so."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from qgis.core import QgsApplication, QgsProcessingContext, QgsProcessingException, QgsProcessingFeedback


@pytest.fixture()
def s1_copies(tmp_path, s1_samples):
    folder = tmp_path / "in"
    folder.mkdir()
    for f in s1_samples:
        shutil.copy2(f, folder / f.name)
    return folder


def test_cancel_stops_within_and_between_scenes(provider, s1_copies, s1_samples, tiny_models, tmp_path):
    import processing

    out = tmp_path / "out"
    feedback = QgsProcessingFeedback()
    seen = []

    def on_progress(p):
        seen.append(p)
        if p > 30:  # 5 scenes = 20 % each: this is half-way through the 2nd scene's tiles
            feedback.cancel()

    feedback.progressChanged.connect(on_progress)
    params = {"INPUT_FOLDER": str(s1_copies), "OUTPUT_FOLDER": str(out), "TASK": 0, "BAND_SET": 0, "DEVICE": 1,
              # 32 px tiles with 8 px overlap: 25 tiles per 120 px sample, one per batch, so the
              # cancel lands inside a scene, between tiles.
              "TILE_SIZE": 32, "OVERLAP": 8, "BATCH_SIZE": 1,
              "MODEL_FILE": str(tiny_models / "sar2eo_rgb.json")}
    # A cancelled batch fails (non-zero exit in qgis_process), after writing its summary.
    with pytest.raises(QgsProcessingException, match="The batch was cancelled; 1 processed"):
        processing.run("sar2eo_cloud:batch_folder", params, feedback=feedback, context=QgsProcessingContext())
    assert any(20 < p < 40 for p in seen), "no progress inside the 2nd scene"
    summary = json.loads((out / "sar2eo_batch_translate_summary.json").read_text())
    statuses = [r["status"] for r in summary["files"]]
    assert statuses == ["processed", "cancelled", "cancelled", "cancelled", "cancelled"]
    assert "while processing" in summary["files"][1]["reason"]
    assert "not started" in summary["files"][2]["reason"]
    assert summary["cancelled"] is True
    assert summary["counts"] == {"processed": 1, "skipped": 0, "failed": 0, "cancelled": 4}
    # Only the finished scene's output and the summary: no partial or temporary file.
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{s1_samples[0].stem}_eo_rgb.tif", "sar2eo_batch_translate_summary.json"])
    with rasterio.open(out / f"{s1_samples[0].stem}_eo_rgb.tif") as ds:
        assert ds.count == 3

    # Resuming processes the rest and skips the finished scene.
    results = processing.run("sar2eo_cloud:batch_folder", dict(params, TILE_SIZE=128, OVERLAP=32, BATCH_SIZE=4),
                             feedback=QgsProcessingFeedback(), context=QgsProcessingContext())
    assert (results["PROCESSED"], results["SKIPPED"], results["FAILED"]) == (4, 1, 0)


def test_batch_without_model_file_uses_bundled_weights_or_stops_before_any_file(provider, s1_copies, s1_samples,
                                                                               tmp_path):
    """No MODEL_FILE: the bundled model. Until trained weights are exported the batch stops at once with
    the core's "No weights bundled" message (never random weights), before touching any file."""
    import processing
    from qgis.core import QgsProcessingException

    from sar2eo_cloud_plugin.core.modelfile import BUNDLED_DIR

    out = tmp_path / "out"
    params = {"INPUT_FOLDER": str(s1_copies), "PATTERN": "*_VVVH.tif", "OUTPUT_FOLDER": str(out), "TASK": 0,
              "BAND_SET": 0, "DEVICE": 1}
    if (BUNDLED_DIR / "sar2eo_rgb.json").is_file():
        results = processing.run("sar2eo_cloud:batch_folder", params, feedback=QgsProcessingFeedback(),
                                 context=QgsProcessingContext())
        assert (results["PROCESSED"], results["FAILED"]) == (5, 0)
        for src in s1_samples:
            with rasterio.open(out / f"{src.stem}_eo_rgb.tif") as ds, rasterio.open(src) as s:
                assert (ds.count, ds.crs, ds.transform) == (3, s.crs, s.transform)
    else:
        with pytest.raises(QgsProcessingException, match="No weights bundled"):
            processing.run("sar2eo_cloud:batch_folder", params, feedback=QgsProcessingFeedback(),
                           context=QgsProcessingContext())
        assert not out.exists() or not any(out.iterdir())


def test_batch_refuses_a_model_for_another_band_set(provider, s1_copies, tiny_models, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    params = {"INPUT_FOLDER": str(s1_copies), "OUTPUT_FOLDER": str(tmp_path / "out"), "TASK": 0, "BAND_SET": 1,
              "DEVICE": 1, "MODEL_FILE": str(tiny_models / "sar2eo_rgb.json")}
    with pytest.raises(QgsProcessingException, match="not .*B8"):
        processing.run("sar2eo_cloud:batch_folder", params, feedback=QgsProcessingFeedback(),
                       context=QgsProcessingContext())
    params.update(TASK=1)  # a translation card for the cloud mask
    with pytest.raises(QgsProcessingException, match="not a 'cloudmask' model"):
        processing.run("sar2eo_cloud:batch_folder", params, feedback=QgsProcessingFeedback(),
                       context=QgsProcessingContext())


def test_batch_passes_the_cloud_options(provider, s2_folder, tiny_models, tmp_path):
    """CLOUD_MODE, BUFFER and LEVEL reach every file's cloud mask: cloud only (no shadow code), the buffer
    and level recorded in each mask's tags; CLOUD_MODEL lists the single-scene algorithm's choices."""
    import processing

    from sar2eo_cloud_plugin.core.cloud import model_choices

    alg = QgsApplication.processingRegistry().algorithmById("sar2eo_cloud:batch_folder")
    assert alg.parameterDefinition("CLOUD_MODEL").options()[1:] == model_choices()[1:]
    out = tmp_path / "out"
    params = {"INPUT_FOLDER": str(s2_folder), "PATTERN": "S2*.tif", "OUTPUT_FOLDER": str(out), "TASK": 1, "DEVICE": 1,
              "CLOUD_MODE": 1,
              "BUFFER": 20, "LEVEL": 2, "TILE_SIZE": 64, "MODEL_FILE": str(tiny_models / "tiny_cloud_shadow.json")}
    results = processing.run("sar2eo_cloud:batch_folder", params, feedback=QgsProcessingFeedback(),
                             context=QgsProcessingContext())
    assert results["FAILED"] == 0 and results["PROCESSED"] >= 1
    masks = sorted(out.rglob("*_cloudmask.tif"))
    assert len(masks) == results["PROCESSED"]
    for path in masks:
        with rasterio.open(path) as ds:
            assert set(np.unique(ds.read(1))) <= {0, 1, 255}
            tags = ds.tags()
        assert (tags["CLOUD_MODE"], tags["CLOUD_BUFFER_M"], tags["CLOUD_LEVEL"]) == ("cloud_only", "20", "L2A")


def test_batch_passes_the_runtime_to_every_file(provider, s1_copies, tiny_models, tmp_path):
    """RUNTIME reaches each file's run, whose runtime is recorded in the summary; a runtime that cannot run the
    model (the tiny GENERATED model has no ONNX graph) stops the batch before any file."""
    import processing

    out = tmp_path / "out"
    params = {"INPUT_FOLDER": str(s1_copies), "OUTPUT_FOLDER": str(out), "TASK": 0, "BAND_SET": 0, "DEVICE": 1,
              "RUNTIME": 2, "MODEL_FILE": str(tiny_models / "sar2eo_rgb.json")}
    results = processing.run("sar2eo_cloud:batch_folder", params, feedback=QgsProcessingFeedback(),
                             context=QgsProcessingContext())
    assert results["FAILED"] == 0 and results["PROCESSED"] >= 1
    summary = json.loads(Path(results["SUMMARY"]).read_text())
    runtimes = {r["runtime"] for r in summary["files"] if r["status"] == "processed"}
    assert len(runtimes) == 1 and runtimes.pop().startswith("PyTorch")
    params.update(RUNTIME=1, OUTPUT_FOLDER=str(tmp_path / "out_ort"))
    with pytest.raises(QgsProcessingException, match="ONNX Runtime was requested but .* no ONNX graph"):
        processing.run("sar2eo_cloud:batch_folder", params, feedback=QgsProcessingFeedback(),
                       context=QgsProcessingContext())
    assert not any((tmp_path / "out_ort").rglob("*.tif"))

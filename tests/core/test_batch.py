"""Batch planning without QGIS (core/batch.py): input discovery, output names, the "already complete"
check with its checksums, and the batch-wide checks. The rasters and vector files written here are
GENERATED (constant or random arrays, or bytes that are not a raster); the model is the GENERATED
random-weight ``tiny_models`` card."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import rasterio

from sar2eo_cloud_plugin.core import batch
from sar2eo_cloud_plugin.core.errors import InputError, Sar2EoError


def test_find_inputs_leaves_out_hidden_outputs_and_output_subfolder(tmp_path):
    root = tmp_path / "scenes"
    (root / "a").mkdir(parents=True)
    (root / "out").mkdir()
    for rel in ("x.tif", "y.TIF", "z.tiff", "notes.txt", ".x.1234abcd.partial.tif", "x_eo_rgb.tif",
                "x_cloudmask.tif", "x.tif.aux.xml", "a/w.tif", "out/v.tif"):
        (root / rel).write_bytes(b"")
    files, left_out = batch.find_inputs(str(root), "*.tif", recursive=False, exclude_dir=str(root / "out"))
    assert [f.name for f in files] == ["x.tif", "y.TIF"]
    assert left_out == 2
    files, _ = batch.find_inputs(str(root), "*.tif;*.tiff", recursive=True, exclude_dir=str(root / "out"))
    assert sorted(str(f.relative_to(root)) for f in files) == ["a/w.tif", "x.tif", "y.TIF", "z.tiff"]


def test_output_names_mirror_subfolders(tmp_path):
    src = tmp_path / "in" / "sub" / "scene.tif"
    outs = batch.output_paths(src, tmp_path / "in", tmp_path / "out", "cloud_mask", "rgb", True, True)
    assert outs == {"OUTPUT": str(tmp_path / "out" / "sub" / "scene_cloudmask.tif"),
                    "OUTPUT_PROBABILITY": str(tmp_path / "out" / "sub" / "scene_cloudprob.tif"),
                    "OUTPUT_POLYGONS": str(tmp_path / "out" / "sub" / "scene_clouds.gpkg")}
    assert batch.output_paths(src, tmp_path / "in", tmp_path / "out", "translate", "rgbn", True, True) == {
        "OUTPUT": str(tmp_path / "out" / "sub" / "scene_eo_rgbn.tif")}


def _write(path, count, crs="EPSG:32633", size=120, descriptions=None):
    """GENERATED raster with the grid of the first real Sentinel-1 sample (or another CRS)."""
    from rasterio.transform import from_origin

    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=count, dtype="uint16",
                       crs=crs, transform=from_origin(399960, 5900040, 10, 10)) as ds:
        ds.write(np.ones((count, size, size), dtype="uint16"))
        for i, d in enumerate(descriptions or (), start=1):
            ds.set_band_description(i, d)


def test_completeness_checks_bands_grid_and_readability(tmp_path):
    src = tmp_path / "scene.tif"
    _write(src, 2)
    out = tmp_path / "scene_eo_rgb.tif"
    outs = {"OUTPUT": str(out)}
    ok, why = batch.completeness(src, outs, "translate", "rgb")
    assert not ok and "missing" in why
    _write(out, 3, descriptions=("B4", "B3", "B2"))
    ok, why = batch.completeness(src, outs, "translate", "rgb")
    assert ok and "already complete" in why
    _write(out, 4, descriptions=("B4", "B3", "B2", "B8"))
    assert "4 band(s), expected 3" in batch.completeness(src, outs, "translate", "rgb")[1]
    _write(out, 3, crs="EPSG:32634", descriptions=("B4", "B3", "B2"))
    assert "CRS" in batch.completeness(src, outs, "translate", "rgb")[1]
    _write(out, 3, size=100, descriptions=("B4", "B3", "B2"))
    assert "100 x 100" in batch.completeness(src, outs, "translate", "rgb")[1]
    _write(out, 3, descriptions=("B8", "B11", "B5"))
    assert "bands are" in batch.completeness(src, outs, "translate", "rgb")[1]
    _write(out, 3, descriptions=("B4", "B3", "B2"))
    out.write_bytes(out.read_bytes()[:2000])
    assert not batch.completeness(src, outs, "translate", "rgb")[0]


def _write_vector(path):
    """GENERATED GeoPackage with one empty polygon layer (what the cloud mask's polygons output is)."""
    from osgeo import ogr, osr

    if os.path.exists(path):
        os.remove(path)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    ds.CreateLayer("clouds", srs, ogr.wkbPolygon)
    ds = None


@pytest.mark.parametrize("gdal_raises", [False, True], ids=["gdal-3.6-returns-none", "gdal-3.10-raises"])
def test_a_file_that_is_not_a_vector_layer_is_incomplete_not_an_error(tmp_path, monkeypatch, gdal_raises):
    """GDAL 3.10 (Debian 13) raises on ogr.Open of a file that is not a vector dataset, where GDAL 3.6 (this
    machine) returns None. The raising case is played here by wrapping ogr.Open as 3.10 behaves. Either way the
    output is incomplete (and so redone), never an error of the batch."""
    from osgeo import ogr

    src = tmp_path / "scene.tif"
    _write(src, 4)
    outs = batch.output_paths(src, tmp_path, tmp_path / "out", "cloud_mask", "rgb", False, True)
    (tmp_path / "out").mkdir()
    _write(outs["OUTPUT"], 1)
    with open(outs["OUTPUT_POLYGONS"], "wb") as fh:
        fh.write(b"not a geopackage at all")
    if gdal_raises:
        real_open = ogr.Open

        def open_like_gdal_310(path, *args):
            ds = real_open(path, *args)
            if ds is None:
                raise RuntimeError(f"{path}: not recognized as being in a supported file format.")
            return ds

        monkeypatch.setattr(ogr, "Open", open_like_gdal_310)
    ok, why = batch.completeness(src, outs, "cloud_mask", "rgb")
    assert not ok and "does not open as a vector layer" in why
    _write_vector(outs["OUTPUT_POLYGONS"])
    ok, why = batch.completeness(src, outs, "cloud_mask", "rgb")
    assert ok, why


def test_checksums_recorded_then_a_changed_output_is_redone(tmp_path):
    src = tmp_path / "scene.tif"
    _write(src, 2)
    outs = {"OUTPUT": str(tmp_path / "scene_eo_rgb.tif")}
    _write(outs["OUTPUT"], 3, descriptions=("B4", "B3", "B2"))
    sums = batch.output_checksums(outs)
    assert set(sums) == {"OUTPUT"} and len(sums["OUTPUT"]["sha256"]) == 64
    record = {"input": "scene.tif", "status": "processed", "checksums": sums}
    ok, why = batch.completeness(src, outs, "translate", "rgb", record)
    assert ok and "sha256 as recorded" in why
    with rasterio.open(outs["OUTPUT"], "r+") as ds:       # same shape, bands and grid; other pixels
        ds.write(np.full((3, 120, 120), 7, dtype="uint16"))
    ok, why = batch.completeness(src, outs, "translate", "rgb", record)
    assert not ok and "changed since it was written" in why
    assert not batch.completeness(src, outs, "translate", "rgb", dict(record, status="failed"))[0]


def test_previous_records_of_a_missing_or_broken_summary_are_empty(tmp_path):
    summary = tmp_path / "summary.json"
    assert batch.previous_records(summary) == {}
    summary.write_text("{not json")
    assert batch.previous_records(summary) == {}
    summary.write_text(json.dumps({"files": [{"input": "a.tif", "status": "processed"}, "junk", {"no": "input"}]}))
    assert batch.previous_records(summary) == {"a.tif": {"input": "a.tif", "status": "processed"}}


def test_unreadable_input_is_named(tmp_path):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00 truncated")
    assert "cannot open as a raster" in batch.unreadable_reason(bad)
    good = tmp_path / "good.tif"
    _write(good, 2)
    assert batch.unreadable_reason(good) is None


@pytest.mark.parametrize("device", [-1, 3, 99])
def test_batch_refuses_a_device_out_of_range(tiny_models, device):
    with pytest.raises(InputError, match=f"DEVICE {device} is not one of the devices: 0 = Auto.*1 = CPU.*2 = CUDA"):
        batch.check_batch_wide("translate", "rgb", str(tiny_models / "sar2eo_rgb.json"), device)


def test_batch_wide_check_names_model_and_device(tiny_models):
    lines = batch.check_batch_wide("translate", "rgb", str(tiny_models / "sar2eo_rgb.json"), 1)
    assert len(lines) == 1 and lines[0].startswith("Model: ")
    assert lines[0].endswith("sar2eo_rgb.json), device: cpu, runtime: torch")   # the tiny models have no graph


def test_batch_wide_check_follows_the_runtime_of_a_graph_only_model(tiny_models, tmp_path):
    """A model installed for ONNX Runtime alone (the model manager downloads only the graph then) has no
    safetensors weights: the batch checks the graph it will run, and refuses RUNTIME torch up front."""
    import shutil

    from sar2eo_cloud_plugin.core import onnxexport
    from sar2eo_cloud_plugin.core.errors import ModelFileError

    for name in ("sar2eo_rgb.json", "sar2eo_rgb.safetensors"):
        shutil.copy(tiny_models / name, tmp_path / name)
    card = tmp_path / "sar2eo_rgb.json"
    onnxexport.export_card_onnx(card)
    (tmp_path / "sar2eo_rgb.safetensors").unlink()
    for runtime in ("auto", "onnxruntime"):
        lines = batch.check_batch_wide("translate", "rgb", str(card), 1, runtime=runtime)
        assert lines[0].endswith("device: cpu, runtime: onnxruntime")
    with pytest.raises(ModelFileError, match="PyTorch was requested but .* has no safetensors weights"):
        batch.check_batch_wide("translate", "rgb", str(card), 1, runtime="torch")
    (tmp_path / "sar2eo_rgb.onnx").write_bytes(b"not the graph its card names")
    with pytest.raises(ModelFileError, match="sar2eo_rgb.onnx"):
        batch.check_batch_wide("translate", "rgb", str(card), 1)


def test_batch_wide_check_refuses_a_card_of_another_band_set_and_a_bad_tile(tiny_models):
    with pytest.raises(Sar2EoError, match="writes bands .* not .*choose the matching band set"):
        batch.check_batch_wide("translate", "nir_swir_re", str(tiny_models / "sar2eo_rgb.json"), 1)
    with pytest.raises(Sar2EoError, match="multiple of 4"):
        batch.check_batch_wide("translate", "rgb", str(tiny_models / "sar2eo_rgb.json"), 1, {"TILE_SIZE": 30})


def test_batch_planning_imports_no_qgis():
    code = "import sys; import sar2eo_cloud_plugin.core.batch; print(any(m.startswith('qgis') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

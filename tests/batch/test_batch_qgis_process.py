"""Folder batch and shipped model through the real ``qgis_process.bin`` (issue 6).

Inputs are copies of the REAL samples plus two GENERATED bad files (see conftest.py); model files are
the GENERATED random-weight ``tiny_models`` — outputs are checked for presence, shape, type and
georeferencing, never for content.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

pytestmark = [pytest.mark.qgis_process, pytest.mark.slow]

MODELS_DIR = Path(__file__).resolve().parents[2] / "sar2eo_cloud_plugin" / "processing" / "models"
MODEL3 = MODELS_DIR / "translate_and_cloud_mask.model3"


@pytest.fixture()
def pair(s1_sample, s2_sample, tmp_path):
    """Copies of the first REAL Sentinel-1/Sentinel-2 pair (same area and grid), so QGIS's .aux.xml
    sidecars land in the temporary folder, not in sample_data/."""
    import shutil

    folder = tmp_path / "pair"
    folder.mkdir()
    return shutil.copy2(s1_sample, folder / s1_sample.name), shutil.copy2(s2_sample, folder / s2_sample.name)


def _snapshot(folder: Path):
    """Input files and their hashes. ``.aux.xml`` sidecars are left out: QGIS (GDAL's PAM) writes band
    statistics beside any raster it opens as a layer, in the batch as in the desktop."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.endswith(".aux.xml")}


def _same_grid(out: Path, src: Path):
    with rasterio.open(out) as o, rasterio.open(src) as s:
        assert o.crs == s.crs, (out, o.crs, s.crs)
        assert o.transform.almost_equals(s.transform), (out, o.transform, s.transform)
        assert (o.width, o.height) == (s.width, s.height)
        return o.count, o.dtypes[0], o.read()


def _batch(qgis_process, folder, out, task, tiny_models, *extra):
    model = "sar2eo_rgb.json" if task == 0 else "cloudmask.json"
    tile = 128  # a multiple of 4 and 32; the samples are 120 px, so one small tile each (keeps the run light)
    rc, res, err = qgis_process("run", "sar2eo_cloud:batch_folder", "--",
                                f"INPUT_FOLDER={folder}", f"OUTPUT_FOLDER={out}", f"TASK={task}", "BAND_SET=0",
                                "DEVICE=1", f"TILE_SIZE={tile}", f"MODEL_FILE={tiny_models / model}", *extra)
    assert rc == 0, err + str(res)
    results = res["results"]
    summary = json.loads(Path(results["SUMMARY"]).read_text())
    return results, summary, res["log"]


def _by_input(summary):
    return {rec["input"]: rec for rec in summary["files"]}


def test_list_shows_batch_and_shipped_model(qgis_process):
    rc, out, err = qgis_process("list", json_output=False)
    assert rc == 0, err
    assert "sar2eo_cloud:batch_folder" in out
    assert "sar2eo_cloud:translate_and_cloud_mask" in out
    assert "sar2eo_cloud:sar_under_clouds" in out
    assert "Translate SAR and mask clouds of the same area" in out


def test_batch_translate_folder_then_rerun_skips_then_overwrite(qgis_process, s1_folder, s1_samples, s2_sample,
                                                               tiny_models, tmp_path):
    before = _snapshot(s1_folder)
    out = tmp_path / "eo"
    results, summary, log = _batch(qgis_process, s1_folder, out, 0, tiny_models)

    assert (results["PROCESSED"], results["SKIPPED"], results["FAILED"]) == (5, 0, 3)
    assert summary["counts"] == {"processed": 5, "skipped": 0, "failed": 3, "cancelled": 0}
    recs = _by_input(summary)
    assert len(recs) == 8  # every input is accounted for
    for src in s1_samples:
        rec = recs[src.name]
        assert rec["status"] == "processed", rec
        dst = out / f"{src.stem}_eo_rgb.tif"
        assert rec["outputs"]["OUTPUT"] == dst.name
        count, dtype, data = _same_grid(dst, src)
        assert (count, dtype) == (3, "uint16")
        assert data.max() > 0
    # The bad files fail with the core's reason; the batch went on.
    assert recs[s2_sample.name]["status"] == "failed"
    assert "does not look like Sentinel-1" in recs[s2_sample.name]["reason"]
    assert recs["dem_1band.tif"]["status"] == "failed"
    assert "1 band" in recs["dem_1band.tif"]["reason"]
    assert recs["corrupt_truncated.tif"]["status"] == "failed"
    assert "cannot open as a raster" in recs["corrupt_truncated.tif"]["reason"]
    assert any("Batch summary: 5 processed, 0 skipped" in line for line in log["info"])
    assert any("dem_1band" in line for line in log["errors"])
    # Nothing else written, nothing lost, the inputs untouched.
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted([f"{s.stem}_eo_rgb.tif" for s in s1_samples] + ["sar2eo_batch_translate_summary.json"])
    assert _snapshot(s1_folder) == before

    # Re-run: every complete output is skipped, and says so; the failures are tried again.
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tif")}
    results, summary, log = _batch(qgis_process, s1_folder, out, 0, tiny_models)
    assert (results["PROCESSED"], results["SKIPPED"], results["FAILED"]) == (0, 5, 3)
    for src in s1_samples:
        assert "already complete" in _by_input(summary)[src.name]["reason"]
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.tif")} == mtimes

    # A damaged output (cut short after the run) is not "complete": it is redone.
    victim = out / f"{s1_samples[1].stem}_eo_rgb.tif"
    victim.write_bytes(victim.read_bytes()[:3000])
    results, summary, _log = _batch(qgis_process, s1_folder, out, 0, tiny_models)
    assert (results["PROCESSED"], results["SKIPPED"], results["FAILED"]) == (1, 4, 3)
    assert _by_input(summary)[s1_samples[1].name]["status"] == "processed"
    _same_grid(victim, s1_samples[1])

    # OVERWRITE redoes everything.
    results, summary, _log = _batch(qgis_process, s1_folder, out, 0, tiny_models, "OVERWRITE=true")
    assert (results["PROCESSED"], results["SKIPPED"], results["FAILED"]) == (5, 0, 3)
    assert all(p.stat().st_mtime_ns > mtimes[p.name] for p in out.glob("*.tif"))
    assert _snapshot(s1_folder) == before


def test_batch_cloud_mask_recursive_with_polygons(qgis_process, s2_folder, s2_samples, tiny_models, tmp_path):
    out = tmp_path / "masks"
    results, summary, _log = _batch(qgis_process, s2_folder, out, 1, tiny_models,
                                    "RECURSIVE=true", "CLOUD_POLYGONS=true")
    assert (results["PROCESSED"], results["SKIPPED"], results["FAILED"]) == (5, 0, 2)
    recs = _by_input(summary)
    for src in s2_samples:
        rel = src.name if not src.name.startswith("S2B_") else f"sub/{src.name}"
        assert recs[rel]["status"] == "processed", recs[rel]
        mask = out / Path(rel).parent / f"{src.stem}_cloudmask.tif"
        count, dtype, data = _same_grid(mask, src)
        assert (count, dtype) == (1, "uint8")
        assert set(np.unique(data)) <= {0, 1, 255}
        assert (out / Path(rel).parent / f"{src.stem}_clouds.gpkg").is_file()
    assert "Bands B4, B3, B2" not in recs["dem_1band.tif"]["reason"]
    assert "B4, B3, B2" in recs["dem_1band.tif"]["reason"]  # the core's band-layout error
    assert recs["corrupt_truncated.tif"]["status"] == "failed"

    results, summary, _log = _batch(qgis_process, s2_folder, out, 1, tiny_models,
                                    "RECURSIVE=true", "CLOUD_POLYGONS=true")
    assert (results["PROCESSED"], results["SKIPPED"], results["FAILED"]) == (0, 5, 2)


@pytest.mark.parametrize("how", ["id", "path"])
def test_shipped_model_runs(qgis_process, pair, tiny_models, tmp_path, how):
    s1_sample, s2_sample = pair
    target = "sar2eo_cloud:translate_and_cloud_mask" if how == "id" else str(MODEL3)
    rc, res, err = qgis_process("run", target, "--", f"SENTINEL1={s1_sample}", f"SENTINEL2={s2_sample}",
                                "BAND_SET=2", "DEVICE=1",
                                f"SAR2EO_MODEL_FILE={tiny_models / 'sar2eo_rgbn.json'}",
                                f"CLOUD_MODEL_FILE={tiny_models / 'cloudmask.json'}",
                                f"translate:EO={tmp_path / 'eo.tif'}",
                                f"cloudmask:CLOUD_MASK={tmp_path / 'mask.tif'}",
                                f"cloudmask:CLOUD_POLYGONS={tmp_path / 'clouds.gpkg'}")
    assert rc == 0, err + str(res)
    count, dtype, _ = _same_grid(tmp_path / "eo.tif", s1_sample)
    assert (count, dtype) == (4, "uint16")
    count, dtype, data = _same_grid(tmp_path / "mask.tif", s2_sample)
    assert (count, dtype) == (1, "uint8") and set(np.unique(data)) <= {0, 1, 255}
    assert (tmp_path / "clouds.gpkg").is_file()
    assert Path(res["results"]["translate:EO"]) == tmp_path / "eo.tif"


def test_chained_model_keeps_translation_under_the_clouds(qgis_process, pair, tiny_models, tmp_path):
    """sar_under_clouds: cloud polygons (output of one step) cut the translation (output of another)."""
    s1, s2 = pair
    rc, res, err = qgis_process("run", "sar2eo_cloud:sar_under_clouds", "--", f"SENTINEL1={s1}", f"SENTINEL2={s2}",
                                "BAND_SET=0", "DEVICE=1",
                                f"SAR2EO_MODEL_FILE={tiny_models / 'sar2eo_rgb.json'}",
                                f"CLOUD_MODEL_FILE={tiny_models / 'cloudmask.json'}",
                                f"clip:EO_UNDER_CLOUDS={tmp_path / 'under.tif'}",
                                f"cloudmask:CLOUD_MASK={tmp_path / 'mask.tif'}")
    assert rc == 0, err + str(res)
    count, dtype, eo = _same_grid(tmp_path / "under.tif", s1)
    assert (count, dtype) == (3, "uint16")
    _, _, mask = _same_grid(tmp_path / "mask.tif", s2)  # the real pair shares one grid
    filled, cloud = eo[0] > 0, np.isin(mask[0], (1, 2))       # cloud or shadow, grown by the 30 m buffer
    assert cloud.any() and filled.any()
    # Translated pixels only where the mask says cloud or shadow (polygon edges follow pixel edges).
    assert (filled == cloud).mean() > 0.99

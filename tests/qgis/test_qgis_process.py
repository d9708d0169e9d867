"""The algorithms through the ``qgis_process.bin`` executable, with the plugin enabled from a
temporary plugin folder (a copy of the package plus the top-level metadata.txt).

Debian's ``qgis_process`` wrapper passes ``--noversioncheck``, which 3.22 rejects, hence ``.bin``.
Inputs are the REAL samples; model files are the GENERATED random-weight ``tiny_models``.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import rasterio

from tests.plugin_install import copy_plugin, qgis_process_env

pytestmark = pytest.mark.qgis_process

EXE = "qgis_process.bin"
TRANSLATE = "sar2eo_cloud:translate_sar_to_eo"
CLOUD = "sar2eo_cloud:cloud_mask"


@pytest.fixture(scope="module")
def qp_env(tmp_path_factory, repo_root):
    if shutil.which(EXE) is None:
        pytest.skip(f"{EXE} is not installed (apt install qgis)")
    base = tmp_path_factory.mktemp("qgis_process")
    copy_plugin(base / "plugins")
    config = base / "config"
    config.mkdir()
    env = qgis_process_env(base / "plugins", config)
    out = qgis_process(env, "plugins", "enable", "sar2eo_cloud_plugin")
    assert out.returncode == 0, out.stdout + out.stderr
    return env


def qgis_process(env, *args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *map(str, args)], env=env, capture_output=True, text=True, timeout=timeout)


def run_json(env, alg, **params):
    out = qgis_process(env, "--json", "run", alg, "--", *(f"{k}={v}" for k, v in params.items()))
    assert out.returncode == 0, f"rc {out.returncode}\nSTDOUT:\n{out.stdout[-4000:]}\nSTDERR:\n{out.stderr[-4000:]}"
    start = out.stdout.index("{")      # Qt may print a line before the JSON document
    return json.loads(out.stdout[start:])


def same_grid(a: Path, b: Path) -> None:
    with rasterio.open(a) as x, rasterio.open(b) as y:
        assert x.crs == y.crs and x.crs is not None
        assert x.transform == y.transform and (x.width, x.height) == (y.width, y.height)


def test_list_shows_both_algorithms(qp_env):
    out = qgis_process(qp_env, "list")
    assert out.returncode == 0, out.stderr
    assert TRANSLATE in out.stdout and CLOUD in out.stdout


def test_help_lists_the_parameters(qp_env):
    out = qgis_process(qp_env, "help", CLOUD)
    assert out.returncode == 0, out.stderr
    for name in ("MODEL", "BAND_MAP", "LEVEL", "BUFFER", "THRESHOLD", "MIN_AREA", "OUTPUT_PROBABILITY",
                 "OUTPUT_POLYGONS", "CLOUD_FRACTION", "SHADOW_FRACTION", "MODEL_USED"):
        assert name in out.stdout


def test_translate_through_qgis_process(qp_env, s1_sample, tiny_models, tmp_path):
    """Only INPUT, MODEL_FILE and OUTPUT: every other parameter takes its default."""
    out = tmp_path / "eo.tif"
    doc = run_json(qp_env, TRANSLATE, INPUT=s1_sample, MODEL_FILE=tiny_models / "sar2eo_rgb.json", OUTPUT=out)
    results = doc["results"]
    assert Path(results["OUTPUT"]) == out and out.is_file()
    assert results["DEVICE_USED"] == "cpu" and results["INPUT_UNITS"] == "dB"
    same_grid(out, s1_sample)
    with rasterio.open(out) as ds:
        assert ds.count == 3 and ds.dtypes[0] == "uint16" and ds.nodata == 0
        assert ds.descriptions == ("B4", "B3", "B2")


def test_cloud_mask_through_qgis_process(qp_env, s2_sample, tiny_models, tmp_path):
    """The GENERATED random cloud + shadow model: outputs on the input grid, results consistent with the
    class raster, one polygon feature per class covering exactly its pixels."""
    import numpy as np
    import rasterio
    from osgeo import ogr

    mask, prob, polys = tmp_path / "mask.tif", tmp_path / "prob.tif", tmp_path / "clouds.gpkg"
    doc = run_json(qp_env, CLOUD, INPUT=s2_sample, MODEL_FILE=tiny_models / "tiny_cloud_shadow.json",
                   OUTPUT=mask, OUTPUT_PROBABILITY=prob, OUTPUT_POLYGONS=polys)
    results = doc["results"]
    assert results["VALID_PIXELS"] == 120 * 120 and results["MODEL_USED"] == "tiny_cloud_shadow"
    same_grid(mask, s2_sample)
    same_grid(prob, s2_sample)
    with rasterio.open(mask) as ds:
        classes = ds.read(1)
    assert results["CLOUD_PIXELS"] == int((classes == 1).sum()) > 0
    assert results["SHADOW_PIXELS"] == int((classes == 2).sum()) > 0
    assert results["CLOUD_FRACTION"] == pytest.approx((classes == 1).mean())
    assert Path(results["OUTPUT_POLYGONS"].split("|")[0]) == polys
    ds = ogr.Open(str(polys))
    layer = ds.GetLayer(0)
    areas = {}
    for feature in layer:
        areas[feature.GetField("class")] = feature.GetGeometryRef().GetArea()
    assert areas == pytest.approx({"cloud": results["CLOUD_PIXELS"] * 100.0,
                                   "shadow": results["SHADOW_PIXELS"] * 100.0}, rel=1e-9)
    assert np.isin(classes, (0, 1, 2)).all()


def test_bundled_default_and_a_safe_product_through_qgis_process(qp_env, s2_samples, tmp_path):
    """The bundled default on a real patch (auto -> the 4-band L2A model), and a GENERATED miniature .SAFE
    folder (real sample values, tests/core/safe_fixture.py) given as INPUT on the command line."""
    from tests.core import safe_fixture

    real = next(p for p in s2_samples if "69_24" in p.name)
    doc = run_json(qp_env, CLOUD, INPUT=real, OUTPUT=tmp_path / "real.tif")
    assert doc["results"]["MODEL_USED"] == "ukis_csmask_4b_l2a" and doc["results"]["LEVEL_USED"] == "L2A"
    safe_dir = safe_fixture.make_safe(tmp_path / "products", "L2A")
    doc = run_json(qp_env, CLOUD, INPUT=safe_dir, OUTPUT=tmp_path / "safe.tif", BUFFER=30)
    results = doc["results"]
    used = (results["LEVEL_USED"], results["OFFSET_USED"], results["MODEL_USED"])
    assert used == ("L2A", -1000, "ukis_csmask_4b_l2a")
    same_grid(tmp_path / "safe.tif", safe_fixture.SAMPLE)


def test_bad_input_fails_with_the_core_message(qp_env, s2_sample, tiny_models, tmp_path):
    out = tmp_path / "eo.tif"
    res = qgis_process(qp_env, "run", TRANSLATE, "--", f"INPUT={s2_sample}",
                       f"MODEL_FILE={tiny_models / 'sar2eo_rgb.json'}", f"OUTPUT={out}")
    assert res.returncode != 0
    assert "does not look like Sentinel-1" in res.stdout + res.stderr
    assert not out.exists()


def test_python_is_the_venv(qp_env):
    """Sanity: the tests give qgis_process the same site-packages as this interpreter (torch found)."""
    assert sysconfig.get_paths()["purelib"] in qp_env["PYTHONPATH"]
    assert Path(sys.executable).exists()

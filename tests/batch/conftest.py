"""Fixtures for the folder-batch and shipped-model tests (issue 6).

``qgis_process`` runs the real ``qgis_process.bin`` with the plugin enabled from a temporary plugin
folder (a copy of ``sar2eo_cloud_plugin/`` plus the top-level ``metadata.txt``) and a throw-away QGIS
profile. Input folders hold copies of the REAL samples from ``sample_data/`` plus two GENERATED bad
files: a truncated copy of a real Sentinel-1 GeoTIFF (corrupt) and a 1-band random float "DEM"
(not Sentinel data). Model files are the GENERATED random-weight ``tiny_models`` (tests/conftest.py)
until trained weights are bundled; their outputs are checked for shape and georeferencing only.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.plugin_install import copy_plugin, qgis_process_env

REPO = Path(__file__).resolve().parents[2]
QGIS_PROCESS = shutil.which("qgis_process.bin") or "/usr/bin/qgis_process.bin"


@pytest.fixture(scope="session")
def plugin_dir(tmp_path_factory) -> Path:
    """A folder holding a copy of the plugin (what QGIS_PLUGINPATH points at)."""
    if not os.path.exists(QGIS_PROCESS):
        pytest.skip("qgis_process.bin not found (install QGIS 3.22 from apt)")
    root = tmp_path_factory.mktemp("plugins")
    copy_plugin(root)
    return root


@pytest.fixture(scope="session")
def qgis_process(plugin_dir, tmp_path_factory):
    """run(*args, json_output=True) -> (returncode, parsed JSON or text, stderr) of qgis_process.bin."""
    profile = tmp_path_factory.mktemp("qgis_profile")
    env = qgis_process_env(plugin_dir, profile, OMP_NUM_THREADS="2")

    def run(*args, json_output=True, timeout=600):
        cmd = [QGIS_PROCESS] + (["--json"] if json_output else []) + [str(a) for a in args]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=str(profile))
        out = proc.stdout
        if json_output and proc.returncode == 0:
            out = json.loads(out[out.index("{"):])
        return proc.returncode, out, proc.stderr

    rc, _out, err = run("plugins", "enable", "sar2eo_cloud_plugin", json_output=False)
    assert rc == 0, err
    return run


def make_dem(path: Path) -> Path:
    """GENERATED non-Sentinel raster: 1 band float32 'elevations', UTM 33N, 64 x 64 px."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=1, dtype="float32",
                       crs="EPSG:32633", transform=from_origin(500000, 5600000, 10, 10)) as dst:
        dst.write((rng.random((1, 64, 64)) * 800).astype("float32"))
    return path


def make_corrupt(real: Path, path: Path) -> Path:
    """GENERATED corrupt file: the first 20 kB of a real GeoTIFF (a cut-short copy)."""
    path.write_bytes(real.read_bytes()[:20000])
    return path


def _folder(tmp_path_factory, name, reals, extra_reals=()):
    folder = tmp_path_factory.mktemp(name)
    for f in list(reals) + list(extra_reals):
        shutil.copy2(f, folder / f.name)
    make_corrupt(reals[0], folder / "corrupt_truncated.tif")
    make_dem(folder / "dem_1band.tif")
    return folder


@pytest.fixture()
def s1_folder(tmp_path_factory, s1_samples, s2_sample) -> Path:
    """5 real Sentinel-1 stacks + 1 real Sentinel-2 stack (optical, wrong for translation)
    + corrupt_truncated.tif + dem_1band.tif (both generated)."""
    return _folder(tmp_path_factory, "s1_folder", s1_samples, [s2_sample])


@pytest.fixture()
def s2_folder(tmp_path_factory, s2_samples) -> Path:
    """5 real Sentinel-2 stacks (two in a subfolder) + corrupt_truncated.tif + dem_1band.tif (generated)."""
    folder = _folder(tmp_path_factory, "s2_folder", s2_samples)
    (folder / "sub").mkdir()
    for f in sorted(folder.glob("S2B_*.tif")):
        f.rename(folder / "sub" / f.name)
    return folder


@pytest.fixture(scope="session")
def dem_factory():
    """make_dem(path): writes the GENERATED 1-band non-Sentinel raster."""
    return make_dem

"""SIGTERM and kill -9 during a real ``qgis_process.bin`` run (issue 11).

SIGTERM must act like Cancel (no partial file left, an earlier output unchanged, a failing exit
status); after kill -9 the partial file that is necessarily left is removed by the next run into
that folder. The input is GENERATED: the REAL Sentinel-1 sample tiled 8 x 8 (960 x 960 px) so the
run lasts long enough to be interrupted; the model is the GENERATED random-weight ``tiny_models``.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

from tests.plugin_install import copy_plugin, qgis_process_env

from fault_helpers import sha, write_raster

pytestmark = pytest.mark.qgis_process
QGIS_PROCESS = shutil.which("qgis_process.bin") or "/usr/bin/qgis_process.bin"
ALG = "sar2eo_cloud:translate_sar_to_eo"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    if not os.path.exists(QGIS_PROCESS):
        pytest.skip("qgis_process.bin not found (install QGIS 3.22 from apt)")
    plugins = tmp_path_factory.mktemp("plugins")
    copy_plugin(plugins)
    env = qgis_process_env(plugins, tmp_path_factory.mktemp("profile"), OMP_NUM_THREADS="1")
    proc = subprocess.run([QGIS_PROCESS, "plugins", "enable", "sar2eo_cloud_plugin"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return env


@pytest.fixture(scope="module")
def big_s1(s1_sample, tmp_path_factory):
    with rasterio.open(s1_sample) as src:
        data, desc = src.read(), src.descriptions
    return write_raster(tmp_path_factory.mktemp("big") / "tiled_s1.tif", np.tile(data, (1, 8, 8)),
                        descriptions=desc)


def _start(env, src, out, tiny_models):
    args = [QGIS_PROCESS, "run", ALG, "--", f"INPUT={src}", f"MODEL_FILE={tiny_models / 'sar2eo_rgb.json'}",
            "DEVICE=1", "TILE_SIZE=16", "OVERLAP=0", "BATCH_SIZE=1", f"OUTPUT={out}"]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _partials(folder: Path):
    return sorted(p for p in folder.iterdir() if ".partial" in p.name)


def _wait_for_partial(proc, folder: Path, timeout=240):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        found = _partials(folder)
        if found:
            return found
        if proc.poll() is not None:
            pytest.fail(f"qgis_process ended before writing anything: {proc.stdout.read()}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail("no partial file appeared")


def test_sigterm_acts_like_cancel(env, big_s1, tiny_models, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = write_raster(out_dir / "eo.tif", np.full((3, 16, 16), 9, dtype="uint16"))   # an earlier output
    before = sha(out)
    proc = _start(env, big_s1, out, tiny_models)
    _wait_for_partial(proc, out_dir)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    log, _ = proc.communicate(timeout=120)
    assert proc.returncode not in (0, -signal.SIGTERM), log   # it handled the signal and failed cleanly
    assert "SIGTERM" in log
    assert _partials(out_dir) == [] and sha(out) == before


def test_partial_left_by_kill_9_is_removed_by_the_next_run(env, big_s1, s1_sample, tiny_models, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = _start(env, big_s1, out_dir / "big.tif", tiny_models)
    left = _wait_for_partial(proc, out_dir)
    proc.kill()
    proc.wait(timeout=60)
    assert _partials(out_dir) == left          # kill -9 cannot be handled: the partial stays ...
    rerun = subprocess.run([QGIS_PROCESS, "run", ALG, "--", f"INPUT={s1_sample}", "DEVICE=1",
                            f"MODEL_FILE={tiny_models / 'sar2eo_rgb.json'}", f"OUTPUT={out_dir / 'small.tif'}"],
                           env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert _partials(out_dir) == []            # ... until the next run into the folder removes it
    assert "stale partial file" in rerun.stdout

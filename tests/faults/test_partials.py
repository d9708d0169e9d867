"""Temporary ("partial") files of the engine (issue 11): their names fit NAME_MAX, and the ones a
killed run left behind are recognised and removed by the next run into the folder, never the
files of a run that is still alive. Rasters are GENERATED."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from sar2eo_cloud_plugin.core import outputs
from sar2eo_cloud_plugin.core.engine import TilingOptions, run_tiled
from tests.core.core_helpers import identity_predict, identity_prepare

from fault_helpers import leftovers, uint16_output, write_raster


def _src(tmp_path):
    return write_raster(tmp_path / "in.tif", np.full((2, 40, 40), 5, dtype="float32"))


def test_a_250_byte_output_name_gets_a_temp_name_that_fits(tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / ("é" * 60 + "x" * 126 + ".tif")    # 60 * 2 + 126 + 4 = 250 bytes
    assert len(out.name.encode()) == 250
    tmp = Path(outputs.temp_path(str(out)))
    assert len(tmp.name.encode()) <= 255 and tmp.name.startswith(".é") and tmp.name.endswith(".partial.tif")
    tmp.name.encode().decode("utf-8")                   # not cut inside a character
    run_tiled(str(_src(tmp_path)), [1, 2], identity_prepare, identity_predict, 2, [uint16_output(out, 2)],
              TilingOptions(tile_size=32, overlap=0))
    assert leftovers(out_dir) == [out.name]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_partials_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    host = outputs.host_tag()
    dead = out_dir / f".scene_eo_rgb.{_dead_pid()}-{host}-abcdef.partial.tif"
    alive = out_dir / f".other_eo_rgb.{os.getppid()}-{host}-123456.partial.tif"   # our parent is alive
    other_host = out_dir / f".remote.{_dead_pid()}-{'0000' if host != '0000' else '1111'}-654321.partial.tif"
    legacy = out_dir / ".old_scene.1234abcd.partial.tif"
    user_file = out_dir / ".my.partial.notes.tif"          # not our naming: never touched
    for p in (dead, alive, other_host, legacy, user_file):
        p.write_bytes(b"partial")
    Path(str(dead) + ".aux.xml").write_bytes(b"<x/>")
    past = time.time() - 3 * 24 * 3600
    for p in (dead, alive, other_host, legacy, user_file):
        os.utime(p, (past, past))
    run_tiled(str(_src(tmp_path)), [1, 2], identity_prepare, identity_predict, 2,
              [uint16_output(out_dir / "result.tif", 2)], TilingOptions(tile_size=32, overlap=0))
    left = leftovers(out_dir)
    assert dead.name not in left and dead.name + ".aux.xml" not in left and legacy.name not in left
    assert {alive.name, other_host.name, user_file.name, "result.tif"} <= set(left)


def test_a_partial_newer_than_the_run_is_kept(tmp_path):
    """A file written after the run started is not stale, even if its PID is not alive."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    p = out_dir / f".x.{_dead_pid()}-{outputs.host_tag()}-abcdef.partial.tif"
    p.write_bytes(b"x")
    assert not outputs.is_stale_partial(p, started=time.time() - 60)
    assert outputs.is_stale_partial(p, started=time.time() + 60)


def test_engine_names_the_folder_when_a_parent_is_a_file(tmp_path):
    from sar2eo_cloud_plugin.core.errors import OutputError

    blocker = tmp_path / "blocker"
    blocker.write_bytes(b"x")
    try:
        run_tiled(str(_src(tmp_path)), [1, 2], identity_prepare, identity_predict, 2,
                  [uint16_output(blocker / "sub" / "o.tif", 2)], TilingOptions(tile_size=32, overlap=0))
    except OutputError as exc:
        assert str(blocker) in str(exc) and "is a file, not a folder" in str(exc)
    else:
        raise AssertionError("no error")
    assert blocker.read_bytes() == b"x"


def test_engine_names_a_read_only_file_system(tmp_path, readonly_fs):
    from sar2eo_cloud_plugin.core.errors import OutputError

    try:
        run_tiled(str(_src(tmp_path)), [1, 2], identity_prepare, identity_predict, 2,
                  [uint16_output(readonly_fs / "existing.tif", 2)], TilingOptions(tile_size=32, overlap=0))
    except OutputError as exc:
        assert str(readonly_fs) in str(exc) and "read-only file system" in str(exc)
    else:
        raise AssertionError("no error")
    assert (readonly_fs / "existing.tif").read_bytes() == b"old"

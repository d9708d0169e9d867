"""Fixtures for the fault tests (issue 11): full disks, read-only mounts, killed runs, bad cards.

Disk full and read-only file systems are REAL here, not simulated: small tmpfs file systems are
mounted for the test (this needs root and mount rights, which the project's machines and CI have;
where mounting is refused the test is skipped and says so). Rasters written by these tests are
GENERATED (random values) unless a test says it uses the real samples.
"""
from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import pytest


def _mount(point: Path, options: str) -> None:
    point.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()}); this test needs a real small file system")


def _umount(point: Path) -> None:
    subprocess.run(["umount", "-l", str(point)], capture_output=True)
    shutil.rmtree(point, ignore_errors=True)


@pytest.fixture
def small_fs(tmp_path_factory):
    """mount(size_kb) -> folder on a REAL tmpfs of that size (disk-full tests); unmounted afterwards."""
    points = []

    def mount(size_kb: int) -> Path:
        point = tmp_path_factory.mktemp("tmpfs") / uuid.uuid4().hex[:6]
        _mount(point, f"size={size_kb}k")
        points.append(point)
        return point

    yield mount
    for p in points:
        _umount(p)


@pytest.fixture
def readonly_fs(tmp_path_factory):
    """A folder on a REAL read-only tmpfs holding one file, 'existing.tif' (b'old')."""
    point = tmp_path_factory.mktemp("rofs") / "ro"
    _mount(point, "size=256k")
    (point / "existing.tif").write_bytes(b"old")
    (point / "sub").mkdir()
    proc = subprocess.run(["mount", "-o", "remount,ro", str(point)], capture_output=True, text=True)
    if proc.returncode != 0:
        _umount(point)
        pytest.skip(f"cannot remount read-only ({proc.stderr.strip()})")
    yield point
    _umount(point)

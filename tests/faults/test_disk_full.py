"""Disk full while writing (issue 11): the engine must not report success with a truncated file,
must not replace an existing good output, and must say "no space left on device".

The full disk is REAL: a small tmpfs is mounted for the test (see conftest.py). The inputs are
GENERATED random rasters; random data does not compress, so the output does not fit.
"""
from __future__ import annotations

import numpy as np
import pytest

from sar2eo_cloud_plugin.core.engine import TilingOptions, run_tiled
from sar2eo_cloud_plugin.core.errors import OutputError
from tests.core.core_helpers import identity_predict, identity_prepare

from fault_helpers import leftovers, sha, uint16_output, write_raster


def test_full_disk_is_an_error_and_the_old_output_survives(small_fs, tmp_path):
    rng = np.random.default_rng(1)
    src = write_raster(tmp_path / "in.tif", rng.integers(1, 60000, (3, 512, 512)).astype("float32"))
    fs = small_fs(400)                      # 400 kB: the ~1.5 MB output cannot fit
    old = write_raster(fs / "out.tif", np.full((3, 32, 32), 7, dtype="uint16"))
    old_sha = sha(old)
    with pytest.raises(OutputError) as err:
        run_tiled(str(src), [1, 2, 3], identity_prepare, identity_predict, 3, [uint16_output(old, 3)],
                  TilingOptions(tile_size=128, overlap=0, batch_size=4))
    msg = str(err.value)
    assert "no space left on device" in msg and str(old) in msg
    assert sha(old) == old_sha              # the earlier good output is untouched
    assert leftovers(fs) == ["out.tif"]     # and no partial file is left


def test_full_disk_when_gdal_fails_only_at_close(small_fs, tmp_path):
    """Small row writes fit GDAL's block cache: the write error appears only when the dataset is
    closed and GDAL flushes, which rasterio logs but does not raise. The old code reported success."""
    rng = np.random.default_rng(2)
    src = write_raster(tmp_path / "in.tif", rng.integers(1, 60000, (3, 256, 512)).astype("float32"))
    fs = small_fs(300)
    out = fs / "new.tif"
    with pytest.raises(OutputError, match="no space left on device"):
        run_tiled(str(src), [1, 2, 3], identity_prepare, identity_predict, 3, [uint16_output(out, 3)],
                  TilingOptions(tile_size=64, overlap=0, batch_size=1))
    assert leftovers(fs) == []

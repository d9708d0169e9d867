"""Faults through the Processing algorithms in-process (issue 11): earlier outputs survive failed
and cancelled runs, bad band numbers and unwritable folders give a clear QgsProcessingException.

Inputs: the REAL Sentinel-1 samples (sample_data/s1); model: the GENERATED random-weight
``tiny_models``. The read-only file system is a REAL read-only tmpfs (conftest.py).
"""
from __future__ import annotations

import os

import numpy as np
import pytest
from qgis.core import QgsProcessingException, QgsProcessingFeedback

from sar2eo_cloud_plugin.core.errors import CancelledError, InputError

from fault_helpers import sha, write_raster

ALG = "sar2eo_cloud:translate_sar_to_eo"


@pytest.fixture
def run(provider):
    import processing

    def _run(params, feedback=None):
        return processing.run(ALG, params, feedback=feedback or QgsProcessingFeedback())

    return _run


class CancelAtFirstTile(QgsProcessingFeedback):
    def __init__(self):
        super().__init__()
        self.progressChanged.connect(lambda p: self.cancel() if p > 0 else None)


# ------------------------------------------------------------------------- earlier outputs survive
def test_core_errors_never_deletes_an_earlier_output_it_did_not_replace(tmp_path):
    from sar2eo_cloud_plugin.processing import guard

    good = write_raster(tmp_path / "good.tif", np.ones((1, 8, 8), dtype="uint8"))
    before = sha(good)
    with pytest.raises(QgsProcessingException, match="Cancelled"):
        with guard.core_errors(cleanup=[str(good)]):
            raise CancelledError("Cancelled by the user; no output was written.")
    assert good.exists() and sha(good) == before


def test_core_errors_puts_back_an_earlier_output_a_failed_run_replaced(tmp_path):
    """A multi-step algorithm that replaced its first output and then failed in a later step."""
    from sar2eo_cloud_plugin.processing import guard

    good = write_raster(tmp_path / "good.tif", np.ones((1, 8, 8), dtype="uint8"))
    before = sha(good)
    created = tmp_path / "created.tif"
    with pytest.raises(QgsProcessingException, match="polygons failed"):
        with guard.core_errors(cleanup=[str(good), str(created)]):
            tmp = tmp_path / ".new.tif"
            write_raster(tmp, np.zeros((1, 8, 8), dtype="uint8"))
            os.replace(tmp, good)
            created.write_bytes(b"half")
            raise InputError("polygons failed")
    assert sha(good) == before and not created.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.tif"]    # no backup link left


def test_cancelled_translation_keeps_the_earlier_output(run, s1_sample, tiny_models, tmp_path):
    out = write_raster(tmp_path / "eo.tif", np.full((3, 16, 16), 9, dtype="uint16"))
    before = sha(out)
    with pytest.raises(QgsProcessingException, match="Cancelled"):
        run({"INPUT": str(s1_sample), "MODEL_FILE": str(tiny_models / "sar2eo_rgb.json"), "TILE_SIZE": 32,
             "OVERLAP": 0, "OUTPUT": str(out)}, CancelAtFirstTile())
    assert sha(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eo.tif"]


# ------------------------------------------------------------------------- band numbers
@pytest.mark.parametrize("value", [0, "0", "abc", -1, "1.5"])
def test_bad_vv_band_is_an_error_not_band_1(run, s1_sample, tiny_models, tmp_path, value):
    with pytest.raises(QgsProcessingException, match="VV_BAND"):
        run({"INPUT": str(s1_sample), "VV_BAND": value, "MODEL_FILE": str(tiny_models / "sar2eo_rgb.json"),
             "OUTPUT": str(tmp_path / "eo.tif")})
    assert not (tmp_path / "eo.tif").exists()


# ------------------------------------------------------------------------- unwritable destinations
def _message(run, params):
    with pytest.raises(QgsProcessingException) as err:
        run(params)
    msg = str(err.value)
    assert "Traceback" not in msg
    return msg


def test_output_on_a_read_only_file_system(run, s1_sample, tiny_models, readonly_fs):
    msg = _message(run, {"INPUT": str(s1_sample), "MODEL_FILE": str(tiny_models / "sar2eo_rgb.json"),
                         "OUTPUT": str(readonly_fs / "existing.tif")})
    assert str(readonly_fs) in msg and "read-only file system" in msg
    assert (readonly_fs / "existing.tif").read_bytes() == b"old"
    msg = _message(run, {"INPUT": str(s1_sample), "MODEL_FILE": str(tiny_models / "sar2eo_rgb.json"),
                         "OUTPUT": str(readonly_fs / "sub" / "new_folder" / "eo.tif")})
    assert "new_folder" in msg and "read-only file system" in msg


def test_output_below_a_path_that_is_a_file(run, s1_sample, tiny_models, tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_bytes(b"x")
    msg = _message(run, {"INPUT": str(s1_sample), "MODEL_FILE": str(tiny_models / "sar2eo_rgb.json"),
                         "OUTPUT": str(blocker / "eo.tif")})
    assert str(blocker) in msg and "is a file, not a folder" in msg
    assert blocker.read_bytes() == b"x"

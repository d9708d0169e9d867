"""The atomic GeoTIFF writer (core/geotiff.py) alone: a complete file or nothing. Rasters here are GENERATED."""
from __future__ import annotations

import errno
import os

import numpy as np
import pytest
from rasterio.transform import from_origin

from sar2eo_cloud_plugin.core.errors import OutputError
from sar2eo_cloud_plugin.core.geotiff import AtomicGeoTiffWriter, OutputSpec

from core_helpers import UTM32N, read_raster, write_raster

H, W = 40, 70
TRANSFORM = from_origin(500000.0, 5600000.0, 10.0, 10.0)


def spec(path, convert=None, count=2, dtype="float32"):
    return OutputSpec(path=str(path), count=count, dtype=dtype, nodata=-1.0,
                      convert=convert or (lambda d, v: np.where(v, d, -1.0)), descriptions=("a", "b")[:count],
                      tags={"WHO": "test"})


def writer(*specs):
    return AtomicGeoTiffWriter(list(specs), W, H, UTM32N, TRANSFORM)


def data(seed=0):
    return np.random.default_rng(seed).normal(size=(2, H, W)).astype(np.float32)


def test_rows_written_finished_and_committed(tmp_path):
    d = data()
    valid = np.ones((H, W), bool)
    valid[5, 7] = False
    with writer(spec(tmp_path / "a.tif"), spec(tmp_path / "b.tif", lambda x, v: x * 2)) as w:
        w.write_rows(0, d[:, :25], valid[:25])
        w.write_rows(25, d[:, 25:], valid[25:])
        assert not (tmp_path / "a.tif").exists()            # nothing at the destination before commit
        w.finish()
        w.commit()
    a, profile, descriptions = read_raster(tmp_path / "a.tif")
    expected = d.copy()
    expected[:, 5, 7] = -1.0
    np.testing.assert_array_equal(a, expected)
    np.testing.assert_array_equal(read_raster(tmp_path / "b.tif")[0], d * 2)
    assert descriptions == ("a", "b") and profile["nodata"] == -1.0 and profile["tiled"]
    assert sorted(os.listdir(tmp_path)) == ["a.tif", "b.tif"]      # no temporary file left


def test_an_output_without_a_path_only_sees_the_rows(tmp_path):
    """An output with path None (the cloud mask's back-sampling on the network's grid) gets every row through its
    convert, and nothing is written for it; the other outputs are written as usual."""
    d = data()
    seen = []
    consumer = OutputSpec(path=None, count=2, dtype="float32", nodata=-1.0,
                          convert=lambda x, v: seen.append(x.copy()) or x)
    with writer(consumer, spec(tmp_path / "a.tif")) as w:
        w.write_rows(0, d[:, :25], np.ones((25, W), bool))
        w.write_rows(25, d[:, 25:], np.ones((H - 25, W), bool))
        w.finish()
        w.commit()
    np.testing.assert_array_equal(np.concatenate(seen, axis=1), d)
    np.testing.assert_array_equal(read_raster(tmp_path / "a.tif")[0], d)
    assert os.listdir(tmp_path) == ["a.tif"]


@pytest.mark.parametrize("chunk", [1, 13, None])
def test_column_chunks_do_not_change_the_file_and_bound_the_converter(tmp_path, chunk):
    widths = []

    def convert(x, v):
        widths.append(x.shape[2])
        return x

    d = data(1)
    with writer(spec(tmp_path / "o.tif", convert)) as w:
        w.write_rows(0, d, np.ones((H, W), bool), chunk_cols=chunk)
        w.finish()
        w.commit()
    np.testing.assert_array_equal(read_raster(tmp_path / "o.tif")[0], d)
    assert max(widths) == (chunk or W) and sum(widths) == W


def test_leaving_without_commit_removes_the_temporaries_and_keeps_the_earlier_file(tmp_path):
    earlier = write_raster(tmp_path / "o.tif", np.zeros((1, 3, 3), np.uint8))
    before = earlier.read_bytes()
    with pytest.raises(RuntimeError, match="stop"):
        with writer(spec(tmp_path / "o.tif")) as w:
            w.write_rows(0, data(), np.ones((H, W), bool))
            w.finish()                                        # finished, but not committed
            raise RuntimeError("stop")
    assert earlier.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["o.tif"]


def test_a_failed_write_names_the_output(tmp_path):
    with writer(spec(tmp_path / "o.tif")) as w:
        def full(*_a, **_k):
            raise OSError(errno.ENOSPC, "No space left on device")

        w.writers[0].write = full
        with pytest.raises(OutputError, match="Could not write '.*o.tif': no space left"):
            w.write_rows(0, data(), np.ones((H, W), bool))
    assert os.listdir(tmp_path) == []


def test_a_converter_error_is_raised_as_it_is(tmp_path):
    def bad(_x, _v):
        raise ValueError("converter")

    with pytest.raises(ValueError, match="converter"):
        with writer(spec(tmp_path / "o.tif", bad)) as w:
            w.write_rows(0, data(), np.ones((H, W), bool))
    assert os.listdir(tmp_path) == []


def test_an_incomplete_file_is_refused_at_finish(tmp_path):
    with writer(spec(tmp_path / "o.tif")) as w:
        w.write_rows(0, data(), np.ones((H, W), bool))
        tmp = w.temps[0]
        w.writers[0].close()
        with open(tmp, "r+b") as fh:        # cut the file short behind the writer's back
            fh.truncate(os.path.getsize(tmp) // 3)
        w.writers[0] = _Closed()
        with pytest.raises(OutputError, match="o.tif"):
            w.finish()
    assert os.listdir(tmp_path) == []


class _Closed:
    def close(self) -> None:
        pass


def test_commit_before_finish_is_a_programming_error(tmp_path):
    with writer(spec(tmp_path / "o.tif")) as w:
        with pytest.raises(RuntimeError, match="before finish"):
            w.commit()
    assert os.listdir(tmp_path) == []


def test_an_unusable_folder_is_named_before_anything_is_written(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(OutputError, match="file"):
        with writer(spec(tmp_path / "file" / "o.tif")):
            pass
    assert os.listdir(tmp_path) == ["file"]

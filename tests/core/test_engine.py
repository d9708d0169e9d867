"""The tiled, blended engine (run_tiled) with stand-in predictors; no torch needed.

All rasters here are GENERATED (random values written by the test) unless a test says
it uses the real samples.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from sar2eo_cloud_plugin.core import engine
from sar2eo_cloud_plugin.core.engine import OutputSpec, TilingOptions, run_tiled
from sar2eo_cloud_plugin.core.errors import CancelledError, InputError

from core_helpers import identity_predict, identity_prepare, read_raster, write_raster

OUT_NODATA = -9999.0


def float_output(path, count):
    def convert(pred, valid):
        out = pred.astype(np.float32, copy=True)
        out[:, ~valid] = OUT_NODATA
        return out

    return OutputSpec(path=str(path), count=count, dtype="float32", nodata=OUT_NODATA, convert=convert,
                      descriptions=tuple(f"band {i + 1}" for i in range(count)))


def run_identity(src, dst, count=2, **kw):
    options = kw.pop("options", TilingOptions(tile_size=64, overlap=16, batch_size=3))
    return run_tiled(str(src), list(range(1, count + 1)), identity_prepare, kw.pop("predict", identity_predict),
                     count, [float_output(dst, count)], options, **kw)


def random_raster(tmp_path, h, w, count=2, seed=0, name="in.tif", **kw):
    """GENERATED random float32 raster."""
    data = np.random.default_rng(seed).normal(size=(count, h, w)).astype(np.float32)
    return write_raster(tmp_path / name, data, **kw), data


def test_tile_starts_cover_and_clamp():
    assert engine.tile_starts(100, 128, 16) == [0]
    assert engine.tile_starts(128, 128, 16) == [0]
    assert engine.tile_starts(300, 64, 16) == [0, 48, 96, 144, 192, 236]
    assert engine.tile_starts(129, 128, 0) == [0, 1]
    for length in (65, 100, 257, 1000):
        for ov in (0, 5, 32):
            starts = engine.tile_starts(length, 64, ov)
            covered = np.zeros(length, bool)
            for s in starts:
                covered[s:s + 64] = True
            assert covered.all() and starts[-1] + 64 == length
            assert all(b - a <= 64 - ov for a, b in zip(starts, starts[1:]))


def test_edge_ramp_positive_and_one_in_the_middle():
    w = engine.edge_ramp(64, 16, True, True)
    assert (w > 0).all() and w[16:48].min() == 1.0 and w[0] == pytest.approx(0.5 / 16)
    np.testing.assert_array_equal(engine.edge_ramp(64, 16, False, False), 1.0)
    np.testing.assert_array_equal(engine.edge_ramp(64, 0, True, True), 1.0)


@pytest.mark.parametrize("shape", [(300, 517), (40, 50), (64, 64), (1, 200), (200, 1), (1, 1), (65, 129),
                                   (130, 64), (2, 300), (3, 3), (63, 65)])
def test_identity_exact_across_tile_borders(tmp_path, shape):
    src, data = random_raster(tmp_path, *shape)
    result = run_identity(src, tmp_path / "out.tif")
    out, profile, _ = read_raster(tmp_path / "out.tif")
    assert out.shape == data.shape
    np.testing.assert_allclose(out, data, rtol=0, atol=1e-5)
    assert result.valid_pixels == result.total_pixels == shape[0] * shape[1]


@pytest.mark.parametrize("overlap", [0, 1, 7, 16, 32])
@pytest.mark.parametrize("batch", [1, 4])
def test_identity_exact_for_any_overlap(tmp_path, overlap, batch):
    src, data = random_raster(tmp_path, 150, 203, seed=overlap)
    run_identity(src, tmp_path / "out.tif", options=TilingOptions(tile_size=64, overlap=overlap, batch_size=batch))
    np.testing.assert_allclose(read_raster(tmp_path / "out.tif")[0], data, rtol=0, atol=1e-5)


def test_blending_has_no_seams(tmp_path):
    """A predictor that returns a different constant for every tile: the output must ramp
    smoothly between tiles instead of jumping at tile borders."""
    src, _ = random_raster(tmp_path, 200, 200, count=1)
    counter = iter(range(10 ** 6))

    def constant_per_tile(batch):
        return np.stack([np.full(batch.shape[1:], float(next(counter) % 2) * 10.0, np.float32) for _ in batch])

    run_identity(src, tmp_path / "out.tif", count=1, predict=constant_per_tile,
                 options=TilingOptions(tile_size=64, overlap=32, batch_size=2))
    out = read_raster(tmp_path / "out.tif")[0][0]
    step = max(np.abs(np.diff(out, axis=0)).max(), np.abs(np.diff(out, axis=1)).max())
    assert out.min() >= 0 and out.max() <= 10
    assert step < 10 * 2.5 / 32  # a seam would be a step of 10


def test_georeferencing_and_nodata_kept(tmp_path):
    data = np.random.default_rng(3).normal(size=(2, 90, 130)).astype(np.float32)
    data[:, 10:30, 40:70] = -32768.0            # nodata block in both bands
    data[1, 50:55, 5:9] = -32768.0              # nodata in one band only -> the pixel is nodata
    transform = from_origin(399960.0, 4900020.0, 20.0, 20.0)
    src = write_raster(tmp_path / "in.tif", data, crs="EPSG:32633", nodata=-32768.0, transform=transform)
    result = run_identity(src, tmp_path / "out.tif")
    out, profile, desc = read_raster(tmp_path / "out.tif")
    with rasterio.open(src) as s:
        assert profile["crs"] == s.crs and profile["transform"] == s.transform
    assert profile["nodata"] == OUT_NODATA and profile["dtype"] == "float32" and desc == ("band 1", "band 2")
    assert profile["tiled"] and profile["compress"] == "deflate"
    invalid = np.any(data == -32768.0, axis=0)
    assert (out[:, invalid] == OUT_NODATA).all()
    np.testing.assert_allclose(out[:, ~invalid], data[:, ~invalid], atol=1e-5)
    assert result.valid_pixels == int((~invalid).sum())


def test_nan_nodata_is_nodata(tmp_path):
    data = np.random.default_rng(4).normal(size=(2, 70, 70)).astype(np.float32)
    data[0, :5] = np.nan
    src = write_raster(tmp_path / "in.tif", data, nodata=float("nan"))
    run_identity(src, tmp_path / "out.tif")
    out = read_raster(tmp_path / "out.tif")[0]
    assert (out[:, :5] == OUT_NODATA).all() and (out[:, 5:] != OUT_NODATA).all()


def test_nodata_only_raster_refused_without_output(tmp_path):
    src = write_raster(tmp_path / "in.tif", np.zeros((2, 80, 80), np.float32), nodata=0.0)
    with pytest.raises(InputError, match="only nodata"):
        run_identity(src, tmp_path / "out.tif")
    assert sorted(os.listdir(tmp_path)) == ["in.tif"]


def test_no_crs_refused(tmp_path):
    src, _ = random_raster(tmp_path, 40, 40, crs=None)
    with pytest.raises(InputError, match="no coordinate reference system"):
        run_identity(src, tmp_path / "out.tif")
    assert sorted(os.listdir(tmp_path)) == ["in.tif"]


def test_bad_band_and_unreadable_file_refused(tmp_path):
    src, _ = random_raster(tmp_path, 40, 40)
    with pytest.raises(InputError, match="band 3 does not exist"):
        run_identity(src, tmp_path / "out.tif", count=3)
    (tmp_path / "junk.tif").write_bytes(b"not a tiff")
    with pytest.raises(InputError, match="Cannot open raster"):
        run_identity(tmp_path / "junk.tif", tmp_path / "out.tif")


@pytest.mark.parametrize("kw, message", [({"tile_size": 8}, "too small"), ({"tile_size": 66}, "multiple of 4"),
                                         ({"overlap": 40}, "Overlap 40"), ({"overlap": -1}, "Overlap -1"),
                                         ({"batch_size": 0}, "Batch size")])
def test_bad_tiling_options(tmp_path, kw, message):
    src, _ = random_raster(tmp_path, 40, 40)
    with pytest.raises(InputError, match=message):
        run_identity(src, tmp_path / "out.tif", options=TilingOptions(**{"tile_size": 64, "overlap": 16, **kw}))


def test_cancel_mid_run_leaves_nothing(tmp_path):
    src, _ = random_raster(tmp_path, 300, 300)
    calls = {"n": 0}

    def cancel_after_some():
        calls["n"] += 1
        return calls["n"] > 5

    with pytest.raises(CancelledError, match="Cancelled"):
        run_identity(src, tmp_path / "out.tif", is_cancelled=cancel_after_some)
    assert calls["n"] > 5
    assert sorted(os.listdir(tmp_path)) == ["in.tif"]


def test_exception_in_predict_leaves_nothing(tmp_path):
    src, _ = random_raster(tmp_path, 300, 300)
    seen = {"n": 0}

    def failing(batch):
        seen["n"] += 1
        if seen["n"] == 4:
            raise RuntimeError("out of memory (simulated)")
        return batch

    with pytest.raises(RuntimeError, match="simulated"):
        run_identity(src, tmp_path / "out.tif", predict=failing)
    assert sorted(os.listdir(tmp_path)) == ["in.tif"]


def test_wrong_prediction_shape_is_an_error(tmp_path):
    src, _ = random_raster(tmp_path, 100, 100)
    with pytest.raises(RuntimeError, match="network returned shape"):
        run_identity(src, tmp_path / "out.tif", predict=lambda b: b[:, :1])
    assert sorted(os.listdir(tmp_path)) == ["in.tif"]


def test_existing_output_replaced_only_on_success(tmp_path):
    src, data = random_raster(tmp_path, 150, 150)
    dst = tmp_path / "out.tif"
    dst.write_bytes(b"previous result")
    (tmp_path / "out.tif.aux.xml").write_text("<PAMDataset/>")

    def failing(batch):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        run_identity(src, dst, predict=failing)
    assert dst.read_bytes() == b"previous result"
    with pytest.raises(CancelledError):
        run_identity(src, dst, is_cancelled=lambda: True)
    assert dst.read_bytes() == b"previous result"
    assert sorted(os.listdir(tmp_path)) == ["in.tif", "out.tif", "out.tif.aux.xml"]
    run_identity(src, dst)
    np.testing.assert_allclose(read_raster(dst)[0], data, atol=1e-5)
    assert sorted(os.listdir(tmp_path)) == ["in.tif", "out.tif"]  # the stale side file went with the old file


def test_output_folder_created(tmp_path):
    src, data = random_raster(tmp_path, 30, 30)
    run_identity(src, tmp_path / "a" / "b" / "out.tif")
    np.testing.assert_allclose(read_raster(tmp_path / "a" / "b" / "out.tif")[0], data, atol=1e-5)


def test_progress_monotonic_to_100(tmp_path):
    src, _ = random_raster(tmp_path, 250, 190)
    seen = []
    logs = []
    result = run_identity(src, tmp_path / "out.tif", progress=seen.append, log=logs.append)
    assert seen and seen[-1] == pytest.approx(100.0)
    assert all(b >= a for a, b in zip(seen, seen[1:]))
    assert all(0 <= p <= 100 for p in seen)
    assert result.tiles == len(engine.tile_starts(250, 64, 16)) * len(engine.tile_starts(190, 64, 16))
    assert any("tile" in m for m in logs)


def test_two_outputs_from_one_run(tmp_path):
    src, data = random_raster(tmp_path, 100, 120, count=1)

    def convert_int(pred, valid):
        return (pred > 0).astype(np.uint8)

    outs = [float_output(tmp_path / "p.tif", 1),
            OutputSpec(path=str(tmp_path / "m.tif"), count=1, dtype="uint8", nodata=255, convert=convert_int)]
    run_tiled(str(src), [1], identity_prepare, identity_predict, 1, outs, TilingOptions(64, 16, 2))
    np.testing.assert_allclose(read_raster(tmp_path / "p.tif")[0], data, atol=1e-5)
    np.testing.assert_array_equal(read_raster(tmp_path / "m.tif")[0], (data > 0).astype(np.uint8))


def test_real_s1_sample_identity(tmp_path, s1_sample):
    """The real Sentinel-1 sample through the engine with an identity model (tile smaller than the raster)."""
    with rasterio.open(s1_sample) as s:
        data = s.read()
    run_tiled(str(s1_sample), [1, 2], identity_prepare, identity_predict, 2, [float_output(tmp_path / "o.tif", 2)],
              TilingOptions(48, 12, 2))
    np.testing.assert_allclose(read_raster(tmp_path / "o.tif")[0], data, atol=1e-5)


def test_error_while_writing_leaves_nothing(tmp_path):
    """convert/write run on the writer thread: their errors still reach the caller and clean up."""
    src, _ = random_raster(tmp_path, 300, 100)
    calls = {"n": 0}

    def bad_convert(pred, valid):
        calls["n"] += 1
        if calls["n"] == 2:
            raise ValueError("disk full (simulated)")
        return pred

    spec = OutputSpec(path=str(tmp_path / "out.tif"), count=2, dtype="float32", nodata=None, convert=bad_convert)
    with pytest.raises(ValueError, match="simulated"):
        run_tiled(str(src), [1, 2], identity_prepare, identity_predict, 2, [spec], TilingOptions(64, 16, 2))
    assert sorted(os.listdir(tmp_path)) == ["in.tif"]


def test_callbacks_run_on_the_calling_thread(tmp_path):
    import threading

    src, _ = random_raster(tmp_path, 200, 200)
    me = threading.get_ident()
    threads = set()
    run_identity(src, tmp_path / "out.tif", progress=lambda _p: threads.add(threading.get_ident()),
                 is_cancelled=lambda: threads.add(threading.get_ident()) or False,
                 predict=lambda b: threads.add(threading.get_ident()) or b)
    assert threads == {me}


@pytest.mark.parametrize("chunk", [1, 37, 64])
def test_column_chunks_give_the_same_result(tmp_path, monkeypatch, chunk):
    """prepare/convert are called on column chunks of a tile row; results must not depend on the chunk width."""
    monkeypatch.setattr(engine, "CHUNK_COLS", chunk)
    data = np.random.default_rng(9).normal(size=(2, 150, 203)).astype(np.float32)
    data[:, 40:60, 30:90] = -1e4
    src = write_raster(tmp_path / "in.tif", data, nodata=-1e4)
    run_identity(src, tmp_path / "out.tif")
    out = read_raster(tmp_path / "out.tif")[0]
    invalid = data[0] == -1e4
    assert (out[:, invalid] == OUT_NODATA).all()
    np.testing.assert_allclose(out[:, ~invalid], data[:, ~invalid], atol=1e-5)


def test_output_over_the_input_or_twice_the_same_file_refused(tmp_path):
    src, data = random_raster(tmp_path, 50, 50, count=1)
    before = src.read_bytes()
    with pytest.raises(InputError, match="is the input raster itself"):
        run_identity(src, src, count=1)
    assert src.read_bytes() == before
    outs = [float_output(tmp_path / "o.tif", 1), float_output(tmp_path / "." / "o.tif", 1)]
    with pytest.raises(InputError, match="same file"):
        run_tiled(str(src), [1], identity_prepare, identity_predict, 1, outs, TilingOptions(64, 16, 2))
    assert sorted(os.listdir(tmp_path)) == ["in.tif"]

"""Running a network on a coarser grid than the raster's, and bringing its probabilities back.

The ukis-csmask models see 30 m pixels; a Sentinel-2 layer has 10 m pixels, nine times as many. Tiling,
preparing and blending at 10 m would spend more time and memory on the 10 m pixels than the network spends
on the 30 m ones (measured on a full 10,980² tile: 2.3 x the bare network and 3.1 GB). So, for a model with
a coarser resolution than the layer:

1. :class:`AveragedGrid` holds the layer's bands averaged onto the network's grid (GDAL's decimating read,
   area average, nodata ignored, on two threads), nine times fewer pixels than the input, filled while the
   network already runs on the rows that are done.
2. The tiled engine runs there and hands the blended class probabilities, row by row, to
3. :class:`StreamingBackSampler` (:func:`to_input_grid` does the same from a finished file), which brings
   them back to every input pixel centre, strip by strip, while the network runs on: bilinearly (nodata
   neighbours left out of the weights) for the probability raster; for the class raster (argmax, or the
   threshold for a one-channel model) only where a pixel's coarse neighbours disagree, the rest taking
   their common class (:meth:`BackSampler._classes`: the same raster, a fraction of the work). A pixel is
   nodata where the input's first model band is nodata (or 0, Sentinel-2's nodata) at the input resolution.
   Nothing is written at the network's resolution.

Memory is bounded by the averaged bands and the coarse probabilities at the network's resolution (107 and 160 MB
for a whole Sentinel-2 tile), one tile row there and one strip at the input's. No QGIS here.
"""
from __future__ import annotations

import collections
import contextlib
import itertools
import math
import os
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np

from .engine import OutputSpec
from .errors import CancelledError

GRID_WORKERS = 2       # threads averaging the input onto the network's grid (AveragedGrid)
STRIP_ROWS = 256       # input rows per strip of the final pass (4 x 256 x 10,980 floats: ~45 MB a buffer)
# decide(probabilities (C, h, w) float32) -> class index (h, w): the class raster's decision (argmax, a threshold)
Decide = Callable[[np.ndarray], np.ndarray]


class AveragedGrid:
    """The ``bands`` of ``src_path`` averaged onto a grid ``scale`` times coarser (same extent), as a source the
    engine reads (:func:`engine.run_tiled` takes it in place of a path): filled top to bottom on
    ``GRID_WORKERS`` threads from the moment it is made, while :meth:`read` waits only for the rows it asks for,
    so the network starts on the first tile row instead of after the whole layer has been decompressed.

    Input pixels equal to the band's nodata (or 0 when the band has none: Sentinel-2 stores nodata as 0 in
    every band) are left out of the averages; a network pixel with no valid input pixel is 0 (nodata).
    GDAL's decimating read (area average, fractional source windows) does the work strip by strip; it is some
    20 times faster than a warp here. Memory: the averaged bands (107 MB for a whole Sentinel-2 tile's four
    bands at 30 m) and a few strips in flight. Use it as a context manager: leaving stops the threads.
    """

    def __init__(self, src_path: str, bands: Sequence[int], scale: float, workdir: str, rows: int = 256) -> None:
        from osgeo import gdal
        import rasterio
        from rasterio.transform import from_bounds

        with rasterio.open(src_path) as src:
            width, height = src.width, src.height
            nodata = [src.nodatavals[b - 1] for b in bands]
            bounds, self.crs, dtype = src.bounds, src.crs, src.dtypes[bands[0] - 1]
        self.width, self.height = max(1, int(round(width / scale))), max(1, int(round(height / scale)))
        self.count, self.name = len(bands), f"{src_path} (averaged onto the network's grid)"
        self.transform = from_bounds(*bounds, self.width, self.height)
        declared = [v for v in nodata if v is not None]
        self.nodatavals = (declared[0] if declared else 0,) * len(bands)   # what the averages leave out
        selected = os.path.join(workdir, "bands.vrt")
        if gdal.Translate(selected, src_path, format="VRT", bandList=list(bands), noData=self.nodatavals[0]) is None:
            raise RuntimeError(f"GDAL could not select bands {list(bands)} of {src_path}: {gdal.GetLastErrorMsg()}")
        self.data = np.empty((len(bands), self.height, self.width), dtype=dtype)
        self._strips = [(r0, min(self.height, r0 + rows)) for r0 in range(0, self.height, rows)]
        self._fy, self._full_width = height / self.height, width
        self._ready = 0                    # rows [0, _ready) are filled
        self._failure: Optional[BaseException] = None
        self._stopped = False
        self._cond = threading.Condition()
        self._handles: "queue.SimpleQueue[Any]" = queue.SimpleQueue()   # GDAL handles are not shared: one a job
        self._opened = contextlib.ExitStack()
        try:
            for _ in range(GRID_WORKERS):
                self._handles.put(self._opened.enter_context(rasterio.open(selected)))
        except BaseException:
            self._opened.close()
            raise
        self._thread = threading.Thread(target=self._fill, name="sar2eo-grid", daemon=True)
        self._thread.start()

    def _average(self, r0: int, r1: int) -> None:
        from rasterio.enums import Resampling
        from rasterio.windows import Window

        src = self._handles.get()
        try:
            self.data[:, r0:r1] = src.read(window=Window(0, r0 * self._fy, self._full_width, (r1 - r0) * self._fy),
                                           out_shape=(self.count, r1 - r0, self.width),
                                           resampling=Resampling.average)
        finally:
            self._handles.put(src)

    def _fill(self) -> None:
        """Average the strips in order, at most 2 a worker ahead, and let readers know as rows complete."""
        try:
            with ThreadPoolExecutor(GRID_WORKERS, thread_name_prefix="sar2eo-grid") as pool:
                strips = iter(self._strips)
                pending = collections.deque((pool.submit(self._average, *s), s[1])
                                            for s in itertools.islice(strips, 2 * GRID_WORKERS))
                while pending and not self._stopped:
                    job, end = pending.popleft()
                    job.result()
                    pending.extend((pool.submit(self._average, *s), s[1]) for s in itertools.islice(strips, 1))
                    with self._cond:
                        self._ready = end
                        self._cond.notify_all()
                for job, _end in pending:
                    job.cancel()
        except BaseException as exc:  # noqa: BLE001 - raised to the reader by read()
            with self._cond:
                self._failure = exc
                self._cond.notify_all()

    def read(self, indexes: Sequence[int], window: Any, out_dtype: str = "float32") -> np.ndarray:
        """Bands ``indexes`` (1-based) under ``window`` (whole pixels, inside the grid), once averaged."""
        r0, c0 = int(window.row_off), int(window.col_off)
        r1, c1 = r0 + int(window.height), c0 + int(window.width)
        with self._cond:
            while self._ready < r1 and self._failure is None and not self._stopped:
                self._cond.wait()
        if self._failure is not None:
            raise self._failure
        if self._ready < r1:
            raise CancelledError("Cancelled by the user; no output was written.")
        return self.data[[i - 1 for i in indexes], r0:r1, c0:c1].astype(out_dtype)

    def close(self) -> None:
        """Stop filling (after the strips in flight) and close the handles."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join()
        self._opened.close()

    def __enter__(self) -> "AveragedGrid":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def network_grid(src_path: str, bands: Sequence[int], scale: float, workdir: str) -> Tuple[str, AveragedGrid]:
    """The :class:`AveragedGrid` of ``bands`` written to a GeoTIFF in ``workdir`` (path, grid): the very grid the
    network sees at run time, for the training data (``training.cloud_data``)."""
    import rasterio
    from rasterio.windows import Window

    out_path = os.path.join(workdir, "network_grid.tif")
    with AveragedGrid(src_path, bands, scale, workdir) as grid:
        data = grid.read(range(1, grid.count + 1), Window(0, 0, grid.width, grid.height), out_dtype=grid.data.dtype)
    with rasterio.open(out_path, "w", driver="GTiff", width=grid.width, height=grid.height, count=grid.count,
                       dtype=data.dtype, crs=grid.crs, transform=grid.transform, nodata=grid.nodatavals[0],
                       tiled=True, blockxsize=256, blockysize=256) as dst:
        dst.write(data)
    return out_path, grid


def _sample_coords(n_out: int, n_in: int) -> np.ndarray:
    """Coordinate (in coarse pixel units, align-corners=False) of each fine pixel centre."""
    return (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5


def _bilinear_taps(coords: np.ndarray, n_in: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lower index, upper index, upper weight) of bilinear sampling at ``coords`` (coarse pixel units),
    clamped to the edge pixels: what torch's ``interpolate(align_corners=False)`` and ``grid_sample(padding_mode=
    "border")`` do, so the outputs are those of the torch code this replaced."""
    c = np.clip(coords, 0.0, n_in - 1)
    lo = np.floor(c).astype(np.intp)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, (c - lo).astype(np.float32)


def sample_bilinear(p: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``p`` (C, h, w) sampled bilinearly at every (row, col) of the grid ``rows`` x ``cols`` (coarse pixel
    units, edge-clamped): (C, len(rows), len(cols)) float32. Separable: rows first, then columns, in numpy
    (no torch: the cloud mask runs without it)."""
    r0, r1, wr = _bilinear_taps(rows, p.shape[1])
    c0, c1, wc = _bilinear_taps(cols, p.shape[2])
    top, bottom = p[:, r0], p[:, r1]
    along = top + (bottom - top) * wr[None, :, None]
    left, right = along[:, :, c0], along[:, :, c1]
    return left + (right - left) * wc[None, None, :]


_NODATA_CODE, _MIXED_CODE = 254, 255   # _classes: all taps nodata; taps of different classes


def _agreed(codes: np.ndarray, axis: int) -> np.ndarray:
    """Element k along ``axis``: the code of k where k and k + 1 have the same one, else _MIXED_CODE (the last
    element: its own code)."""
    a, b = (codes[:-1], codes[1:]) if axis == 0 else (codes[:, :-1], codes[:, 1:])
    pair = np.where(a == b, a, np.uint8(_MIXED_CODE))
    last = codes[-1:] if axis == 0 else codes[:, -1:]
    return np.concatenate([pair, last], axis=axis)


def _column_plan(cols: np.ndarray, Wc: int) -> Tuple[Tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """For every input column (``cols``: its coordinate among ``Wc`` coarse columns, :func:`_sample_coords`): its
    bilinear taps (lower, upper, upper weight), and where :meth:`BackSampler._classes` finds its taps' common
    code (the coarse column k when the upper tap has no weight, else k's pair with k + 1, at ``Wc + k``)."""
    taps = _bilinear_taps(cols, Wc)
    return taps, np.where(taps[2] > 0, Wc + taps[0], taps[0])


def _bilinear_at(p: np.ndarray, r0: np.ndarray, r1: np.ndarray, wr: np.ndarray, c0: np.ndarray, c1: np.ndarray,
                 wc: np.ndarray) -> np.ndarray:
    """``p`` (C, h, w) sampled bilinearly at k points given by their taps and weights: (C, k) float32, with the
    operations of :func:`sample_bilinear` in its order (rows first), so a point gets the same bits from both."""
    left = p[:, r0, c0] + (p[:, r1, c0] - p[:, r0, c0]) * wr
    right = p[:, r0, c1] + (p[:, r1, c1] - p[:, r0, c1]) * wr
    return left + (right - left) * wc


class BackSampler:
    """Writes ``outputs`` on the grid of ``src_path`` from coarse probabilities (C, Hc, Wc), strip by strip.

    The coarse rows come from a finished GeoTIFF (:func:`to_input_grid`) or are handed
    over as the engine produces them (:meth:`feed`, :class:`StreamingBackSampler`). Each strip samples the
    probabilities bilinearly at every input pixel centre (nodata neighbours left out of the weights), converts
    them with each output's ``convert`` as the engine does and writes them to a checked temporary file; all are
    renamed only when all are complete (:meth:`commit`), and removed on error (:meth:`close`).

    With ``decide`` (the class raster's decision, :data:`Decide`) the outputs' ``convert`` get the decided class
    index (1, n, W) uint8 instead of the probabilities, and a pixel is interpolated only where its taps'
    decisions differ (:meth:`_classes`): the pass a class raster alone needs, several times cheaper."""

    def __init__(self, coarse_shape: Tuple[int, int, int], prob_nodata: float, src_path: str, valid_band: int,
                 outputs: Sequence[OutputSpec], rows: int = STRIP_ROWS, decide: Optional[Decide] = None) -> None:
        import rasterio

        from .geotiff import AtomicGeoTiffWriter

        self.channels, self.Hc, self.Wc = coarse_shape
        self.prob_nodata, self.valid_band, self.outputs = prob_nodata, valid_band, list(outputs)
        self.rows, self.decide = rows, decide
        self.src = rasterio.open(src_path)
        self.writer = AtomicGeoTiffWriter(self.outputs, self.src.width, self.src.height, self.src.crs,
                                          self.src.transform)
        try:
            self.W, self.H = self.src.width, self.src.height
            self.band_nodata = self.src.nodatavals[valid_band - 1]
            self.writer.open()
        except BaseException:
            self.close()
            raise
        self.u = _sample_coords(self.W, self.Wc)
        self.v_all = _sample_coords(self.H, self.Hc)
        self.col_taps, self.col_source = _column_plan(self.u, self.Wc)

    def strips(self) -> List[Tuple[int, int, int, int]]:
        """(first input row, rows, first coarse row, end coarse row) of every strip: the coarse rows bilinear
        sampling needs for those input rows (one more on each side)."""
        out = []
        for y0 in range(0, self.H, self.rows):
            n = min(self.rows, self.H - y0)
            v = self.v_all[y0:y0 + n]
            out.append((y0, n, max(0, int(math.floor(v[0]))), min(self.Hc, int(math.floor(v[-1])) + 2)))
        return out

    def write_strip(self, y0: int, n: int, c0: int, p: np.ndarray) -> None:
        """Sample, convert and write input rows [y0, y0 + n) from ``p``, the coarse rows from ``c0`` on."""
        from rasterio.windows import Window

        # rows relative to the rows given; clamping at their edge is clamping at the raster's, since they
        # hold every row the taps reach
        rows: np.ndarray = self.v_all[y0:y0 + n] - c0
        if self.decide is None:
            data, valid = self._probabilities(np.array(p, dtype=np.float32, copy=True), rows)
        else:
            data, valid = self._classes(np.asarray(p, dtype=np.float32), rows, self.decide)
        raw = self.src.read(self.valid_band, window=Window(0, y0, self.W, n))
        valid &= raw != 0
        if self.band_nodata is not None:
            valid &= raw != self.band_nodata
        if np.issubdtype(raw.dtype, np.floating):
            valid &= np.isfinite(raw)
        self.writer.write_rows(y0, data, valid)

    def _probabilities(self, p: np.ndarray, rows: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(probabilities (C, n, W), valid (n, W)) at the input pixels of ``rows`` (``p`` may be changed)."""
        known = p[0] != self.prob_nodata
        everywhere = bool(known.all())
        if not everywhere:
            p[:, ~known] = 0.0
            p = np.concatenate([p, known[None].astype(np.float32)])
        fine = sample_bilinear(p, rows, self.u)
        if everywhere:
            return fine, np.ones(fine.shape[1:], dtype=bool)
        weight = fine[-1]          # nodata neighbours are left out of the bilinear weights
        return fine[:-1] / np.maximum(weight, np.float32(1e-6)), weight > 1e-6

    def _classes(self, p: np.ndarray, rows: np.ndarray, decide: Decide) -> Tuple[np.ndarray, np.ndarray]:
        """(class index (1, n, W) uint8, valid (n, W)): ``decide`` of the probabilities ``_probabilities`` gives,
        computed only where the taps disagree.

        A pixel's bilinear probabilities are a convex combination of those of the (up to) 2 x 2 coarse pixels
        it lies between; where ``decide`` gives the same class at all of them, it gives that class for any
        convex combination (argmax, a threshold), so the pixel takes it without being interpolated. Only
        pixels next to a class edge or nodata are interpolated, exactly as ``_probabilities`` does (same
        operations in the same order; a decision can differ only where two classes tie to the last bit).
        Most of a scene is inside a class: this is what keeps the 10 m pass small beside the network."""
        known = p[0] != self.prob_nodata
        codes = np.where(known, decide(p), _NODATA_CODE).astype(np.uint8)   # nodata: a "class" of its own
        r0, r1, wr = _bilinear_taps(rows, p.shape[1])
        # the taps' common code for every input row (between coarse rows k and k + 1: _agreed row k), then
        # for every input pixel (between coarse columns k and k + 1: _agreed column k); one gather each
        along = np.concatenate([codes, _agreed(codes, axis=0)])[np.where(wr > 0, len(codes) + r0, r0)]
        decided = np.take(np.concatenate([along, _agreed(along, axis=1)], axis=1), self.col_source, axis=1)
        valid = decided < _NODATA_CODE
        index = np.where(valid, decided, 0).astype(np.uint8)
        mixed = np.flatnonzero(decided == _MIXED_CODE)
        if mixed.size:
            ii, jj = np.divmod(mixed, self.W)
            c0, c1, wc = self.col_taps
            q = np.concatenate([np.where(known, p, np.float32(0)), known[None].astype(np.float32)])
            fine = _bilinear_at(q, r0[ii], r1[ii], wr[ii], c0[jj], c1[jj], wc[jj])
            weight = fine[-1]
            prob = fine[:-1] / np.maximum(weight, np.float32(1e-6))
            index.flat[mixed] = decide(prob[:, None, :])[0]
            valid.flat[mixed] = weight > 1e-6
        return index[None], valid

    def commit(self) -> None:
        self.writer.finish()
        self.writer.commit()

    def close(self) -> None:
        """Close everything; outputs not committed are removed."""
        self.writer.close()
        self.src.close()


def to_input_grid(prob_path: str, prob_nodata: float, src_path: str, valid_band: int,
                  outputs: Sequence[OutputSpec], progress: Optional[Callable[[float], None]] = None,
                  is_cancelled: Optional[Callable[[], bool]] = None, rows: int = STRIP_ROWS) -> None:
    """Write ``outputs`` on the grid of ``src_path`` from the coarse probabilities in ``prob_path``
    (nodata ``prob_nodata``), converting the resampled probabilities with each output's ``convert``,
    exactly as the engine does, through the same :class:`~.geotiff.AtomicGeoTiffWriter`: each output goes to
    a checked temporary file, all are renamed only when all are complete, and a failed write is an
    :class:`~.errors.OutputError` naming the file."""
    import rasterio
    from rasterio.windows import Window

    progress = progress or (lambda _f: None)
    with rasterio.open(prob_path) as coarse:
        sampler = BackSampler((coarse.count, coarse.height, coarse.width), prob_nodata, src_path, valid_band,
                              outputs, rows)
        try:
            for y0, n, c0, c1 in sampler.strips():
                if is_cancelled and is_cancelled():
                    raise CancelledError("Cancelled by the user; no output was written.")
                sampler.write_strip(y0, n, c0, coarse.read(window=Window(0, c0, sampler.Wc, c1 - c0),
                                                           out_dtype="float32"))
                progress(100.0 * (y0 + n) / sampler.H)
            sampler.commit()
        finally:
            sampler.close()


class StreamingBackSampler(BackSampler):
    """A :class:`BackSampler` fed with the coarse probabilities while the engine is still running the network.

    The engine hands finished rows to each output's ``convert`` on its writer thread, top to bottom and, within
    a band of rows, in column chunks left to right (engine.run_tiled); :meth:`feed` is such a ``convert``: it
    keeps the chunk in a coarse buffer and, once a band of rows is complete, lets a thread of its own write the
    input-grid strips whose coarse rows are all there. So the pass back to the input's resolution runs beside
    the network instead of after it (it used to be most of the cloud mask's time outside the network).
    Memory: the coarse probabilities (C x Hc x Wc float32, 160 MB for a whole Sentinel-2 tile at 30 m)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.buffer = np.empty((self.channels, self.Hc, self.Wc), dtype=np.float32)
        self.ready_rows = 0          # coarse rows [0, ready_rows) are complete
        self.col = 0                 # where the next chunk of the current band of rows starts
        self.failure: Optional[BaseException] = None
        self.stopped = False
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._work, name="sar2eo-backsample", daemon=True)
        self.thread.start()

    def feed(self, chunk: np.ndarray, valid: Optional[np.ndarray] = None) -> None:
        """Keep one chunk (C, n, w) of coarse rows [ready_rows, ready_rows + n), nodata where ``valid`` (n, w) is
        False; raises the worker's error. (The engine's blended rows go straight into the buffer: no copy.)"""
        if self.failure is not None:
            raise self.failure
        c, n, w = chunk.shape
        r0 = self.ready_rows
        if c != self.channels or r0 + n > self.Hc or self.col + w > self.Wc:
            raise RuntimeError(f"back-sampling got a chunk of shape {chunk.shape} at row {r0}, column {self.col} "
                               f"of a {self.channels} x {self.Hc} x {self.Wc} grid: the engine's order changed")
        kept = self.buffer[:, r0:r0 + n, self.col:self.col + w]
        kept[...] = chunk
        if valid is not None:
            kept[:, ~valid] = self.prob_nodata
        self.col += w
        if self.col == self.Wc:
            self.col = 0
            with self.cond:
                self.ready_rows = r0 + n
                self.cond.notify_all()

    def _work(self) -> None:
        try:
            for y0, n, c0, c1 in self.strips():
                with self.cond:
                    while self.ready_rows < c1 and not self.stopped:
                        self.cond.wait()
                    if self.stopped:
                        return
                self.write_strip(y0, n, c0, self.buffer[:, c0:c1])
        except BaseException as exc:  # noqa: BLE001 - handed to the engine's thread by feed() / finish()
            self.failure = exc

    def finish(self) -> None:
        """After the engine: wait for the last strips, check, rename the outputs into place."""
        self.thread.join()
        if self.failure is not None:
            raise self.failure
        if self.ready_rows != self.Hc:
            raise RuntimeError(f"back-sampling got {self.ready_rows} of {self.Hc} coarse rows")
        self.commit()

    def close(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()
        if self.thread.is_alive():
            self.thread.join()
        super().close()

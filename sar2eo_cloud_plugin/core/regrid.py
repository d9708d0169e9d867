"""Running a network on a coarser grid than the raster's, and bringing its probabilities back.

The ukis-csmask models see 30 m pixels; a Sentinel-2 layer has 10 m pixels, nine times as many. Tiling,
preparing and blending at 10 m would spend more time and memory on the 10 m pixels than the network spends
on the 30 m ones (measured on a full 10,980² tile: 2.3 x the bare network and 3.1 GB). So, for a model with
a coarser resolution than the layer:

1. :func:`network_grid` writes the layer's bands averaged onto the network's grid (GDAL's decimating read,
   area average, nodata ignored) to a temporary GeoTIFF before the network starts: nine times smaller than
   the input, and nothing else competes with the network for the cores while it runs.
2. The tiled engine runs there and writes the blended class probabilities at the network's resolution.
3. :class:`StreamingBackSampler` (fed the finished rows while the network runs; :func:`to_input_grid` does the
   same from a finished file) samples those probabilities bilinearly at every input pixel centre (nodata
   neighbours left out of the weights), strip by strip, and writes the class raster (argmax, or the
   threshold for a one-channel model) and optionally the probabilities on the input's own grid. A pixel is
   nodata where the input's first model band is nodata (or 0, Sentinel-2's nodata) at the input resolution.

Memory is bounded by one tile row at the network's resolution, the coarse probabilities (160 MB for a whole
Sentinel-2 tile) and one strip at the input's. No QGIS here.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from .engine import OutputSpec
from .errors import CancelledError

STRIP_ROWS = 256       # input rows per strip of the final pass (4 x 256 x 10,980 floats: ~45 MB a buffer)


@dataclass
class Grid:
    width: int
    height: int


def network_grid(src_path: str, bands: Sequence[int], scale: float, workdir: str,
                 is_cancelled: Optional[Callable[[], bool]] = None, rows: int = 256) -> Tuple[str, Grid]:
    """A GeoTIFF of ``bands`` of ``src_path`` averaged onto a grid ``scale`` times coarser (same extent).

    Input pixels equal to the band's nodata (or 0 when the band has none: Sentinel-2 stores nodata as 0 in
    every band) are left out of the averages; a network pixel with no valid input pixel is 0 (nodata).
    GDAL's decimating read (area average, fractional source windows) does the work strip by strip, so
    memory stays at one strip; it is some 20 times faster than a warp here.
    """
    from osgeo import gdal
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.windows import Window

    with rasterio.open(src_path) as src:
        width, height = src.width, src.height
        nodata = [src.nodatavals[b - 1] for b in bands]
        bounds, crs = src.bounds, src.crs
    grid = Grid(max(1, int(round(width / scale))), max(1, int(round(height / scale))))
    selected = os.path.join(workdir, "bands.vrt")
    declared = [v for v in nodata if v is not None]
    no_data = declared[0] if declared else 0     # what the averages must leave out
    if gdal.Translate(selected, src_path, format="VRT", bandList=list(bands), noData=no_data) is None:
        raise RuntimeError(f"GDAL could not select bands {list(bands)} of {src_path}: {gdal.GetLastErrorMsg()}")
    out_path = os.path.join(workdir, "network_grid.tif")
    fy = height / grid.height
    from rasterio.transform import from_bounds

    with rasterio.open(selected) as src:
        profile = {"driver": "GTiff", "width": grid.width, "height": grid.height, "count": len(bands),
                   "dtype": src.dtypes[0], "crs": crs, "nodata": no_data, "tiled": True, "blockxsize": 256,
                   "blockysize": 256, "transform": from_bounds(*bounds, grid.width, grid.height)}
        with rasterio.open(out_path, "w", **profile) as dst:
            for r0 in range(0, grid.height, rows):
                if is_cancelled and is_cancelled():
                    raise CancelledError("Cancelled by the user; no output was written.")
                r1 = min(grid.height, r0 + rows)
                block = src.read(window=Window(0, r0 * fy, width, (r1 - r0) * fy),
                                 out_shape=(len(bands), r1 - r0, grid.width), resampling=Resampling.average)
                dst.write(block, window=Window(0, r0, grid.width, r1 - r0))
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


class BackSampler:
    """Writes ``outputs`` on the grid of ``src_path`` from coarse probabilities (C, Hc, Wc), strip by strip.

    The coarse rows come from a finished GeoTIFF (:func:`to_input_grid`) or are handed
    over as the engine produces them (:meth:`feed`, :class:`StreamingBackSampler`). Each strip samples the
    probabilities bilinearly at every input pixel centre (nodata neighbours left out of the weights), converts
    them with each output's ``convert`` as the engine does and writes them to a checked temporary file; all are
    renamed only when all are complete (:meth:`commit`), and removed on error (:meth:`close`)."""

    def __init__(self, coarse_shape: Tuple[int, int, int], prob_nodata: float, src_path: str, valid_band: int,
                 outputs: Sequence[OutputSpec], rows: int = STRIP_ROWS) -> None:
        import rasterio

        from .geotiff import AtomicGeoTiffWriter

        self.channels, self.Hc, self.Wc = coarse_shape
        self.prob_nodata, self.valid_band, self.outputs = prob_nodata, valid_band, list(outputs)
        self.rows = rows
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

        p = np.array(p, dtype=np.float32, copy=True)
        known = p[0] != self.prob_nodata
        everywhere = bool(known.all())
        if not everywhere:
            p[:, ~known] = 0.0
            p = np.concatenate([p, known[None].astype(np.float32)])
        # rows relative to the rows given; clamping at their edge is clamping at the raster's, since they
        # hold every row the taps reach
        fine = sample_bilinear(p, self.v_all[y0:y0 + n] - c0, self.u)
        if everywhere:
            prob = fine
            valid = np.ones((n, self.W), dtype=bool)
        else:   # nodata neighbours are left out of the bilinear weights
            weight = fine[-1]
            prob = fine[:-1] / np.maximum(weight, np.float32(1e-6))
            valid = weight > 1e-6
        window = Window(0, y0, self.W, n)
        raw = self.src.read(self.valid_band, window=window)
        valid &= raw != 0
        if self.band_nodata is not None:
            valid &= raw != self.band_nodata
        if np.issubdtype(raw.dtype, np.floating):
            valid &= np.isfinite(raw)
        self.writer.write_rows(y0, prob, valid)

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
        import threading

        super().__init__(*args, **kwargs)
        self.buffer = np.empty((self.channels, self.Hc, self.Wc), dtype=np.float32)
        self.ready_rows = 0          # coarse rows [0, ready_rows) are complete
        self.col = 0                 # where the next chunk of the current band of rows starts
        self.failure: Optional[BaseException] = None
        self.stopped = False
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._work, name="sar2eo-backsample", daemon=True)
        self.thread.start()

    def feed(self, chunk: np.ndarray) -> None:
        """Keep one chunk (C, n, w) of coarse rows [ready_rows, ready_rows + n); raises the worker's error."""
        if self.failure is not None:
            raise self.failure
        c, n, w = chunk.shape
        r0 = self.ready_rows
        if c != self.channels or r0 + n > self.Hc or self.col + w > self.Wc:
            raise RuntimeError(f"back-sampling got a chunk of shape {chunk.shape} at row {r0}, column {self.col} "
                               f"of a {self.channels} x {self.Hc} x {self.Wc} grid: the engine's order changed")
        self.buffer[:, r0:r0 + n, self.col:self.col + w] = chunk
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

"""Running a network on a coarser grid than the raster's, and bringing its probabilities back.

The ukis-csmask models see 30 m pixels; a Sentinel-2 layer has 10 m pixels, nine times as many. Tiling,
preparing and blending at 10 m would spend more time and memory on the 10 m pixels than the network spends
on the 30 m ones (measured on a full 10,980² tile: 2.3 x the bare network and 3.1 GB). So, for a model with
a coarser resolution than the layer:

1. :func:`network_grid` writes the layer's bands averaged onto the network's grid (GDAL's decimating read,
   area average, nodata ignored) to a temporary GeoTIFF before the network starts: nine times smaller than
   the input, and nothing else competes with the network for the cores while it runs.
2. The tiled engine runs there and writes the blended class probabilities at the network's resolution.
3. :func:`to_input_grid` samples those probabilities bilinearly at every input pixel centre (nodata
   neighbours left out of the weights), strip by strip, and writes the class raster (argmax, or the
   threshold for a one-channel model) and optionally the probabilities on the input's own grid. A pixel is
   nodata where the input's first model band is nodata (or 0, Sentinel-2's nodata) at the input resolution.

Memory is bounded by one tile row at the network's resolution plus one strip at the input's. No QGIS here.
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


def to_input_grid(prob_path: str, prob_nodata: float, src_path: str, valid_band: int,
                  outputs: Sequence[OutputSpec], progress: Optional[Callable[[float], None]] = None,
                  is_cancelled: Optional[Callable[[], bool]] = None, rows: int = STRIP_ROWS) -> None:
    """Write ``outputs`` on the grid of ``src_path`` from the coarse probabilities in ``prob_path``
    (nodata ``prob_nodata``), converting the resampled probabilities with each output's ``convert``,
    exactly as the engine does. Each output goes to a checked temporary file; all are renamed only when
    all are complete."""
    import rasterio
    from rasterio.windows import Window

    from . import outputs as safe
    from .engine import commit_output, finish_output, open_output

    progress = progress or (lambda _f: None)
    temps: List[str] = []
    writers = []
    try:
        with rasterio.open(prob_path) as coarse, rasterio.open(src_path) as src:
            W, H, Wc, Hc = src.width, src.height, coarse.width, coarse.height
            band_nodata = src.nodatavals[valid_band - 1]
            for out in outputs:
                tmp = safe.temp_path(out.path)
                temps.append(tmp)
                writers.append(open_output(out, tmp, W, H, src.crs, src.transform))
            u = _sample_coords(W, Wc)
            v_all = _sample_coords(H, Hc)
            for y0 in range(0, H, rows):
                if is_cancelled and is_cancelled():
                    raise CancelledError("Cancelled by the user; no output was written.")
                n = min(rows, H - y0)
                v = v_all[y0:y0 + n]
                # the coarse rows bilinear sampling needs for these fine rows (one more on each side)
                c0, c1 = max(0, int(math.floor(v[0]))), min(Hc, int(math.floor(v[-1])) + 2)
                p = coarse.read(window=Window(0, c0, Wc, c1 - c0), out_dtype="float32")
                known = p[0] != prob_nodata
                everywhere = bool(known.all())
                if not everywhere:
                    p[:, ~known] = 0.0
                    p = np.concatenate([p, known[None].astype(np.float32)])
                # rows relative to the window read; clamping at the window's edge is clamping at the raster's,
                # since the window holds every row the taps reach
                fine = sample_bilinear(p, v - c0, u)
                if everywhere:
                    prob = fine
                    valid = np.ones((n, W), dtype=bool)
                else:   # nodata neighbours are left out of the bilinear weights
                    weight = fine[-1]
                    prob = fine[:-1] / np.maximum(weight, np.float32(1e-6))
                    valid = weight > 1e-6
                raw = src.read(valid_band, window=Window(0, y0, W, n))
                valid &= raw != 0
                if band_nodata is not None:
                    valid &= raw != band_nodata
                if np.issubdtype(raw.dtype, np.floating):
                    valid &= np.isfinite(raw)
                window = Window(0, y0, W, n)
                for out, dst in zip(outputs, writers):
                    dst.write(np.asarray(out.convert(prob, valid)).astype(out.dtype, copy=False), window=window)
                progress(100.0 * (y0 + n) / H)
        for out, dst, tmp in zip(outputs, writers, temps):
            finish_output(out.path, dst, tmp, W, H, out.count, out.dtype)
        writers.clear()
        for out, tmp in zip(outputs, temps):
            commit_output(tmp, out.path)
        temps.clear()
    finally:
        for dst in writers:
            try:
                dst.close()
            except Exception:  # noqa: BLE001 - closing a failed writer; the first error is the one that counts
                pass
        safe.remove_quietly(temps)

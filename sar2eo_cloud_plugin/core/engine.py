"""Tiled, blended, memory-bounded raster inference (no QGIS, no torch needed).

:func:`run_tiled` is a short orchestrator of three parts, each tested alone: the tile plan
(:mod:`.tiling`), the row blender (:mod:`.blending`) and the atomic GeoTIFF writer (:mod:`.geotiff`).
How a scene goes through a network:

1. The raster is cut into square tiles of ``tile_size`` pixels that overlap by
   ``overlap`` pixels; the last row/column of tiles is moved back inside the
   raster, and a raster smaller than a tile is padded by reflection.
2. Tiles are read window by window with rasterio (never the whole scene; one
   window per batch of tiles), prepared by a task-specific ``prepare`` function
   and sent to ``predict`` in batches.
3. Predictions are accumulated with smooth weights that ramp from the tile edge
   (weight > 0 everywhere, 1 in the middle and on the raster's own border), then
   divided by the summed weights: overlapping tiles blend without seams, and an
   identity network gives back its input exactly.
4. Only the accumulators of one row of tiles are held: once a tile row is
   done, the output rows no later tile can touch are converted and written, so
   memory does not grow with the raster's height, and with its width only
   through those accumulators (out_channels x tile height x width floats).
   Reading and preparing the next batch, and converting/writing finished rows,
   happen on two helper threads while the network runs.
5. Outputs are written to hidden temporary files beside the destination
   (:func:`outputs.temp_path`: PID in the name, shortened to fit NAME_MAX) and
   renamed only when the whole run succeeded and each file was verified
   complete: GDAL's errors at close (where a full disk shows up) are checked,
   the file is reopened and its last block row read, then fsync'ed. On error or
   cancel they are removed, so no half-written output is ever left behind and
   an existing file is replaced by a complete new one or not at all. Stale
   partial files of killed runs in the output folders are removed first.
"""
from __future__ import annotations

import contextlib
import math
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Protocol, Sequence, Tuple

import numpy as np

from .blending import RowBlender
from .errors import CancelledError, InputError
from .geotiff import AtomicGeoTiffWriter, ConvertFn, OutputSpec
from .tiling import Batch, TilePlan, edge_ramp, pad_to, tile_starts

__all__ = ["CHUNK_COLS", "ConvertFn", "OutputSpec", "PredictFn", "PrepareFn", "RasterSource", "RunResult",
           "TilingOptions", "edge_ramp", "run_tiled", "tile_starts"]

# Both ``prepare`` and ``convert`` must work pixel by pixel: the engine calls ``prepare`` on the
# window under one batch of tiles and ``convert`` on column chunks (CHUNK_COLS wide) of finished
# rows, so that their temporaries do not grow with the raster's width.
CHUNK_COLS = 2048
# prepare(raw (C_in, h, w) float32 with NaN where the input is nodata) -> (x (C, h, w) float32, valid (h, w) bool)
PrepareFn = Callable[[np.ndarray], Tuple[np.ndarray, np.ndarray]]
# predict(batch (N, C, T, T) float32) -> (N, C_out, T, T) float32
PredictFn = Callable[[np.ndarray], np.ndarray]


@dataclass
class TilingOptions:
    tile_size: int = 256
    overlap: int = 32
    batch_size: int = 4
    multiple: int = 4           # tile size the network needs to be a multiple of

    def check(self) -> None:
        if self.tile_size < 16:
            raise InputError(f"Tile size {self.tile_size} is too small (at least 16 pixels).")
        if self.tile_size % self.multiple:
            raise InputError(f"Tile size {self.tile_size} must be a multiple of {self.multiple} for this network.")
        if not 0 <= self.overlap < self.tile_size // 2 + 1:
            raise InputError(f"Overlap {self.overlap} must be between 0 and half the tile size "
                             f"({self.tile_size // 2}).")
        if self.batch_size < 1:
            raise InputError("Batch size must be at least 1.")


@dataclass
class RunResult:
    valid_pixels: int
    total_pixels: int
    tiles: int
    stats: Dict[str, float] = field(default_factory=dict)


class _Helper:
    """One helper thread with at most one job in flight (the read ahead, the write behind). Leaving it
    cancels a job not yet started and waits for a running one, so nothing it uses is closed under it."""

    def __init__(self, name: str) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._pending: Optional[Future] = None

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        self._pending = self._pool.submit(fn, *args)

    def result(self) -> Any:
        """The job's result (None without a job); its error is raised here, on the calling thread."""
        pending, self._pending = self._pending, None
        return pending.result() if pending is not None else None

    def __enter__(self) -> "_Helper":
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._pending is not None:
            self._pending.cancel()
        self._pool.shutdown(wait=True)


def _check_paths(src_path: Optional[str], outputs: Sequence[OutputSpec]) -> None:
    out_real = [os.path.realpath(spec.path) for spec in outputs if spec.path]
    if src_path is not None and os.path.realpath(src_path) in out_real:
        raise InputError(f"The output file '{src_path}' is the input raster itself; choose another output file.")
    if len(set(out_real)) < len(out_real):
        raise InputError(f"Two outputs of this run point to the same file "
                         f"({', '.join(str(s.path) for s in outputs if s.path)}).")


def _open_source(src_path: str, bands: Sequence[int]) -> Any:
    """The source dataset, checked: the bands exist and it has a CRS (InputError naming the file)."""
    import rasterio

    try:
        src = rasterio.open(src_path)
    except Exception as exc:  # rasterio raises several types; all mean "cannot read"
        raise InputError(f"Cannot open raster '{src_path}': {exc}") from exc
    try:
        for b in bands:
            if not 1 <= b <= src.count:
                raise InputError(f"Raster '{src_path}' has {src.count} band(s); band {b} does not exist.")
        if src.crs is None:
            raise InputError(f"Raster '{src_path}' has no coordinate reference system; assign one first "
                             "(Raster > Projections > Assign Projection) so the result can be georeferenced.")
    except BaseException:
        src.close()
        raise
    return src


def _batch_reader(rsrc: Any, bands: Sequence[int], prepare: PrepareFn,
                  plan: TilePlan) -> Callable[[Batch], Tuple[int, np.ndarray, np.ndarray]]:
    """read(batch) -> (first column, prepared x, valid) of the window under one batch of tiles, with the
    source's nodata as NaN. ``rsrc`` is the reader thread's own handle (GDAL handles are not shared)."""
    from rasterio.windows import Window

    nodatas = [rsrc.nodatavals[b - 1] for b in bands]
    masked = [(i, np.float32(nd)) for i, nd in enumerate(nodatas)
              if nd is not None and not (isinstance(nd, float) and math.isnan(nd))]

    def read(batch: Batch) -> Tuple[int, np.ndarray, np.ndarray]:
        c0, c1 = batch.x0s[0], batch.x0s[-1] + plan.tile_width
        raw = rsrc.read(list(bands), window=Window(c0, batch.y0, c1 - c0, plan.tile_height), out_dtype="float32")
        for i, nd in masked:
            raw[i][raw[i] == nd] = np.nan
        x, valid = prepare(raw)
        valid = valid & np.isfinite(raw).all(axis=0)
        return c0, np.ascontiguousarray(x, dtype=np.float32), valid

    return read


def _predicted(predict: PredictFn, tiles: np.ndarray, out_channels: int, plan: TilePlan) -> np.ndarray:
    pred = np.asarray(predict(tiles), dtype=np.float32)
    if (pred.shape[:2] != (len(tiles), out_channels) or pred.shape[2] < plan.tile_height
            or pred.shape[3] < plan.tile_width):
        raise RuntimeError(f"network returned shape {pred.shape}, expected "
                           f"({len(tiles)}, {out_channels}, {plan.tile}, {plan.tile})")
    return pred


class RasterSource(Protocol):
    """What the engine reads besides a raster file: a source in memory whose ``read`` may be called from the
    reader thread (e.g. :class:`.regrid.AveragedGrid`)."""

    name: str
    width: int
    height: int
    crs: Any
    transform: Any
    nodatavals: Tuple[Optional[float], ...]

    def read(self, indexes: Sequence[int], window: Any, out_dtype: str = ...) -> np.ndarray: ...


def run_tiled(
    src_path: "str | RasterSource",
    bands: Sequence[int],
    prepare: PrepareFn,
    predict: PredictFn,
    out_channels: int,
    outputs: Sequence[OutputSpec],
    options: TilingOptions = TilingOptions(),
    progress: Optional[Callable[[float], None]] = None,
    is_cancelled: Optional[Callable[[], bool]] = None,
    log: Optional[Callable[[str], None]] = None,
) -> RunResult:
    """Run ``predict`` over the raster at ``src_path`` and write ``outputs``.

    ``src_path``: a raster file, or a :class:`RasterSource` in memory.
    ``bands`` are 1-based band numbers read from the source, in the order
    ``prepare`` expects. Raises :class:`CancelledError` if ``is_cancelled``
    turns true, :class:`InputError` for unusable input; in both cases (and on any
    other error) no output file is left behind, and a file already at an output
    path is replaced only when the whole run succeeded.

    ``predict`` runs on the calling thread; reading + ``prepare`` of the next
    batch's window and ``convert`` + writing of finished rows run on two helper
    threads, so the network is not kept waiting for I/O (GDAL and numpy release
    the GIL).
    ``progress``, ``is_cancelled`` and ``log`` are only called from the calling thread.
    """
    import rasterio

    options.check()
    progress = progress or (lambda _f: None)
    is_cancelled = is_cancelled or (lambda: False)
    log = log or (lambda _m: None)
    bands = list(bands)
    is_file = isinstance(src_path, (str, os.PathLike))
    _check_paths(str(src_path) if is_file else None, outputs)
    with contextlib.ExitStack() as stack:   # closed in reverse: helpers stop before what they use is closed
        if is_file:     # the reader thread gets a handle of its own
            src = stack.enter_context(_open_source(str(src_path), bands))
            reader_src = stack.enter_context(rasterio.open(src_path))
        else:
            src = reader_src = src_path
        plan = TilePlan(src.height, src.width, options.tile_size, options.overlap, options.batch_size)
        log(plan.describe())
        writer = stack.enter_context(AtomicGeoTiffWriter(outputs, src.width, src.height, src.crs, src.transform, log))
        read = _batch_reader(reader_src, bands, prepare, plan)
        reads, writes = stack.enter_context(_Helper("sar2eo-read")), stack.enter_context(_Helper("sar2eo-write"))
        blender = RowBlender(out_channels, plan.tile_height, plan.width)
        done_tiles = valid_total = 0
        reads.submit(read, plan.batches[0])
        for i, batch in enumerate(plan.batches):
            if is_cancelled():
                raise CancelledError("Cancelled by the user; no output was written.")
            c0, x, valid_in = reads.result()
            if i + 1 < len(plan.batches):
                reads.submit(read, plan.batches[i + 1])
            blender.add_valid(c0, valid_in)
            tiles = np.stack([pad_to(x[:, :, x0 - c0:x0 - c0 + plan.tile_width], plan.tile, plan.tile)
                              for x0 in batch.x0s])
            del x, valid_in
            pred = _predicted(predict, tiles, out_channels, plan)
            for k, x0 in enumerate(batch.x0s):
                blender.add(pred[k], x0, plan.weight(batch.row, batch.first + k))
            done_tiles += len(batch.x0s)
            progress(100.0 * done_tiles / plan.n_tiles)
            if plan.ends_row(i):   # rows above the next tile row are final: blend, write behind, carry the rest
                blended, valid = blender.flush(plan.final_rows(batch.row))
                valid_total += int(np.count_nonzero(valid))
                writes.result()    # at most one write in flight; re-raises its error here
                writes.submit(writer.write_rows, batch.y0, blended, valid, CHUNK_COLS)
        writes.result()
        if valid_total == 0:
            raise InputError(f"Raster '{src.name}' holds only nodata in band(s) {bands}; nothing to process.")
        writer.finish()
        writer.commit()
        result = RunResult(valid_pixels=valid_total, total_pixels=plan.height * plan.width, tiles=plan.n_tiles)
    return result

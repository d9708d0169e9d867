"""Tiled, blended, memory-bounded raster inference (no QGIS, no torch needed).

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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import outputs as safe
from .errors import CancelledError, InputError, OutputError

# Both ``prepare`` and ``convert`` must work pixel by pixel: the engine calls ``prepare`` on the
# window under one batch of tiles and ``convert`` on column chunks (CHUNK_COLS wide) of finished
# rows, so that their temporaries do not grow with the raster's width.
CHUNK_COLS = 2048
# prepare(raw (C_in, h, w) float32 with NaN where the input is nodata) -> (x (C, h, w) float32, valid (h, w) bool)
PrepareFn = Callable[[np.ndarray], Tuple[np.ndarray, np.ndarray]]
# predict(batch (N, C, T, T) float32) -> (N, C_out, T, T) float32
PredictFn = Callable[[np.ndarray], np.ndarray]
# convert(blended prediction (C_out, h, w) float32, valid (h, w) bool) -> array written to an output
ConvertFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class OutputSpec:
    """One raster the run writes, converted from the blended prediction."""

    path: str
    count: int
    dtype: str
    nodata: Optional[float]
    convert: ConvertFn
    descriptions: Sequence[str] = ()
    colorinterp: Optional[Sequence[str]] = None  # e.g. ("red", "green", "blue"); None = leave GDAL's default
    tags: Dict[str, str] = field(default_factory=dict)
    # Users' files are deflate-compressed; an intermediate file read once (the cloud mask's probabilities on
    # the network's grid) is written raw: compressing floats beside the network costs it CPU time.
    compress: Optional[str] = "deflate"


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
            raise InputError(f"Overlap {self.overlap} must be between 0 and half the tile size ({self.tile_size // 2}).")
        if self.batch_size < 1:
            raise InputError("Batch size must be at least 1.")


@dataclass
class RunResult:
    valid_pixels: int
    total_pixels: int
    tiles: int
    stats: Dict[str, float] = field(default_factory=dict)


def tile_starts(length: int, tile: int, overlap: int) -> List[int]:
    """Start offsets covering [0, length) with tiles of ``tile`` overlapping by at
    least ``overlap``; the last start is clamped so the tile ends at ``length``."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def edge_ramp(n: int, overlap: int, ramp_start: bool, ramp_end: bool) -> np.ndarray:
    """1-D blending weight: (i+0.5)/overlap near a ramped edge, 1 elsewhere; always > 0."""
    w = np.ones(n, dtype=np.float64)
    if overlap > 0:
        ramp = (np.arange(min(overlap, n)) + 0.5) / overlap
        if ramp_start:
            w[: ramp.size] = np.minimum(w[: ramp.size], ramp)
        if ramp_end:
            w[n - ramp.size:] = np.minimum(w[n - ramp.size:], ramp[::-1])
    return w


def _pad_to(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """Pad (C, h0, w0) to (C, h, w) at the bottom/right, by reflection where possible."""
    ph, pw = h - x.shape[1], w - x.shape[2]
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if x.shape[1] > 1 and x.shape[2] > 1 else "edge"
    return np.pad(x, ((0, 0), (0, ph), (0, pw)), mode=mode)


def _temp_path(final: str) -> str:
    return safe.temp_path(final)


def _write_error(final: str, exc: BaseException) -> OutputError:
    """OutputError naming the output file and the cause of a failed write."""
    if isinstance(exc, OSError) and getattr(exc, "errno", None):
        cause = safe.os_error_text(exc)
    else:
        cause = safe.write_failure_text(Path(final).parent, str(exc).strip())
    return OutputError(f"Could not write '{final}': {cause}. Nothing was written there; an earlier file at "
                       "that path is unchanged.")


def _finish(outputs: Sequence[OutputSpec], writers: list, temps: Sequence[str], width: int, height: int) -> None:
    """Close every writer, then make sure each temporary file is complete and on disk.

    GDAL writes a GeoTIFF's last blocks and its directory when the dataset is closed; a failure
    there (a full disk) is only logged by rasterio, so the errors are collected and checked, the
    file is reopened and its last block row read, and it is fsync'ed before anything is renamed.
    """
    for spec, dst, tmp in zip(outputs, writers, temps):
        finish_output(spec.path, dst, tmp, width, height, spec.count, spec.dtype)


def open_output(spec: OutputSpec, tmp: str, width: int, height: int, crs, transform):
    """Open the temporary file ``tmp`` of output ``spec`` for writing (tiled GeoTIFF, ``spec``'s compression,
    descriptions, tags and colour interpretation); a failure is an :class:`OutputError` naming ``spec.path``.
    Every writer of the project's rasters opens them here."""
    import rasterio

    extra = {"compress": "none"}
    if spec.compress:
        extra = {"compress": spec.compress, "predictor": 2 if np.dtype(spec.dtype).kind in "iu" else 3}
    try:
        dst = rasterio.open(tmp, "w", driver="GTiff", width=width, height=height, crs=crs, transform=transform,
                            tiled=True, blockxsize=256, blockysize=256, BIGTIFF="IF_SAFER", count=spec.count,
                            dtype=spec.dtype, nodata=spec.nodata, **extra)
    except Exception as exc:  # noqa: BLE001 - rasterio raises several types
        raise _write_error(spec.path, exc) from exc
    for i, d in enumerate(spec.descriptions, start=1):
        dst.set_band_description(i, d)
    if spec.tags:
        dst.update_tags(**spec.tags)
    if spec.colorinterp:
        from rasterio.enums import ColorInterp
        dst.colorinterp = [getattr(ColorInterp, c) for c in spec.colorinterp]
    return dst


def commit_output(tmp: str, final: str) -> None:
    """Put a complete temporary file in place: an atomic rename (an existing file is replaced only now), the
    replaced file's stale side file removed, the folder synced. A failed rename is an :class:`OutputError`."""
    try:
        os.replace(tmp, final)
    except OSError as exc:
        raise _write_error(final, exc) from exc
    with contextlib.suppress(OSError):
        os.remove(final + ".aux.xml")  # side file of the replaced output, now stale
    safe.fsync_folder(Path(final).parent)


def finish_output(final: str, dst, tmp: str, width: int, height: int, count: int, dtype: str) -> None:
    """Close one writer (``dst``, writing ``tmp`` for ``final``) and check the file is complete and on
    disk, or raise :class:`OutputError` naming ``final`` and the cause. Other writers (the cloud
    mask's buffer pass) use it too, so every output is checked the same way."""
    with safe.closing_errors() as errors:
        try:
            dst.close()
        except Exception as exc:  # noqa: BLE001
            raise _write_error(final, exc) from exc
    if errors:
        raise _write_error(final, RuntimeError("; ".join(errors[:3])))
    problem = safe.verify_raster(tmp, width, height, count, dtype)
    if problem:
        raise _write_error(final, RuntimeError(f"the written file is incomplete: {problem}"))
    try:
        safe.fsync_file(tmp)
    except OSError as exc:
        raise _write_error(final, exc) from exc


def _check_band_and_crs(src, src_path: str, bands: Sequence[int]) -> None:
    for b in bands:
        if not 1 <= b <= src.count:
            raise InputError(f"Raster '{src_path}' has {src.count} band(s); band {b} does not exist.")
    if src.crs is None:
        raise InputError(f"Raster '{src_path}' has no coordinate reference system; assign one first "
                         "(Raster > Projections > Assign Projection) so the result can be georeferenced.")


def run_tiled(
    src_path: str,
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
    from concurrent.futures import ThreadPoolExecutor
    from rasterio.windows import Window

    options.check()
    started = time.time()
    progress = progress or (lambda _f: None)
    is_cancelled = is_cancelled or (lambda: False)
    log = log or (lambda _m: None)
    T, ov = options.tile_size, options.overlap
    bands = list(bands)
    out_real = [os.path.realpath(spec.path) for spec in outputs]
    if os.path.realpath(src_path) in out_real:
        raise InputError(f"The output file '{src_path}' is the input raster itself; choose another output file.")
    if len(set(out_real)) < len(out_real):
        raise InputError(f"Two outputs of this run point to the same file ({', '.join(s.path for s in outputs)}).")

    try:
        src = rasterio.open(src_path)
    except Exception as exc:  # rasterio raises several types; all mean "cannot read"
        raise InputError(f"Cannot open raster '{src_path}': {exc}") from exc
    temps: List[str] = []
    writers = []
    reader = ThreadPoolExecutor(1, thread_name_prefix="sar2eo-read")
    writer = ThreadPoolExecutor(1, thread_name_prefix="sar2eo-write")
    pending_read = pending_write = None
    rsrc = None
    try:
        H, W = src.height, src.width
        _check_band_and_crs(src, src_path, bands)
        nodatas = [src.nodatavals[b - 1] for b in bands]

        ys, xs = tile_starts(H, T, ov), tile_starts(W, T, ov)
        th, tw = min(T, H), min(T, W)  # real extent of a tile (smaller rasters: the whole raster)
        wx_full = [edge_ramp(tw, ov, x0 > 0, x0 + tw < W).astype(np.float32) for x0 in xs]
        n_tiles = len(ys) * len(xs)
        log(f"{W} x {H} pixels, {n_tiles} tile(s) of {T} px with {ov} px overlap, batch {options.batch_size}")

        for folder in sorted({str(Path(spec.path).parent) for spec in outputs}):
            safe.check_output_folder(folder)
            safe.sweep_stale_partials(folder, started, log)
        for spec in outputs:
            tmp = _temp_path(spec.path)
            temps.append(tmp)
            writers.append(open_output(spec, tmp, W, H, src.crs, src.transform))

        # The reader thread has a dataset handle of its own (GDAL handles are not shared between threads).
        rsrc = rasterio.open(src_path)

        def read_batch(y0: int, group: Sequence[int]) -> Tuple[int, np.ndarray, np.ndarray]:
            """Read the window under one batch of tiles (rows [y0, y0 + th)), mark nodata as NaN, prepare it."""
            c0, c1 = group[0], group[-1] + tw
            raw = rsrc.read(bands, window=Window(c0, y0, c1 - c0, th), out_dtype="float32")
            for i, nd in enumerate(nodatas):
                if nd is not None and not (isinstance(nd, float) and math.isnan(nd)):
                    band = raw[i]
                    band[band == np.float32(nd)] = np.nan
            x, valid = prepare(raw)
            valid = valid & np.isfinite(raw).all(axis=0)
            return c0, np.ascontiguousarray(x, dtype=np.float32), valid

        def write_rows(top: int, blended: np.ndarray, valid: np.ndarray) -> None:
            for c0 in range(0, W, CHUNK_COLS):
                window = Window(c0, top, min(CHUNK_COLS, W - c0), blended.shape[1])
                b, v = blended[:, :, c0:c0 + CHUNK_COLS], valid[:, c0:c0 + CHUNK_COLS]
                for spec, dst in zip(outputs, writers):
                    data = spec.convert(b, v)
                    try:
                        dst.write(np.asarray(data).astype(spec.dtype, copy=False), window=window)
                    except Exception as exc:  # noqa: BLE001 - RasterioIOError, OSError
                        raise _write_error(spec.path, exc) from exc

        # Accumulators for the current tile row; every tile row starts where the last flush ended,
        # so a buffer of one tile row's height is enough (the overlap is carried over).
        acc = np.zeros((out_channels, th, W), dtype=np.float32)
        wsum = np.zeros((th, W), dtype=np.float32)
        valid_buf = np.zeros((th, W), dtype=bool)
        scratch = np.empty((out_channels, th, tw), dtype=np.float32)
        done_tiles = 0
        valid_total = 0

        plan = [(row, y0, start, xs[start:start + options.batch_size])
                for row, y0 in enumerate(ys) for start in range(0, len(xs), options.batch_size)]
        pending_read = reader.submit(read_batch, plan[0][1], plan[0][3])
        wy = None
        for i, (row, y0, start, group) in enumerate(plan):
            if is_cancelled():
                raise CancelledError("Cancelled by the user; no output was written.")
            c0, x, valid_in = pending_read.result()
            pending_read = reader.submit(read_batch, plan[i + 1][1], plan[i + 1][3]) if i + 1 < len(plan) else None
            if start == 0:
                wy = edge_ramp(th, ov, y0 > 0, y0 + th < H).astype(np.float32)
            valid_buf[:, c0:c0 + valid_in.shape[1]] |= valid_in
            batch = np.stack([_pad_to(x[:, :, x0 - c0:x0 - c0 + tw], T, T) for x0 in group])
            del x, valid_in
            pred = np.asarray(predict(batch), dtype=np.float32)
            if pred.shape[:2] != (len(group), out_channels) or pred.shape[2] < th or pred.shape[3] < tw:
                raise RuntimeError(f"network returned shape {pred.shape}, expected "
                                   f"({len(group)}, {out_channels}, {T}, {T})")
            for k, x0 in enumerate(group):
                w2 = wy[:, None] * wx_full[start + k][None, :]
                np.multiply(pred[k, :, :th, :tw], w2, out=scratch)
                acc[:, :, x0:x0 + tw] += scratch
                wsum[:, x0:x0 + tw] += w2
            done_tiles += len(group)
            progress(100.0 * done_tiles / n_tiles)
            if i + 1 < len(plan) and plan[i + 1][0] == row:
                continue  # more batches in this tile row

            # Rows above the next tile row are final: blend, hand them to the writer, carry the rest.
            n = (ys[row + 1] if row + 1 < len(ys) else H) - y0
            blended = acc[:, :n] / np.maximum(wsum[:n], 1e-12)
            valid = valid_buf[:n].copy()
            valid_total += int(np.count_nonzero(valid))
            if pending_write is not None:
                pending_write.result()  # at most one write in flight; re-raises its error here
            pending_write = writer.submit(write_rows, y0, blended, valid)
            carry = th - n
            if carry > 0:
                acc[:, :carry] = acc[:, n:].copy()
                wsum[:carry] = wsum[n:].copy()
                valid_buf[:carry] = valid_buf[n:].copy()
            acc[:, carry:] = 0
            wsum[carry:] = 0
            valid_buf[carry:] = False

        if pending_write is not None:
            pending_write.result()
            pending_write = None
        if valid_total == 0:
            raise InputError(f"Raster '{src_path}' holds only nodata in band(s) {list(bands)}; nothing to process.")
        _finish(outputs, writers, temps, W, H)
        writers.clear()
        for spec, tmp in zip(outputs, temps):
            commit_output(tmp, spec.path)
        temps.clear()
        return RunResult(valid_pixels=valid_total, total_pixels=H * W, tiles=n_tiles)
    finally:
        for fut in (pending_read, pending_write):
            if fut is not None:
                fut.cancel()
        reader.shutdown(wait=True)
        writer.shutdown(wait=True)
        for dst in writers:
            with contextlib.suppress(Exception):
                dst.close()
        safe.remove_quietly(temps, log)
        if rsrc is not None:
            rsrc.close()
        src.close()

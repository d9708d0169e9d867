"""Writing GeoTIFF outputs so that a complete file or nothing appears (no QGIS, no torch).

Every raster the project writes goes through here: :func:`open_output` opens the hidden temporary
file beside the destination (:func:`outputs.temp_path`), :func:`finish_output` closes it and checks
it is complete and on disk (GDAL's errors at close, where a full disk shows up; the file reopened
and its last block row read; fsync), and :func:`commit_output` renames it over the destination
(an existing file is replaced only then) and syncs the folder. Any failure is an
:class:`~.errors.OutputError` naming the destination and the cause.

:class:`AtomicGeoTiffWriter` does the three for a set of outputs on one grid: all are renamed only
once all are complete, and a writer closed before :meth:`~AtomicGeoTiffWriter.commit` removes its
temporary files, so an error or a cancel leaves nothing behind.
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from . import outputs as safe
from .errors import OutputError

# convert(blended prediction (C_out, h, w) float32, valid (h, w) bool) -> array written to an output
ConvertFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
BLOCK = 256   # GeoTIFF tile (block) size of every output


@dataclass
class OutputSpec:
    """One raster a run writes, converted from the blended prediction."""

    path: Optional[str]         # None: nothing is written, ``convert`` only sees the rows (a consumer of them)
    count: int
    dtype: str
    nodata: Optional[float]
    convert: ConvertFn
    descriptions: Sequence[str] = ()
    colorinterp: Optional[Sequence[str]] = None  # e.g. ("red", "green", "blue"); None = leave GDAL's default
    tags: Dict[str, str] = field(default_factory=dict)


def write_error(final: str, exc: BaseException) -> OutputError:
    """OutputError naming the output file and the cause of a failed write."""
    if isinstance(exc, OSError) and getattr(exc, "errno", None):
        cause = safe.os_error_text(exc)
    else:
        cause = safe.write_failure_text(Path(final).parent, str(exc).strip())
    return OutputError(f"Could not write '{final}': {cause}. Nothing was written there; an earlier file at "
                       "that path is unchanged.")


def open_output(spec: OutputSpec, tmp: str, width: int, height: int, crs: Any, transform: Any) -> Any:
    """Open the temporary file ``tmp`` of output ``spec`` for writing (tiled GeoTIFF, deflate-compressed,
    descriptions, tags and colour interpretation); a failure is an :class:`OutputError` naming ``spec.path``."""
    import rasterio

    extra: Dict[str, Any] = {"compress": "deflate", "predictor": 2 if np.dtype(spec.dtype).kind in "iu" else 3}
    try:
        dst = rasterio.open(tmp, "w", driver="GTiff", width=width, height=height, crs=crs, transform=transform,
                            tiled=True, blockxsize=BLOCK, blockysize=BLOCK, BIGTIFF="IF_SAFER", count=spec.count,
                            dtype=spec.dtype, nodata=spec.nodata, **extra)
    except Exception as exc:  # noqa: BLE001 - rasterio raises several types
        raise write_error(str(spec.path), exc) from exc
    for i, d in enumerate(spec.descriptions, start=1):
        dst.set_band_description(i, d)
    if spec.tags:
        dst.update_tags(**spec.tags)
    if spec.colorinterp:
        from rasterio.enums import ColorInterp
        dst.colorinterp = [getattr(ColorInterp, c) for c in spec.colorinterp]
    return dst


def finish_output(final: str, dst: Any, tmp: str, width: int, height: int, count: int, dtype: str) -> None:
    """Close one writer (``dst``, writing ``tmp`` for ``final``) and check the file is complete and on
    disk, or raise :class:`OutputError` naming ``final`` and the cause.

    GDAL writes a GeoTIFF's last blocks and its directory when the dataset is closed; a failure
    there (a full disk) is only logged by rasterio, so the errors are collected and checked, the
    file is reopened and its last block row read, and it is fsync'ed before anything is renamed.
    """
    with safe.closing_errors() as errors:
        try:
            dst.close()
        except Exception as exc:  # noqa: BLE001
            raise write_error(final, exc) from exc
    if errors:
        raise write_error(final, RuntimeError("; ".join(errors[:3])))
    problem = safe.verify_raster(tmp, width, height, count, dtype)
    if problem:
        raise write_error(final, RuntimeError(f"the written file is incomplete: {problem}"))
    try:
        safe.fsync_file(tmp)
    except OSError as exc:
        raise write_error(final, exc) from exc


def commit_output(tmp: str, final: str) -> None:
    """Put a complete temporary file in place: an atomic rename (an existing file is replaced only now), the
    replaced file's stale side file removed, the folder synced. A failed rename is an :class:`OutputError`."""
    try:
        os.replace(tmp, final)
    except OSError as exc:
        raise write_error(final, exc) from exc
    with contextlib.suppress(OSError):
        os.remove(final + ".aux.xml")  # side file of the replaced output, now stale
    safe.fsync_folder(Path(final).parent)


class AtomicGeoTiffWriter:
    """The outputs of one run, on one grid: ``open`` -> ``write_rows``... -> ``finish`` -> ``commit``.

    As a context manager it opens on entry and, on exit, closes what is still open and removes the
    temporary files that were not committed (all of them after an error or a cancel). ``write_rows``
    may run on another thread than the other methods, never at the same time as them.
    """

    def __init__(self, outputs: Sequence[OutputSpec], width: int, height: int, crs: Any, transform: Any,
                 log: Optional[Callable[[str], None]] = None) -> None:
        self.outputs = list(outputs)
        self.files = [spec for spec in self.outputs if spec.path]     # what is written (writers, temps: these)
        self.width, self.height, self.crs, self.transform = width, height, crs, transform
        self.log = log
        self.temps: List[str] = []
        self.writers: List[Any] = []

    def open(self) -> "AtomicGeoTiffWriter":
        """Check each output folder up front (naming it and the cause), remove stale partial files of
        killed runs there, and open a temporary file per output."""
        started = time.time()
        for folder in sorted({str(Path(str(spec.path)).parent) for spec in self.files}):
            safe.check_output_folder(folder)
            safe.sweep_stale_partials(folder, started, self.log)
        for spec in self.files:
            tmp = safe.temp_path(str(spec.path))
            self.temps.append(tmp)
            self.writers.append(open_output(spec, tmp, self.width, self.height, self.crs, self.transform))
        return self

    def write_rows(self, top: int, data: np.ndarray, valid: np.ndarray, chunk_cols: Optional[int] = None) -> None:
        """Convert ``data`` (C, n, width) and ``valid`` (n, width) with each output's ``convert`` and write
        them at row ``top``, ``chunk_cols`` columns at a time (None: all), so that the converters'
        temporaries do not grow with the raster's width. A failed write is an :class:`OutputError`; an
        error of a converter is raised as it is."""
        from rasterio.windows import Window

        step = chunk_cols or self.width
        for c0 in range(0, self.width, step):
            window = Window(c0, top, min(step, self.width - c0), data.shape[1])
            d, v = data[:, :, c0:c0 + step], valid[:, c0:c0 + step]
            writers = iter(self.writers)
            for spec in self.outputs:
                converted = np.asarray(spec.convert(d, v)).astype(spec.dtype, copy=False)
                if not spec.path:
                    continue
                dst = next(writers)
                try:
                    dst.write(converted, window=window)
                except Exception as exc:  # noqa: BLE001 - RasterioIOError, OSError
                    raise write_error(str(spec.path), exc) from exc

    def finish(self) -> None:
        """Close every file and check each is complete and on disk (see :func:`finish_output`)."""
        for spec, dst, tmp in zip(self.files, self.writers, self.temps):
            finish_output(str(spec.path), dst, tmp, self.width, self.height, spec.count, spec.dtype)
        self.writers.clear()

    def commit(self) -> None:
        """Rename every finished file over its destination."""
        if self.writers:
            raise RuntimeError("AtomicGeoTiffWriter.commit() before finish()")
        for spec, tmp in zip(self.files, self.temps):
            commit_output(tmp, str(spec.path))
        self.temps.clear()

    def close(self) -> None:
        """Close what is still open and remove the temporary files not committed; never raises."""
        for dst in self.writers:
            with contextlib.suppress(Exception):   # closing a failed writer: the first error is the one that counts
                dst.close()
        self.writers.clear()
        safe.remove_quietly(self.temps, self.log)
        self.temps.clear()

    def __enter__(self) -> "AtomicGeoTiffWriter":
        try:
            return self.open()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.close()

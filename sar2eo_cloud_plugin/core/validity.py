"""Is there anything to process? A check on a decimated sample, before a run starts (no QGIS, no torch).

A raster without a nodata tag whose pixels are all zero (an empty, never-filled or failed export)
or all one value used to be processed in full and fail at the end, or give a meaningless output.
Both tasks call :func:`check_has_data` on the sample they already read to decide units or bands.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .errors import InputError


def check_has_data(sample: np.ndarray, layer_name: str, bands: Sequence[int],
                   nodata: Sequence[Optional[float]] = ()) -> None:
    """Raise :class:`InputError` naming the layer and bands when ``sample`` ((C, h, w) float, NaN
    where the raster's nodata is) holds only nodata, only zeros or a single value."""
    finite = sample[np.isfinite(sample)]
    where = f"Layer '{layer_name}', band(s) {list(bands)}"
    if finite.size == 0:
        raise InputError(f"{where}: every sampled pixel is nodata; there is nothing to process.")
    lo, hi = float(finite.min()), float(finite.max())
    tagged = any(v is not None for v in nodata)
    if lo == hi == 0.0:
        raise InputError(f"{where}: every sampled pixel is 0" + ("" if tagged else " and the raster has no nodata "
                         "value") + ". This looks like an empty (unfilled or failed) export, not an image; "
                         "check the file, or set its nodata value if 0 marks missing data.")
    if lo == hi:
        raise InputError(f"{where}: every sampled pixel has the same value ({lo:g}); this is not an image that "
                         "can be processed. Check the file.")

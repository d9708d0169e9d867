"""Helpers for the QGIS-free core tests (nothing here imports qgis).

Rasters written by :func:`write_raster` are GENERATED test fixtures (random or
hand-written arrays, sometimes derived from the real samples, as each test says);
the real data are the BigEarthNet stacks in ``sample_data/``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

UTM32N = "EPSG:32632"


def write_raster(path: Path, data: np.ndarray, crs: Optional[str] = UTM32N, nodata: Optional[float] = None,
                 descriptions: Sequence[str] = (), transform=None) -> Path:
    """Write a GENERATED (C, H, W) array as a GeoTIFF (10 m pixels in UTM 32N by default)."""
    import rasterio
    from rasterio.transform import from_origin

    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    transform = transform or from_origin(500000.0, 5600000.0, 10.0, 10.0)
    profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": data.shape[0],
               "dtype": data.dtype.name, "transform": transform, "nodata": nodata}
    if crs is not None:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for i, d in enumerate(descriptions, start=1):
            dst.set_band_description(i, d)
    return path


def read_raster(path: Path):
    import rasterio

    with rasterio.open(path) as src:
        return src.read(), src.profile, src.descriptions


# The engine with an identity "network": what goes in comes out, so blending and writing can be checked exactly.
def identity_prepare(raw):
    return np.nan_to_num(raw, nan=0.0), np.all(np.isfinite(raw), axis=0)


def identity_predict(batch):
    return batch.copy()

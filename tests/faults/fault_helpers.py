"""Helpers for the fault tests (no qgis here)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np


def write_raster(path, data, crs="EPSG:32633", nodata=None, descriptions=()):
    """Write a GENERATED (C, H, W) array as a GeoTIFF, 10 m pixels in UTM 33N."""
    import rasterio
    from rasterio.transform import from_origin

    data = np.asarray(data)
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype=data.dtype.name, crs=crs, transform=from_origin(500000, 5600000, 10, 10),
                       nodata=nodata) as dst:
        dst.write(data)
        for i, d in enumerate(descriptions, start=1):
            dst.set_band_description(i, d)
    return Path(path)


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def uint16_output(path, count):
    """An OutputSpec writing the prediction as uint16 (random input -> poorly compressible output)."""
    from sar2eo_cloud_plugin.core.engine import OutputSpec

    def convert(pred, valid):
        return np.clip(pred, 1, 65535).astype(np.uint16)

    return OutputSpec(path=str(path), count=count, dtype="uint16", nodata=0, convert=convert)


def leftovers(folder) -> list:
    return sorted(p.name for p in Path(folder).iterdir())

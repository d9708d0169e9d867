#!/usr/bin/env python3
"""Print a short gdalinfo-style summary of rasters (and vector files) — used by the headless demo.

    python scripts/raster_summary.py FILE [FILE ...]

For a raster: driver, size, CRS, origin and pixel size, and per band its type, description, nodata and the
min / max / mean of the valid pixels (computed here, so no .aux.xml statistics file is written next to it).
For a vector file: each layer with its geometry type and feature count.
"""
from __future__ import annotations

import os
import sys

os.environ.setdefault("GDAL_PAM_ENABLED", "NO")  # never write .aux.xml side files


def _crs_name(wkt: str) -> str:
    from osgeo import osr

    if not wkt:
        return "(none)"
    srs = osr.SpatialReference()
    srs.ImportFromWkt(wkt)
    srs.AutoIdentifyEPSG()
    code = srs.GetAuthorityCode(None)
    name = srs.GetName() or "?"
    return f"EPSG:{code} ({name})" if code else name


def raster(path: str) -> bool:
    import numpy as np
    from osgeo import gdal

    ds = gdal.Open(path)
    if ds is None:
        return False
    gt = ds.GetGeoTransform()
    print(f"{path}")
    print(f"  Driver: {ds.GetDriver().ShortName}   Size is {ds.RasterXSize}, {ds.RasterYSize}   "
          f"Bands: {ds.RasterCount}")
    print(f"  CRS: {_crs_name(ds.GetProjection())}")
    print(f"  Origin = ({gt[0]:.3f}, {gt[3]:.3f})   Pixel Size = ({gt[1]:.3f}, {gt[5]:.3f})")
    for i in range(1, ds.RasterCount + 1):
        b = ds.GetRasterBand(i)
        arr = b.ReadAsArray()
        nodata = b.GetNoDataValue()
        valid = arr if nodata is None else arr[arr != nodata]
        if np.issubdtype(valid.dtype, np.floating):
            valid = valid[np.isfinite(valid)]
        stats = (f"min={valid.min():.4g} max={valid.max():.4g} mean={valid.mean():.4g} "
                 f"valid={valid.size}/{arr.size}") if valid.size else "no valid pixels"
        desc = b.GetDescription() or "-"
        print(f"  Band {i}: {gdal.GetDataTypeName(b.DataType)} '{desc}' NoData={nodata}  {stats}")
    return True


def vector(path: str) -> bool:
    from osgeo import ogr

    ds = ogr.Open(path)
    if ds is None:
        return False
    print(f"{path}")
    for i in range(ds.GetLayerCount()):
        lyr = ds.GetLayerByIndex(i)
        srs = lyr.GetSpatialRef()
        print(f"  Layer '{lyr.GetName()}': {ogr.GeometryTypeToName(lyr.GetGeomType())}, "
              f"{lyr.GetFeatureCount()} feature(s), CRS: {_crs_name(srs.ExportToWkt() if srs else '')}")
    return True


def main(paths: list[str]) -> int:
    from osgeo import gdal

    gdal.UseExceptions() if hasattr(gdal, "UseExceptions") else None
    gdal.PushErrorHandler("CPLQuietErrorHandler")
    rc = 0
    for p in paths:
        if not os.path.exists(p):
            print(f"{p}: MISSING")
            rc = 1
            continue
        try:
            ok = raster(p)
        except RuntimeError:
            ok = False
        if not ok:
            try:
                ok = vector(p)
            except RuntimeError:
                ok = False
        if not ok:
            print(f"{p}: not readable by GDAL/OGR")
            rc = 1
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

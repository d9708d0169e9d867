"""Input layers and output destinations of the algorithms: GDAL files in, GeoTIFF out, styled on load."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable, Dict, Sequence, Tuple

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProviderRegistry,
    QgsRasterLayer,
)

from .params import check_output_folder

GEOTIFF_EXTENSIONS = (".tif", ".tiff")


def raster_source(alg: QgsProcessingAlgorithm, parameters: Dict, name: str,
                  context: QgsProcessingContext) -> Tuple[str, str, QgsRasterLayer]:
    """(GDAL-readable path, layer name, layer) of a raster parameter.

    The core reads rasters with rasterio, so the layer must be a file-based GDAL raster;
    WMS/XYZ, PostGIS rasters, virtual (calculated) layers etc. get a clear error.
    """
    layer = alg.parameterAsRasterLayer(parameters, name, context)
    if layer is None or not layer.isValid():
        raise QgsProcessingException(f"Could not load the input raster layer ({parameters.get(name)!r}).")
    layer_name = layer.name() or Path(layer.source()).name
    provider = layer.providerType()
    source = layer.source()
    if provider != "gdal":
        raise QgsProcessingException(
            f"Layer '{layer_name}' comes from the '{provider}' data provider, not from a raster file. "
            "This algorithm reads raster files (GeoTIFF and other GDAL formats): save the layer as a GeoTIFF "
            "first (right-click > Export > Save As…) and run it on that file.")
    decoded = QgsProviderRegistry.instance().decodeUri("gdal", source) or {}
    path = decoded.get("path") or source
    if not (os.path.isfile(path) or source.startswith("/vsi")):
        raise QgsProcessingException(
            f"Layer '{layer_name}' is not a file on disk (source '{source}'). Save it as a GeoTIFF first "
            "(right-click > Export > Save As…) and run the algorithm on that file.")
    if "|" in source and os.path.isfile(path) and not decoded.get("layerName"):
        source = path   # QGIS-only suffixes such as "|option:..." mean nothing to rasterio
    return source, layer_name, layer


def geotiff_destination(alg: QgsProcessingAlgorithm, parameters: Dict, name: str, context: QgsProcessingContext,
                        inputs: Sequence[str] = ()) -> str:
    """Path of a raster destination parameter, which must be a GeoTIFF and not overwrite an input."""
    path = alg.parameterAsOutputLayer(parameters, name, context)
    if not path:
        return ""
    if path.startswith(("memory:", "postgres", "ogr:")) or Path(path).suffix.lower() not in GEOTIFF_EXTENSIONS:
        raise QgsProcessingException(
            f"Output '{path}' ({name}): this algorithm writes GeoTIFF files only; choose a .tif file name.")
    for src in inputs:
        with contextlib.suppress(OSError):
            if os.path.exists(path) and os.path.samefile(path, src):
                raise QgsProcessingException(f"Output {name} would overwrite the input raster {src}; "
                                             "choose another file name.")
    check_output_folder(path, f"output {name}")
    return path


def set_post_processor(context: QgsProcessingContext, layer_id: str, make_post_processor: Callable) -> None:
    """Attach a new styling post-processor (from ``make_post_processor()``) to an output that will be
    loaded on completion (Toolbox, batch, modeler); nothing is created when it will not be loaded."""
    if layer_id and context.willLoadLayerOnCompletion(layer_id):
        context.layerToLoadOnCompletionDetails(layer_id).setPostProcessor(make_post_processor())

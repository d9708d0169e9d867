"""Processing algorithm ``sar2eo_cloud:cloud_mask`` — cloud mask of a Sentinel-2 layer.

A thin shell over :func:`sar2eo_cloud_plugin.core.inference.cloud_mask` (U-Net/EfficientNet-B2,
tiled and blended), plus optional cloud polygons: the mask's cloud pixels (value 1) are
polygonised with GDAL (4-connected regions, which are already disjoint) and dissolved into one
multipolygon, and parts smaller than MIN_AREA are dropped. torch is imported only inside ``processAlgorithm``.
"""
from __future__ import annotations

import os
import uuid
from typing import Any, Dict, List, Optional, Tuple

from qgis.core import (
    QgsFeature,
    QgsFeatureSink,
    QgsField,
    QgsFields,
    QgsGeometry,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterBand,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterEnum,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingUtils,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QVariant
from qgis.PyQt.QtGui import QIcon

from . import common

MASK_CLOUD = 1


# (core precision key, label) in the order of the PRECISION enum.
PRECISIONS = (("float32", "float32 (as measured in the model card)"),
              ("bfloat16", "bfloat16 (faster on recent CPUs/GPUs, probabilities within ~0.002)"))


class CloudMaskAlgorithm(QgsProcessingAlgorithm):
    INPUT = "INPUT"
    RED_BAND = "RED_BAND"
    GREEN_BAND = "GREEN_BAND"
    BLUE_BAND = "BLUE_BAND"
    DEVICE = "DEVICE"
    THRESHOLD = "THRESHOLD"
    TILE_SIZE = "TILE_SIZE"
    OVERLAP = "OVERLAP"
    BATCH_SIZE = "BATCH_SIZE"
    MODEL_FILE = "MODEL_FILE"
    MIN_AREA = "MIN_AREA"
    PRECISION = "PRECISION"
    OUTPUT = "OUTPUT"
    OUTPUT_PROBABILITY = "OUTPUT_PROBABILITY"
    OUTPUT_POLYGONS = "OUTPUT_POLYGONS"
    CLOUD_FRACTION = "CLOUD_FRACTION"
    CLOUD_PIXELS = "CLOUD_PIXELS"
    VALID_PIXELS = "VALID_PIXELS"
    THRESHOLD_USED = "THRESHOLD_USED"
    DEVICE_USED = "DEVICE_USED"

    # ------------------------------------------------------------------ metadata
    def name(self) -> str:
        return "cloud_mask"

    def displayName(self) -> str:  # noqa: N802
        return "Cloud mask (Sentinel-2)"

    def group(self) -> str:
        return "Cloud masking"

    def groupId(self) -> str:  # noqa: N802
        return "cloud_masking"

    def tags(self):
        return ["sentinel-2", "cloud", "mask", "u-net", "efficientnet", "segmentation", "deep learning",
                "polygons"]

    def icon(self) -> QIcon:
        return QIcon(common.icon_path("cloud.svg"))

    def createInstance(self):  # noqa: N802
        return CloudMaskAlgorithm()

    def helpUrl(self) -> str:  # noqa: N802
        return common.help_url()

    def shortHelpString(self) -> str:  # noqa: N802
        return (
            "<p>Detects clouds (thick and thin) in a Sentinel-2 image with a U-Net segmentation network "
            "(EfficientNet-B2 encoder) and writes a cloud mask, optionally the cloud probability and "
            "cloud polygons.</p>"
            "<h3>Input</h3>"
            "<p>A file-based Sentinel-2 raster in <b>digital numbers</b> (reflectance &times; 10,000, L1C or "
            "L2A). Only the red, green and blue bands (B4, B3, B2) are used. They are found automatically for "
            "a 13-band L1C stack (B1..B12 with B8A and B10), a 12-band L2A stack (no B10), a 4-band 10 m stack "
            "(B2, B3, B4, B8), or any layer whose band descriptions name B4/B3/B2 (or red/green/blue); "
            "otherwise set <i>Red/Green/Blue band</i> by hand (all three). Ambiguous layouts are refused with a "
            "message listing the bands seen. Pixels that are nodata, or 0 in every band, are nodata.</p>"
            "<p>Preprocessing as in training: DN clipped at 4,000, scaled to 0–255, then the encoder's "
            "ImageNet mean/std normalisation.</p>"
            "<h3>Outputs</h3><ul>"
            "<li><b>Cloud mask</b>: GeoTIFF uint8 in the input's CRS and grid: <b>0 clear, 1 cloud, "
            "255 nodata</b>; opens with a paletted style (clear transparent, cloud magenta).</li>"
            "<li><b>Cloud probability</b> (optional): float32 0..1 (blended over tile overlaps), nodata "
            "&minus;1.</li>"
            "<li><b>Cloud polygons</b> (optional): the cloud pixels (value 1) polygonised, dissolved into one "
            "multipolygon feature in the input's CRS (fields: class, value, area, parts); parts smaller than "
            "<i>minimum polygon area</i> are dropped.</li>"
            "<li>Results and log: CLOUD_FRACTION (cloud pixels / valid pixels, 0..1), CLOUD_PIXELS, "
            "VALID_PIXELS, THRESHOLD_USED, DEVICE_USED.</li></ul>"
            "<h3>Advanced</h3>"
            "<p><i>Threshold</i>: probability at or above which a pixel is cloud; empty = the model card's "
            "value. <i>Minimum polygon area</i> is in the layer CRS's units squared — <b>m&sup2;</b> for "
            "projected CRSs in metres such as UTM (for a geographic CRS it would be degrees&sup2;: reproject "
            "first). Tile size (a multiple of 32), overlap and batch size control memory; the "
            "probabilities of overlapping tiles are blended before thresholding. <i>Model file</i>: a model card "
            "(.json beside its .safetensors weights) instead of the bundled model; its sha256 is checked.</p>"
            "<h3>Limits</h3>"
            "<p>An RGB-only model: bright surfaces (snow, ice, white roofs, salt pans) can be mistaken for "
            "cloud and thin cirrus can be missed; cloud shadows are not detected. Check the mask before using it "
            "to discard data.</p>"
            + common.bundled_models_help("cloudmask")
        )

    # ------------------------------------------------------------------ parameters
    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Sentinel-2 layer (digital numbers)"))
        for name, label in ((self.RED_BAND, "Red band (B4) — empty: detect"),
                            (self.GREEN_BAND, "Green band (B3) — empty: detect"),
                            (self.BLUE_BAND, "Blue band (B2) — empty: detect")):
            self.addParameter(QgsProcessingParameterBand(name, label, parentLayerParameterName=self.INPUT,
                                                         optional=True))
        self.addParameter(common.device_parameter(self.DEVICE))
        threshold = QgsProcessingParameterNumber(self.THRESHOLD, "Cloud probability threshold (empty: the model's)",
                                                 QgsProcessingParameterNumber.Double, optional=True,
                                                 minValue=0.0, maxValue=1.0)
        self.addParameter(common.advanced(threshold))
        self.addParameter(common.advanced(common.int_parameter(self.TILE_SIZE, "Tile size (pixels, multiple of 32)",
                                                               512, 32, 4096)))
        self.addParameter(common.advanced(common.int_parameter(self.OVERLAP, "Tile overlap (pixels)", 32, 0, 2048)))
        self.addParameter(common.advanced(common.int_parameter(self.BATCH_SIZE, "Batch size (tiles per step)",
                                                               2, 1, 256)))
        self.addParameter(common.advanced(common.model_file_parameter(self.MODEL_FILE)))
        # bfloat16 autocast is ~1.8x faster for the U-Net on a CPU (a 10,980² scene: 81 s instead of 143 s on
        # 2 cores, benchmarks/README.md) with probabilities within ~2e-3 of float32; float32 stays the default
        # because the card's metrics were measured in float32.
        self.addParameter(common.advanced(QgsProcessingParameterEnum(
            self.PRECISION, "Network precision", options=[label for _key, label in PRECISIONS], defaultValue=0)))
        min_area = QgsProcessingParameterNumber(self.MIN_AREA, "Minimum polygon area (layer CRS units², m² in UTM)",
                                                QgsProcessingParameterNumber.Double, defaultValue=0.0, minValue=0.0)
        self.addParameter(common.advanced(min_area))
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, "Cloud mask"))
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT_PROBABILITY, "Cloud probability",
                                                                  optional=True, createByDefault=False))
        self.addParameter(QgsProcessingParameterFeatureSink(self.OUTPUT_POLYGONS, "Cloud polygons",
                                                            QgsProcessing.TypeVectorPolygon, optional=True,
                                                            createByDefault=False))
        self.addOutput(QgsProcessingOutputNumber(self.CLOUD_FRACTION, "Cloud fraction of valid pixels (0..1)"))
        self.addOutput(QgsProcessingOutputNumber(self.CLOUD_PIXELS, "Cloud pixels"))
        self.addOutput(QgsProcessingOutputNumber(self.VALID_PIXELS, "Valid pixels"))
        self.addOutput(QgsProcessingOutputNumber(self.THRESHOLD_USED, "Threshold used"))
        self.addOutput(QgsProcessingOutputString(self.DEVICE_USED, "Device used"))

    def canExecute(self):  # noqa: N802
        return common.can_execute(common.CLOUD_PACKAGES)

    # ------------------------------------------------------------------ run
    def processAlgorithm(self, parameters: Dict[str, Any], context: QgsProcessingContext,
                         feedback: QgsProcessingFeedback) -> Dict[str, Any]:  # noqa: N802
        inference = common.import_inference(common.CLOUD_PACKAGES)
        src, layer_name, layer = common.raster_source(self, parameters, self.INPUT, context)
        mask_path = common.geotiff_destination(self, parameters, self.OUTPUT, context, inputs=[src])
        prob_path = common.geotiff_destination(self, parameters, self.OUTPUT_PROBABILITY, context, inputs=[src])
        if prob_path and os.path.abspath(prob_path) == os.path.abspath(mask_path):
            raise QgsProcessingException("The cloud mask and the cloud probability need different file names.")
        want_polygons = parameters.get(self.OUTPUT_POLYGONS) not in (None, "")
        min_area = self.parameterAsDouble(parameters, self.MIN_AREA, context)
        if min_area < 0:
            raise QgsProcessingException(f"Minimum polygon area must be 0 or more, not {min_area}.")

        req = inference.CloudMaskRequest(
            src_path=src, dst_path=mask_path,
            red_band=common.optional_int(self, parameters, self.RED_BAND, context),
            green_band=common.optional_int(self, parameters, self.GREEN_BAND, context),
            blue_band=common.optional_int(self, parameters, self.BLUE_BAND, context),
            threshold=common.optional_double(self, parameters, self.THRESHOLD, context),
            probability_path=prob_path or None,
            device=common.device_key(self, parameters, context, self.DEVICE),
            tile_size=self.parameterAsInt(parameters, self.TILE_SIZE, context),
            overlap=self.parameterAsInt(parameters, self.OVERLAP, context),
            batch_size=self.parameterAsInt(parameters, self.BATCH_SIZE, context),
            model_path=common.model_path(self, parameters, context, self.MODEL_FILE),
            layer_name=layer_name,
            precision=PRECISIONS[self.parameterAsEnum(parameters, self.PRECISION, context)][0],
        )
        feedback.pushInfo(f"Cloud mask of '{layer_name}'")
        bridge = common.FeedbackAdapter(feedback, 0.0, 90.0 if want_polygons else 100.0)
        written = [mask_path, prob_path]
        with common.core_errors(cleanup=written):
            common.check_cancelled(feedback)
            result = inference.cloud_mask(req, bridge.progress, bridge.is_cancelled, bridge.log)
            extra = result.extra
            fraction = float(extra.get("CLOUD_FRACTION", 0.0))
            feedback.pushInfo(f"CLOUD_FRACTION = {fraction:.4f} ({100 * fraction:.2f} % of valid pixels); "
                              f"CLOUD_PIXELS = {int(extra.get('CLOUD_PIXELS', 0))}; "
                              f"VALID_PIXELS = {int(extra.get('VALID_PIXELS', 0))}; "
                              f"threshold {extra.get('THRESHOLD', 0):g}; device {result.device}")
            results: Dict[str, Any] = {
                self.OUTPUT: mask_path,
                self.OUTPUT_PROBABILITY: prob_path or None,
                self.OUTPUT_POLYGONS: None,
                self.CLOUD_FRACTION: fraction,
                self.CLOUD_PIXELS: int(extra.get("CLOUD_PIXELS", 0)),
                self.VALID_PIXELS: int(extra.get("VALID_PIXELS", 0)),
                self.THRESHOLD_USED: float(extra.get("THRESHOLD", 0.0)),
                self.DEVICE_USED: result.device,
            }
            if want_polygons:
                if layer.crs().isGeographic() and min_area > 0:
                    feedback.pushWarning(f"Layer '{layer_name}' is in a geographic CRS: the minimum polygon area "
                                         f"{min_area:g} is read in degrees², not m². Reproject to UTM for m².")
                geometry, n_parts, n_dropped = cloud_polygons(mask_path, min_area, context, feedback, 90.0, 100.0)
                fields = QgsFields()
                fields.append(QgsField("class", QVariant.String))
                fields.append(QgsField("value", QVariant.Int))
                fields.append(QgsField("area", QVariant.Double))
                fields.append(QgsField("parts", QVariant.Int))
                sink, dest_id = self.parameterAsSink(parameters, self.OUTPUT_POLYGONS, context, fields,
                                                     QgsWkbTypes.MultiPolygon, layer.crs())
                if sink is None:
                    raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT_POLYGONS))
                if geometry is not None:
                    feature = QgsFeature(fields)
                    feature.setGeometry(geometry)
                    feature.setAttributes(["cloud", MASK_CLOUD, geometry.area(), n_parts])
                    sink.addFeature(feature, QgsFeatureSink.FastInsert)
                area = geometry.area() if geometry is not None else 0.0
                feedback.pushInfo(f"Cloud polygons: {n_parts} part(s), area {area:.6g} CRS units² "
                                  f"({n_dropped} part(s) smaller than {min_area:g} dropped)")
                results[self.OUTPUT_POLYGONS] = dest_id
                common.set_post_processor(context, dest_id, lambda: _styler("polygons"))
        feedback.setProgress(100)
        common.set_post_processor(context, mask_path, lambda: _styler("mask"))
        if prob_path:
            common.set_post_processor(context, prob_path, lambda: _styler("probability"))
        return results


def _styler(kind: str):
    from ..styling import styler

    return styler(kind)


# ---------------------------------------------------------------------- polygons
def _write_cloud_only(mask_path: str, out_path: str, rows: int = 1024) -> Tuple[Any, float]:
    """Copy the mask as 1 = cloud, 0 = anything else (nodata 0), strip by strip (bounded memory)."""
    import numpy as np
    from osgeo import gdal

    src = gdal.Open(mask_path)
    if src is None:
        raise QgsProcessingException(f"Cannot reopen the cloud mask {mask_path} to polygonise it.")
    band = src.GetRasterBand(1)
    w, h = src.RasterXSize, src.RasterYSize
    dst = gdal.GetDriverByName("GTiff").Create(out_path, w, h, 1, gdal.GDT_Byte,
                                               ["TILED=YES", "COMPRESS=DEFLATE", "BIGTIFF=IF_SAFER"])
    dst.SetGeoTransform(src.GetGeoTransform())
    dst.SetProjection(src.GetProjection())
    out = dst.GetRasterBand(1)
    out.SetNoDataValue(0)
    for y in range(0, h, rows):
        n = min(rows, h - y)
        data = band.ReadAsArray(0, y, w, n)
        out.WriteArray((data == MASK_CLOUD).astype(np.uint8), 0, y)
    out.FlushCache()
    gt = src.GetGeoTransform()
    pixel_area = abs(gt[1] * gt[5] - gt[2] * gt[4])
    srs = src.GetSpatialRef()
    src = None  # noqa: F841 - close
    return (dst, srs), pixel_area


def cloud_polygons(mask_path: str, min_area: float, context: QgsProcessingContext,
                   feedback: QgsProcessingFeedback, start: float = 0.0,
                   end: float = 100.0) -> Tuple[Optional[QgsGeometry], int, int]:
    """Polygonise the mask's cloud pixels, dissolve them and drop parts smaller than ``min_area``
    (CRS units squared). Returns (multipolygon or None, parts kept, parts dropped)."""
    from osgeo import gdal, ogr

    tmp_dir = QgsProcessingUtils.tempFolder()
    stem = os.path.join(tmp_dir, f"sar2eo_clouds_{uuid.uuid4().hex[:8]}")
    cloud_tif, polys_gpkg = stem + "_cloud.tif", stem + "_polygons.gpkg"
    temps = [cloud_tif, polys_gpkg]
    span = end - start
    try:
        (dst, srs), _pixel_area = _write_cloud_only(mask_path, cloud_tif)
        common.check_cancelled(feedback)
        band = dst.GetRasterBand(1)
        ds = ogr.GetDriverByName("GPKG").CreateDataSource(polys_gpkg)
        out_layer = ds.CreateLayer("clouds", srs=srs, geom_type=ogr.wkbPolygon)
        out_layer.CreateField(ogr.FieldDefn("value", ogr.OFTInteger))

        def on_progress(complete, _message, _data):
            feedback.setProgress(start + 0.6 * span * complete)
            return 0 if feedback.isCanceled() else 1

        # 4-connected regions of value 1; pixels that are not cloud are masked out (nodata 0).
        err = gdal.Polygonize(band, band.GetMaskBand(), out_layer, 0, [], callback=on_progress)
        count = out_layer.GetFeatureCount()
        ds = out_layer = band = dst = None  # noqa: F841 - close and flush the files
        common.check_cancelled(feedback)
        if err != 0:
            raise QgsProcessingException(f"GDAL could not polygonise the cloud mask {mask_path} ({gdal.GetLastErrorMsg()}).")
        if count == 0:
            return None, 0, 0

        # Dissolve. GDAL gives one polygon per 4-connected region of cloud pixels, with its holes, so
        # the regions are already disjoint: no two share an edge, at most a corner (diagonal pixels).
        # Their union is therefore their collection: a valid multipolygon with no internal boundaries,
        # the same geometry native:dissolve returns, without GEOS unioning thousands of ragged
        # polygons (measured on a noisy 4096 x 4096 mask, 10,943 regions: dissolve 85 s, this < 2 s).
        polygons = QgsVectorLayer(f"{polys_gpkg}|layername=clouds", "clouds", "ogr")
        if not polygons.isValid():
            raise QgsProcessingException(f"Cannot read the polygonised clouds back from {polys_gpkg}.")
        parts: List[QgsGeometry] = []
        for i, feat in enumerate(polygons.getFeatures()):
            if i % 1000 == 0:
                common.check_cancelled(feedback)
                feedback.setProgress(start + span * (0.6 + 0.35 * i / count))
            geom = feat.geometry()
            if geom is None or geom.isEmpty():
                continue
            parts.extend(geom.asGeometryCollection() if geom.isMultipart() else [geom])
        polygons = None
        kept = [p for p in parts if p.area() >= min_area]
        dropped = len(parts) - len(kept)
        feedback.setProgress(end)
        if not kept:
            return None, 0, dropped
        geometry = QgsGeometry.collectGeometry(kept)
        geometry.convertToMultiType()
        return geometry, len(kept), dropped
    finally:
        for path in temps:
            common.remove_outputs([path, path + "-wal", path + "-shm", path + "-journal"])

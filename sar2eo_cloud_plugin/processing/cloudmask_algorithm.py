"""Processing algorithm ``sar2eo_cloud:cloud_mask`` — cloud and cloud-shadow mask of a Sentinel-2 layer.

A thin shell over :func:`sar2eo_cloud_plugin.core.cloud.cloud_mask`: the model card says which bands,
units, resolution and classes; this file reads the parameters, reports what the core decided and
builds the optional polygons (one dissolved multipolygon per class, parts smaller than MIN_AREA
dropped). torch is imported only inside ``processAlgorithm``.
"""
from __future__ import annotations

import os
import uuid
from typing import Any, Dict, List, Optional, Tuple

from qgis.core import (
    Qgis,
    QgsFeature,
    QgsFeatureSink,
    QgsField,
    QgsFields,
    QgsGeometry,
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingUtils,
    QgsRasterLayer,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QVariant

from ..core import s2product
from ..core.cloud import CLASS_NAMES, CLOUD, SHADOW, model_choices
from ..core.geotiff import commit_output
from ..core.outputs import remove_quietly, temp_path
from ..core.tasks import CLOUD_MASK
from .base import Sar2EoAlgorithm
from .common import can_execute, import_inference
from .feedback import FeedbackAdapter, check_cancelled
from .guard import core_errors, sigterm_cancels
from .helptext import bundled_models_help
from .layers import geotiff_destination, raster_source, set_post_processor
from .params import model_path as model_file_path

POLYGON_CLASSES = (CLOUD, SHADOW)

# (core precision key, label) in the order of the PRECISION enum.
PRECISIONS = (("float32", "float32 (as measured in the model card)"),
              ("bfloat16", "bfloat16 (faster on recent CPUs/GPUs, probabilities within ~0.01 on average)"))
MODES = (("classes", "Cloud and shadow classes (0 clear, 1 cloud, 2 shadow)"),
         ("cloud_only", "Cloud only (0 clear, 1 cloud)"))
LEVEL_LABELS = ("Auto-detect (bands, metadata, file name)", "L1C (top of atmosphere)", "L2A (surface reflectance)")
OFFSET_LABELS = ("Auto (metadata, processing baseline or date)", "None (products before baseline 04.00)",
                 "-1000 (baseline 04.00 and later, since 2022-01-25)")


class CloudMaskAlgorithm(Sar2EoAlgorithm):
    TASK_SPEC = CLOUD_MASK
    DISPLAY_NAME = "Cloud and shadow mask (Sentinel-2)"
    GROUP = "Cloud masking"
    GROUP_ID = "cloud_masking"
    TAGS = ("sentinel-2", "cloud", "shadow", "mask", "u-net", "efficientnet", "segmentation", "deep learning",
            "polygons", "l1c", "l2a", "ukis-csmask")

    INPUT = "INPUT"
    MODEL = "MODEL"
    BAND_MAP = "BAND_MAP"
    LEVEL = "LEVEL"
    OFFSET = "OFFSET"
    MODE = "MODE"
    BUFFER = "BUFFER"
    THRESHOLD = "THRESHOLD"
    RESOLUTION = "RESOLUTION"
    MIN_AREA = "MIN_AREA"
    PRECISION = "PRECISION"
    OUTPUT = "OUTPUT"
    OUTPUT_PROBABILITY = "OUTPUT_PROBABILITY"
    OUTPUT_POLYGONS = "OUTPUT_POLYGONS"
    CLOUD_FRACTION = "CLOUD_FRACTION"
    SHADOW_FRACTION = "SHADOW_FRACTION"
    CLOUD_PIXELS = "CLOUD_PIXELS"
    SHADOW_PIXELS = "SHADOW_PIXELS"
    VALID_PIXELS = "VALID_PIXELS"
    THRESHOLD_USED = "THRESHOLD_USED"
    DEVICE_USED = "DEVICE_USED"
    MODEL_USED = "MODEL_USED"
    LEVEL_USED = "LEVEL_USED"
    OFFSET_USED = "OFFSET_USED"

    def __init__(self) -> None:
        super().__init__()
        self.models = model_choices()

    # ------------------------------------------------------------------ metadata
    def shortHelpString(self) -> str:  # noqa: N802
        return self.tr(
            "<p>Marks <b>clouds and cloud shadows</b> in a Sentinel-2 image with a U-Net segmentation network and "
            "writes a class raster, optionally the per-class probabilities and polygons.</p>"
            "<h3>Input</h3>"
            "<p>A file-based Sentinel-2 raster in <b>digital numbers</b> (reflectance &times; 10,000), L1C or L2A, "
            "or a .SAFE product / its zip. The model decides which bands it needs (e.g. B2, B3, B4, B8); they "
            "are found from the band descriptions, or for a 13-band L1C / 12-band L2A stack from the band "
            "count. Anything else (a 4-band raster without descriptions, bands described as 'Red Edge', "
            "8-bit renderings, 0–1 reflectance) is refused with a message listing the bands seen: name the "
            "bands with <i>Band map</i>, e.g. <code>B2=1, B3=2, B4=3, B8=4</code>. Pixels that are nodata, or 0 "
            "in every band, stay nodata.</p>"
            "<p><i>Product level</i> (L1C/L2A) is detected from the bands, metadata or file name (MSIL1C / "
            "MSIL2A) and picks the model trained on that level. <i>Offset</i>: products of processing baseline "
            "04.00 and later (since 2022-01-25) store DN = 10,000 &times; reflectance + 1,000; the offset is "
            "taken from the BOA_ADD_OFFSET / RADIO_ADD_OFFSET metadata, the baseline or the date. The log says "
            "what was decided.</p>"
            "<h3>Model</h3>"
            "<p><i>Auto</i> picks the best bundled model for the bands present: with B2, B3, B4 and B8 the 4-band "
            "ukis-csmask U-Net (EfficientNet-B4, cloud + shadow, runs at 30 m; chosen over the 6-band model "
            "because it measured better on the hand-labelled scene, see the README); with RGB only the seed's "
            "RGB U-Net (cloud / clear only, weaker: no shadow, snow comes out as cloud). The network runs at "
            "the model's resolution and its probabilities are resampled back to the layer's grid.</p>"
            "<h3>Outputs</h3><ul>"
            "<li><b>Cloud mask</b>: GeoTIFF uint8 on the input's grid: <b>0 clear, 1 cloud, 2 shadow, 255 "
            "nodata</b> (<i>Cloud only</i> mode: 0 clear, 1 cloud), with a palette and legend in QGIS.</li>"
            "<li><b>Class probabilities</b> (optional): float32, one band per class, nodata &minus;1.</li>"
            "<li><b>Polygons</b> (optional): one dissolved multipolygon per class (field <i>class</i>: cloud or "
            "shadow, <i>value</i>, <i>area</i>, <i>parts</i>) in the input's CRS; parts smaller than "
            "<i>minimum polygon area</i> are dropped.</li>"
            "<li>Results: CLOUD_FRACTION, SHADOW_FRACTION (of valid pixels), CLOUD_PIXELS, SHADOW_PIXELS, "
            "VALID_PIXELS, MODEL_USED, LEVEL_USED, OFFSET_USED, THRESHOLD_USED, DEVICE_USED, RUNTIME_USED.</li></ul>"
            "<p><i>Buffer</i> dilates cloud and shadow by that many metres (cloud wins where both grow), as "
            "users of every cloud masker ask, to catch thin edges.</p>"
            "<h3>Limits</h3><p>Thin cirrus, snow and bright salt pans remain hard; check the mask before using "
            "it to discard data.</p>"
        ) + bundled_models_help(CLOUD_MASK)

    # ------------------------------------------------------------------ parameters
    def initAlgorithm(self, config=None):  # noqa: N802
        self.add(QgsProcessingParameterRasterLayer(self.INPUT, self.tr("Sentinel-2 layer (digital numbers)")),
                  "A Sentinel-2 L1C or L2A raster in digital numbers (reflectance x 10,000), or a .SAFE product.")
        labels = [self.tr("Auto (best bundled model for the layer's bands)")] + self.models[1:]
        self.add(QgsProcessingParameterEnum(self.MODEL, self.tr("Model"), options=labels, defaultValue=0),
                  "Which bundled model to run. Auto: the 4-band cloud + shadow model when B2, B3, B4, B8 are present, "
                  "the RGB-only model otherwise. A Model file (advanced) wins over this choice.")
        self.add(QgsProcessingParameterString(
            self.BAND_MAP, self.tr("Band map (empty: detect), e.g. B2=1, B3=2, B4=3, B8=4"), optional=True),
                  "Which band of the layer holds which Sentinel-2 band, for layers whose bands are not described. "
                  "Entries override the detected bands.")
        self.add(QgsProcessingParameterEnum(self.LEVEL, self.tr("Product level"),
                                            options=[self.tr(x) for x in LEVEL_LABELS], defaultValue=0),
                  "L1C (top of atmosphere) or L2A (surface reflectance); auto-detected from a B10 band, the "
                  "metadata or MSIL1C/MSIL2A in the file name.")
        self.add(QgsProcessingParameterEnum(self.MODE, self.tr("Output classes"),
                                            options=[self.tr(x) for _k, x in MODES], defaultValue=0),
                  "Cloud and shadow classes, or the seed's binary cloud mask (shadow written as clear).")
        self.add(QgsProcessingParameterNumber(self.BUFFER, self.tr("Buffer around cloud and shadow (m)"),
                                               QgsProcessingParameterNumber.Type.Double, defaultValue=0.0, minValue=0.0,
                                               maxValue=10000.0),
                  "Dilate cloud and shadow by this distance in metres (0: none). Cloud wins where both grow.")
        self.add_device()
        self.add_runtime()
        self.add(QgsProcessingParameterEnum(self.OFFSET, self.tr("DN offset"),
                                            options=[self.tr(x) for x in OFFSET_LABELS], defaultValue=0),
                  "Products of processing baseline 04.00 and later store DN = 10,000 x reflectance + 1,000. Auto "
                  "reads it from the metadata, the baseline or the acquisition date.", advanced=True)
        self.add(QgsProcessingParameterNumber(
            self.THRESHOLD, self.tr("Cloud probability threshold (binary models; empty: the model's)"),
            QgsProcessingParameterNumber.Type.Double, optional=True, minValue=0.0, maxValue=1.0),
                  "Only for one-channel (sigmoid) models such as the RGB model: probability at or above which a pixel "
                  "is cloud. Cloud + shadow models take the most probable class.", advanced=True)
        self.add(QgsProcessingParameterNumber(self.RESOLUTION, self.tr("Network resolution (m; empty: the model's)"),
                                               QgsProcessingParameterNumber.Type.Double, optional=True, minValue=0.0,
                                               maxValue=1000.0),
                  "Run the network at this ground resolution instead of the one in its card (30 m for the "
                  "ukis-csmask models). The result is always written on the layer's grid.", advanced=True)
        self.add_tiling(((self.TILE_SIZE, "Tile size (network pixels, multiple of 32; empty: the model's)",
                          "Tile edge in pixels at the network's resolution. Larger tiles are faster and use more "
                          "memory."),
                         (self.OVERLAP, "Tile overlap (network pixels; empty: the model's)",
                          "Overlap between tiles, blended smoothly."),
                         (self.BATCH_SIZE, "Batch size (tiles per step; empty: the model's)",
                          "Tiles sent to the network at once.")),
                        minimums=(32, 0, 1), maximums=(4096, 2048, 256))
        self.add_model_file()
        self.add(QgsProcessingParameterEnum(self.PRECISION, self.tr("Network precision"),
                                             options=[self.tr(label) for _key, label in PRECISIONS], defaultValue=0),
                  "float32 as the card's metrics were measured, or bfloat16 autocast (about 1.8x faster on CPUs "
                  "with bfloat16 instructions; a PyTorch option: with runtime auto it runs PyTorch).", advanced=True)
        self.add(QgsProcessingParameterNumber(self.MIN_AREA,
                                              self.tr("Minimum polygon area (layer CRS units², m² in UTM)"),
                                               QgsProcessingParameterNumber.Type.Double, defaultValue=0.0,
                                               minValue=0.0),
                  "Polygon parts smaller than this are dropped (only the polygons; the raster is not changed).",
                  advanced=True)
        self.add(QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("Cloud mask")),
                  "uint8 GeoTIFF: 0 clear, 1 cloud, 2 shadow, 255 nodata.")
        self.add(QgsProcessingParameterRasterDestination(self.OUTPUT_PROBABILITY, self.tr("Class probabilities"),
                                                          optional=True, createByDefault=False),
                  "float32 GeoTIFF, one band per class of the model, nodata -1.")
        self.add(QgsProcessingParameterFeatureSink(self.OUTPUT_POLYGONS, self.tr("Cloud and shadow polygons"),
                                                    QgsProcessing.SourceType.TypeVectorPolygon, optional=True,
                                                    createByDefault=False),
                  "One dissolved multipolygon per class (cloud, shadow).")
        for name, label in ((self.CLOUD_FRACTION, "Cloud fraction of valid pixels (0..1)"),
                            (self.SHADOW_FRACTION, "Shadow fraction of valid pixels (0..1)"),
                            (self.CLOUD_PIXELS, "Cloud pixels"), (self.SHADOW_PIXELS, "Shadow pixels"),
                            (self.VALID_PIXELS, "Valid pixels"), (self.THRESHOLD_USED, "Threshold used"),
                            (self.OFFSET_USED, "DN offset used")):
            self.addOutput(QgsProcessingOutputNumber(name, self.tr(label)))
        for name, label in ((self.DEVICE_USED, "Device used"), (self.MODEL_USED, "Model used"),
                            (self.LEVEL_USED, "Product level used")):
            self.addOutput(QgsProcessingOutputString(name, self.tr(label)))

    def checkParameterValues(self, parameters, context):  # noqa: N802
        """A Sentinel-2 product path (.SAFE folder, zip, MTD xml) as INPUT is not a layer QGIS can load, so
        the raster-layer check would refuse it: such an INPUT is accepted here and read by the core."""
        from ..core.errors import Sar2EoError
        from ..core.safe import is_product

        raw = parameters.get(self.INPUT)
        try:
            product = isinstance(raw, str) and is_product(raw)
        except Sar2EoError as exc:
            return False, str(exc)
        if not product:
            return super().checkParameterValues(parameters, context)
        for definition in self.parameterDefinitions():
            if definition.name() != self.INPUT and \
                    not definition.checkValueIsAcceptable(parameters.get(definition.name()), context):
                return False, self.tr(f"Incorrect parameter value for {definition.name()}")
        return True, ""

    def canExecute(self):  # noqa: N802
        return can_execute(CLOUD_MASK)

    # ------------------------------------------------------------------ run
    def processAlgorithm(self, parameters: Dict[str, Any], context: QgsProcessingContext,
                         feedback: QgsProcessingFeedback) -> Dict[str, Any]:  # noqa: N802
        import_inference(CLOUD_MASK)
        from ..core import cloud

        src, layer_name, layer = self._input(parameters, context)
        mask_path = geotiff_destination(self, parameters, self.OUTPUT, context, inputs=[src])
        prob_path = geotiff_destination(self, parameters, self.OUTPUT_PROBABILITY, context, inputs=[src])
        if prob_path and os.path.abspath(prob_path) == os.path.abspath(mask_path):
            raise QgsProcessingException(
                self.tr("The cloud mask and the class probabilities need different file names."))
        want_polygons = parameters.get(self.OUTPUT_POLYGONS) not in (None, "")
        if want_polygons:
            from .provider import NO_GEOMETRY

            dest = self.parameterAsOutputLayer(parameters, self.OUTPUT_POLYGONS, context) or ""
            ext = os.path.splitext(dest.split("|")[0])[1].lower().lstrip(".")
            if ext in NO_GEOMETRY:
                raise QgsProcessingException(self.tr(f"Polygons cannot be written to '{dest}': a .{ext} file holds "
                                                     "no geometry. Choose a GeoPackage (.gpkg), Shapefile or "
                                                     "GeoJSON."))
        min_area = self.parameterAsDouble(parameters, self.MIN_AREA, context)
        if min_area < 0:
            raise QgsProcessingException(self.tr(f"Minimum polygon area must be 0 or more, not {min_area}."))
        resolution = self.optional_number(parameters, self.RESOLUTION, context)
        # With polygons, the rasters are written under hidden names and put in place only once the polygons
        # are done too: a run cancelled or failed while polygonising leaves no new file and keeps old ones.
        staged = {path: temp_path(path) for path in (mask_path, prob_path) if path and want_polygons}
        req = cloud.CloudMaskRequest(
            src_path=src, dst_path=staged.get(mask_path, mask_path),
            model=self.enum_key(parameters, self.MODEL, context, self.models),
            model_path=model_file_path(self, parameters, context, self.MODEL_FILE),
            band_map=self.parameterAsString(parameters, self.BAND_MAP, context) or "",
            level=self.enum_key(parameters, self.LEVEL, context, s2product.LEVEL_CHOICES),
            offset=self.enum_key(parameters, self.OFFSET, context, s2product.OFFSET_CHOICES),
            mode=self.enum_key(parameters, self.MODE, context, [k for k, _l in MODES]),
            buffer_m=self.parameterAsDouble(parameters, self.BUFFER, context),
            threshold=self.optional_number(parameters, self.THRESHOLD, context),
            probability_path=staged.get(prob_path, prob_path) or None,
            device=self.device_key(parameters, context),
            tile_size=self.optional_number(parameters, self.TILE_SIZE, context, as_int=True),
            overlap=self.optional_number(parameters, self.OVERLAP, context, as_int=True),
            batch_size=self.optional_number(parameters, self.BATCH_SIZE, context, as_int=True),
            resolution_m=resolution if resolution else None,
            precision=self.enum_key(parameters, self.PRECISION, context, [k for k, _l in PRECISIONS]),
            layer_name=layer_name,
            runtime=self.runtime_key(parameters, context),
        )
        feedback.pushInfo(self.tr(f"Cloud mask of '{layer_name}'"))
        bridge = FeedbackAdapter(feedback, 0.0, 90.0 if want_polygons else 100.0)
        try:
            with sigterm_cancels(feedback), core_errors():
                check_cancelled(feedback)
                result = cloud.cloud_mask(req, bridge.progress, bridge.is_cancelled, bridge.log)
                pixels = result.class_pixels
                results: Dict[str, Any] = {
                    self.OUTPUT: mask_path,
                    self.OUTPUT_PROBABILITY: prob_path or None,
                    self.OUTPUT_POLYGONS: None,
                    self.CLOUD_FRACTION: result.fraction("cloud"),
                    self.SHADOW_FRACTION: result.fraction("shadow"),
                    self.CLOUD_PIXELS: pixels["cloud"],
                    self.SHADOW_PIXELS: pixels["shadow"],
                    self.VALID_PIXELS: result.valid_pixels,
                    self.THRESHOLD_USED: result.threshold,
                    self.DEVICE_USED: result.device,
                    self.RUNTIME_USED: result.runtime.label if result.runtime else "",
                    self.MODEL_USED: result.model,
                    self.LEVEL_USED: result.level or "unknown",
                    self.OFFSET_USED: result.offset,
                }
                feedback.pushInfo(
                    f"CLOUD_FRACTION = {results[self.CLOUD_FRACTION]:.4f}; SHADOW_FRACTION = "
                    f"{results[self.SHADOW_FRACTION]:.4f}; CLOUD_PIXELS = {pixels['cloud']}; SHADOW_PIXELS = "
                    f"{pixels['shadow']}; VALID_PIXELS = {result.valid_pixels}; model {result.model}; "
                    f"device {result.device}; runtime {results[self.RUNTIME_USED]}")
                if want_polygons:
                    results[self.OUTPUT_POLYGONS] = self._write_polygons(
                        parameters, context, feedback, layer, layer_name, staged[mask_path], min_area)
                    check_cancelled(feedback)
                    for final, temp in staged.items():
                        commit_output(temp, final)
                    staged = {}
        finally:
            remove_quietly(list(staged.values()))
        feedback.setProgress(100)
        set_post_processor(context, mask_path, lambda: _styler("mask"))
        if prob_path:
            set_post_processor(context, prob_path, lambda: _styler("probability"))
        return results

    def _input(self, parameters, context) -> Tuple[str, str, Optional[QgsRasterLayer]]:
        """(path the core reads, name for messages, layer or None). A Sentinel-2 product as downloaded
        (.SAFE folder, zip, MTD xml) is not a layer QGIS opens in one piece, and a product's subdataset
        layer has no file path: both go to the core as they are, which stacks their bands."""
        from ..core.errors import Sar2EoError
        from ..core.safe import is_product

        raw = parameters.get(self.INPUT)
        layer = None if isinstance(raw, str) and os.path.isdir(raw) else \
            self.parameterAsRasterLayer(parameters, self.INPUT, context)
        candidate = layer.source() if layer is not None and layer.isValid() else raw
        try:
            if isinstance(candidate, str) and is_product(candidate):
                name = layer.name() if layer is not None else os.path.basename(candidate.rstrip("/"))
                return candidate, name, layer
        except Sar2EoError as exc:
            raise QgsProcessingException(str(exc)) from exc
        return raster_source(self, parameters, self.INPUT, context)

    def _write_polygons(self, parameters, context, feedback, layer, layer_name, mask_path, min_area) -> str:
        crs = (layer if layer is not None and layer.isValid() else QgsRasterLayer(mask_path, "mask", "gdal")).crs()
        if crs.isGeographic() and min_area > 0:
            feedback.pushWarning(self.tr(f"Layer '{layer_name}' is in a geographic CRS: the minimum polygon area "
                                    f"{min_area:g} is read in degrees², not m². Reproject to UTM for m²."))
        per_class = class_polygons(mask_path, min_area, feedback, 90.0, 100.0)
        fields = QgsFields()
        for name, kind in (("class", "string"), ("value", "int"), ("area", "double"), ("parts", "int")):
            fields.append(_field(name, kind))
        sink, dest_id = self.parameterAsSink(parameters, self.OUTPUT_POLYGONS, context, fields,
                                             QgsWkbTypes.Type.MultiPolygon, crs)
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT_POLYGONS))
        for value, (geometry, n_parts, n_dropped) in per_class.items():
            area = geometry.area() if geometry is not None else 0.0
            feedback.pushInfo(f"{CLASS_NAMES[value].capitalize()} polygons: {n_parts} part(s), area {area:.6g} CRS "
                              f"units² ({n_dropped} part(s) smaller than {min_area:g} dropped)")
            if geometry is None:
                continue
            feature = QgsFeature(fields)
            feature.setGeometry(geometry)
            feature.setAttributes([CLASS_NAMES[value], value, area, n_parts])
            sink.addFeature(feature, QgsFeatureSink.Flag.FastInsert)
        set_post_processor(context, dest_id, lambda: _styler("polygons"))
        return dest_id


def _field(name: str, kind: str) -> QgsField:
    """A field of type "string", "int" or "double". QGIS 3.38 deprecated the QVariant.Type constructor (a
    warning on 3.40) for QMetaType.Type, which 3.22 does not have: each version gets its own."""
    if Qgis.QGIS_VERSION_INT >= 33800:
        from qgis.PyQt.QtCore import QMetaType

        types = {"string": QMetaType.Type.QString, "int": QMetaType.Type.Int, "double": QMetaType.Type.Double}
    else:
        types = {"string": QVariant.Type.String, "int": QVariant.Type.Int, "double": QVariant.Type.Double}
    return QgsField(name, types[kind])


def _styler(kind: str):
    from ..styling import styler

    return styler(kind)


# ---------------------------------------------------------------------- polygons
def _write_classes(mask_path: str, out_path: str, rows: int = 1024) -> Any:
    """Copy the mask keeping only the polygon classes (cloud, shadow; everything else 0 = nodata),
    strip by strip (bounded memory). Returns (dataset, spatial reference)."""
    import numpy as np
    from osgeo import gdal

    src = gdal.Open(mask_path)
    if src is None:
        raise QgsProcessingException(
            CloudMaskAlgorithm.tr(f"Cannot reopen the cloud mask {mask_path} to polygonise it."))
    band = src.GetRasterBand(1)
    w, h = src.RasterXSize, src.RasterYSize
    dst = gdal.GetDriverByName("GTiff").Create(out_path, w, h, 1, gdal.GDT_Byte,
                                               ["TILED=YES", "COMPRESS=DEFLATE", "BIGTIFF=IF_SAFER"])
    dst.SetGeoTransform(src.GetGeoTransform())
    dst.SetProjection(src.GetProjection())
    out = dst.GetRasterBand(1)
    out.SetNoDataValue(0)
    keep = np.zeros(256, dtype=np.uint8)
    keep[list(POLYGON_CLASSES)] = POLYGON_CLASSES
    for y in range(0, h, rows):
        n = min(rows, h - y)
        out.WriteArray(keep[band.ReadAsArray(0, y, w, n)], 0, y)
    out.FlushCache()
    srs = src.GetSpatialRef()
    src = None  # noqa: F841 - close
    return dst, srs


def class_polygons(mask_path: str, min_area: float, feedback: QgsProcessingFeedback, start: float = 0.0,
                   end: float = 100.0) -> Dict[int, Tuple[Optional[QgsGeometry], int, int]]:
    """Polygonise the mask's cloud and shadow pixels, dissolve them per class and drop parts smaller
    than ``min_area`` (CRS units squared). Returns {class value: (multipolygon or None, kept, dropped)}."""
    from osgeo import gdal, ogr

    tmp_dir = QgsProcessingUtils.tempFolder()
    stem = os.path.join(tmp_dir, f"sar2eo_clouds_{uuid.uuid4().hex[:8]}")
    classes_tif, polys_gpkg = stem + "_classes.tif", stem + "_polygons.gpkg"
    temps = [classes_tif, polys_gpkg]
    span = end - start
    try:
        dst, srs = _write_classes(mask_path, classes_tif)
        check_cancelled(feedback)
        band = dst.GetRasterBand(1)
        ds = ogr.GetDriverByName("GPKG").CreateDataSource(polys_gpkg)
        out_layer = ds.CreateLayer("clouds", srs=srs, geom_type=ogr.wkbPolygon)
        out_layer.CreateField(ogr.FieldDefn("value", ogr.OFTInteger))

        def on_progress(complete, _message, _data):
            feedback.setProgress(start + 0.6 * span * complete)
            return 0 if feedback.isCanceled() else 1

        # 4-connected regions of one value each; clear and nodata pixels are masked out (nodata 0).
        err = gdal.Polygonize(band, band.GetMaskBand(), out_layer, 0, [], callback=on_progress)
        count = out_layer.GetFeatureCount()
        ds = out_layer = band = dst = None  # noqa: F841 - close and flush the files
        check_cancelled(feedback)
        if err != 0:
            raise QgsProcessingException(CloudMaskAlgorithm.tr(f"GDAL could not polygonise the cloud mask {mask_path} "
                                            f"({gdal.GetLastErrorMsg()})."))
        parts: Dict[int, List[QgsGeometry]] = {value: [] for value in POLYGON_CLASSES}
        if count:
            # Dissolve. GDAL gives one polygon per 4-connected region of one value, with its holes, so the
            # regions of a class are already disjoint: no two share an edge, at most a corner. Their union
            # is therefore their collection, a valid multipolygon without internal boundaries, the same
            # geometry native:dissolve returns without GEOS unioning thousands of ragged polygons
            # (measured on a noisy 4096 x 4096 mask, 10,943 regions: dissolve 85 s, this < 2 s).
            polygons = QgsVectorLayer(f"{polys_gpkg}|layername=clouds", "clouds", "ogr")
            if not polygons.isValid():
                raise QgsProcessingException(
                    CloudMaskAlgorithm.tr(f"Cannot read the polygonised clouds back from {polys_gpkg}."))
            for i, feat in enumerate(polygons.getFeatures()):
                if i % 1000 == 0:
                    check_cancelled(feedback)
                    feedback.setProgress(start + span * (0.6 + 0.35 * i / count))
                geom = feat.geometry()
                if geom is None or geom.isEmpty() or feat["value"] not in parts:
                    continue
                parts[feat["value"]].extend(geom.asGeometryCollection() if geom.isMultipart() else [geom])
            polygons = None
        result: Dict[int, Tuple[Optional[QgsGeometry], int, int]] = {}
        for value, found in parts.items():
            kept = [p for p in found if p.area() >= min_area]
            geometry = None
            if kept:
                geometry = QgsGeometry.collectGeometry(kept)
                geometry.convertToMultiType()
            result[value] = (geometry, len(kept), len(found) - len(kept))
        feedback.setProgress(end)
        return result
    finally:
        for path in temps:
            remove_quietly([path, path + "-wal", path + "-shm", path + "-journal"])

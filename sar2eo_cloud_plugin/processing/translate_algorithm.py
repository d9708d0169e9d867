"""Processing algorithm ``sar2eo_cloud:translate_sar_to_eo`` — Sentinel-1 VV/VH -> Sentinel-2-like bands.

A thin shell over :func:`sar2eo_cloud_plugin.core.inference.translate_sar_to_eo`: reads the
parameters, calls the core with Processing's progress/cancel/log, turns core errors into
QgsProcessingException and styles the output when it is loaded. torch is imported only
inside ``processAlgorithm``.
"""
from __future__ import annotations

import re
from typing import Any, Dict

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputString,
    QgsProcessingParameterBand,
    QgsProcessingParameterEnum,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from ..core.bands import BAND_SET_KEYS, BAND_SETS
from ..core.cards import bundled_translation_notes
from ..core.tasks import TRANSLATE
from .base import Sar2EoAlgorithm
from .common import can_execute, import_inference
from .feedback import FeedbackAdapter, check_cancelled
from .guard import core_errors, sigterm_cancels
from .helptext import bundled_models_help
from .layers import geotiff_destination, raster_source, set_post_processor
from .params import band_number, model_path as model_file_path

UNITS_KEYS = ("auto", "dB", "linear")
UNITS_LABELS = ("Auto-detect (from the values and band descriptions)", "Decibels (dB)", "Linear power (sigma0)")


class TranslateSarToEoAlgorithm(Sar2EoAlgorithm):
    TASK_SPEC = TRANSLATE
    DISPLAY_NAME = "Translate SAR to EO (Sentinel-1 to Sentinel-2)"
    GROUP = "SAR to optical"
    GROUP_ID = "sar_to_optical"
    TAGS = ("sentinel-1", "sentinel-2", "sar", "optical", "translation", "cyclegan", "deep learning",
            "vv", "vh", "synthetic")

    INPUT = "INPUT"
    VV_BAND = "VV_BAND"
    VH_BAND = "VH_BAND"
    UNITS = "UNITS"
    BAND_SET = "BAND_SET"
    OUTPUT = "OUTPUT"
    DEVICE_USED = "DEVICE_USED"
    INPUT_UNITS = "INPUT_UNITS"

    # ------------------------------------------------------------------ metadata
    def shortHelpString(self) -> str:  # noqa: N802
        notes = bundled_translation_notes()
        sets = "".join(f"<li><b>{i}</b> {bs.label}"
                       + (f" — <b>{self.tr('experimental')}</b>: {notes[key].split(': ', 1)[1]}" if notes[key] else "")
                       + "</li>" for i, (key, bs) in enumerate(BAND_SETS.items()))
        return (
            "<p>Translates a Sentinel-1 radar image (VV and VH backscatter) into a <b>synthetic</b> "
            "Sentinel-2-like optical image with a CycleGAN ResNet generator (a deep-learning model).</p>"
            "<h3>Input</h3>"
            "<p>A file-based raster with Sentinel-1 GRD backscatter (sigma0), at least the VV and VH bands "
            "(choose them with <i>VV band</i> / <i>VH band</i>; when they are not set, band descriptions "
            "naming VV / VH decide, else bands 1 and 2; a band number that contradicts the descriptions is "
            "refused), ideally at 10 m. "
            "<i>Input units</i>: dB, linear power, or auto-detect — auto decides from the values and the band "
            "descriptions and writes its decision to the log and to the INPUT_UNITS result. Linear values "
            "&le; 0 and the input's nodata pixels become nodata. Rasters that are clearly not backscatter "
            "(one band, integer reflectance-like values) are refused with a message naming what was seen. "
            "The values win over band descriptions: linear power described as \"(dB)\" is read as linear. "
            "Auto also refuses float pairs that look like amplitude (square root of power: medians about "
            "0.1-0.5, VH/VV ratio about 0.4-0.6) or 0-1 optical reflectance (two strongly correlated bands); "
            "it cannot recognise amplitude of dark, water-dominated scenes, amplitude in dB, or weakly "
            "correlated optical bands (NIR and red): check what your file holds. A raster whose sampled "
            "pixels are all 0 (without a nodata value) or all one value is refused before the run.</p>"
            "<p>Normalisation as in training: dB clipped to VV &minus;25..0 dB and VH &minus;32.5..0 dB, "
            "scaled to &minus;1..1.</p>"
            f"<h3>Band set</h3><ul>{sets}</ul>"
            "<h3>Output</h3>"
            "<p>A GeoTIFF in the input's CRS, extent and pixel grid, <b>uint16 reflectance &times; 10,000</b> "
            "(as Sentinel-2 L2A digital numbers), <b>nodata 0</b> wherever the input is nodata, band "
            "descriptions B4, B3, … It opens with a 2–98 % stretched colour composite (true colour, or false "
            "colour B8/B11/B5 for the NIR set). Results: OUTPUT, DEVICE_USED, RUNTIME_USED, INPUT_UNITS.</p>"
            "<h3>Advanced</h3>"
            "<p>The scene is processed in overlapping tiles (<i>tile size</i>, <i>overlap</i> in pixels; "
            "overlaps are blended smoothly, so there are no seams) and <i>batch size</i> tiles at a time: "
            "lower them if memory runs out. <i>Device</i>: auto uses a CUDA GPU when PyTorch sees one. "
            "<i>Model file</i>: a model card (.json beside its .safetensors weights) to use instead of the "
            "bundled model; its sha256 is checked before use.</p>"
            "<h3>Limits</h3>"
            "<p>The result is a plausible <b>synthesis</b>, not a measurement: use it for visual "
            "interpretation and gap filling under clouds, not for quantitative reflectance or indices you "
            "would report. Quality depends on how close your scene is to the training data (sensor mode, "
            "season, region, resolution).</p>"
            + bundled_models_help(TRANSLATE)
        )

    # ------------------------------------------------------------------ parameters
    def initAlgorithm(self, config=None):  # noqa: N802
        self.add(QgsProcessingParameterRasterLayer(self.INPUT, self.tr("Sentinel-1 layer (VV and VH backscatter)")),
                 "A file-based Sentinel-1 GRD raster with at least the VV and VH backscatter (sigma0) bands.")
        # Flagged optional, with defaults: QGIS 3.22's band parameter treats a missing value as missing even
        # when it has a default, so `qgis_process run ... -- INPUT=... OUTPUT=...` (and scripts leaving the
        # bands out) would be refused. Unset = the default (1 and 2).
        for name, label, default in ((self.VV_BAND, "VV band", 1), (self.VH_BAND, "VH band", 2)):
            self.add(QgsProcessingParameterBand(name, self.tr(label), defaultValue=default,
                                                parentLayerParameterName=self.INPUT, optional=True),
                     f"The band holding {label[:2]} backscatter. Unset: the band described as {label[:2]}, "
                     f"else band {default}.")
        self.add(QgsProcessingParameterEnum(self.UNITS, self.tr("Input units"),
                                            options=[self.tr(x) for x in UNITS_LABELS], defaultValue=0),
                 "dB, linear power, or auto-detect from the values and band descriptions (logged, and returned "
                 "as INPUT_UNITS).")
        self.add(QgsProcessingParameterEnum(self.BAND_SET, self.tr("Output band set"),
                                            options=[BAND_SETS[k].label for k in BAND_SET_KEYS], defaultValue=0),
                 "Which Sentinel-2 bands to synthesise; each band set has its own bundled model.")
        self.add_device()
        self.add_runtime()
        self.add_tiling(((self.TILE_SIZE, "Tile size (pixels, multiple of 4)",
                          "Tile edge in input pixels. Larger tiles are faster and use more memory."),
                         (self.OVERLAP, "Tile overlap (pixels)", "Overlap between tiles, blended smoothly."),
                         (self.BATCH_SIZE, "Batch size (tiles per step)", "Tiles sent to the network at once.")),
                        defaults=(256, 32, 4), minimums=(16, 0, 1), maximums=(4096, 2048, 256), optional=False)
        self.add_model_file()
        self.add(QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("Translated (Sentinel-2-like)")),
                 "uint16 GeoTIFF, reflectance x 10,000, nodata 0, on the input's grid.")
        self.addOutput(QgsProcessingOutputString(self.DEVICE_USED, self.tr("Device used")))
        self.addOutput(QgsProcessingOutputString(self.INPUT_UNITS, self.tr("Input units used")))

    def canExecute(self):  # noqa: N802
        return can_execute(TRANSLATE)

    # ------------------------------------------------------------------ run
    def processAlgorithm(self, parameters: Dict[str, Any], context: QgsProcessingContext,
                         feedback: QgsProcessingFeedback) -> Dict[str, Any]:  # noqa: N802
        inference = import_inference(TRANSLATE)
        src, layer_name, _layer = raster_source(self, parameters, self.INPUT, context)
        out_path = geotiff_destination(self, parameters, self.OUTPUT, context, inputs=[src])
        set_index = self.parameterAsEnum(parameters, self.BAND_SET, context)
        units_index = self.parameterAsEnum(parameters, self.UNITS, context)
        if not 0 <= set_index < len(BAND_SET_KEYS):
            raise QgsProcessingException(f"Unknown band set option {set_index} "
                                         f"(0..{len(BAND_SET_KEYS) - 1}: {', '.join(BAND_SET_KEYS)}).")
        if not 0 <= units_index < len(UNITS_KEYS):
            raise QgsProcessingException(f"Unknown units option {units_index} (0 auto, 1 dB, 2 linear).")
        band_set_key = BAND_SET_KEYS[set_index]
        req = inference.TranslationRequest(
            src_path=src, dst_path=out_path, band_set=band_set_key,
            vv_band=band_number(self, parameters, self.VV_BAND, context, "VV band"),
            vh_band=band_number(self, parameters, self.VH_BAND, context, "VH band"),
            units=UNITS_KEYS[units_index],
            device=self.device_key(parameters, context),
            tile_size=self.parameterAsInt(parameters, self.TILE_SIZE, context),
            overlap=self.parameterAsInt(parameters, self.OVERLAP, context),
            batch_size=self.parameterAsInt(parameters, self.BATCH_SIZE, context),
            model_path=model_file_path(self, parameters, context, self.MODEL_FILE),
            layer_name=layer_name,
            runtime=self.runtime_key(parameters, context),
        )
        feedback.pushInfo(f"Translating '{layer_name}' to {BAND_SETS[band_set_key].label}")
        bridge = FeedbackAdapter(feedback)
        with sigterm_cancels(feedback), core_errors():
            check_cancelled(feedback)
            result = inference.translate_sar_to_eo(req, bridge.progress, bridge.is_cancelled, bridge.log)
        units = ""
        for line in list(result.messages) + bridge.lines:
            match = re.match(r"Input units: (\w+)", line)
            if match:
                units = match.group(1)
                break
        feedback.pushInfo(f"Wrote {out_path} ({result.run.valid_pixels} valid of {result.run.total_pixels} "
                          f"pixels, {result.run.tiles} tile(s), device {result.device}, runtime "
                          f"{result.runtime.label if result.runtime else 'unknown'})")
        set_post_processor(context, out_path, lambda: _translation_styler(band_set_key))
        return {self.OUTPUT: out_path, self.DEVICE_USED: result.device, self.INPUT_UNITS: units,
                self.RUNTIME_USED: result.runtime.label if result.runtime else ""}


def _translation_styler(band_set_key: str):
    from ..styling import styler

    return styler("translation", band_set_key)

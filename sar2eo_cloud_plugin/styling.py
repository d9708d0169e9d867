"""QGIS-side styling of the plugin's output layers (renderers only; nothing is computed here).

- Translation outputs (uint16 reflectance x 10,000): multiband colour renderer on bands 1, 2, 3
  (true colour B4/B3/B2 for "rgb" and "rgbn", false colour B8/B11/B5 for "nir_swir_re"), each band
  stretched between its 2 % and 98 % cumulative cut (fallback 0..3000 DN = reflectance 0..0.3).
- Cloud mask (uint8 0 clear / 1 cloud / 2 shadow / 255 nodata): paletted renderer with named classes.
- Class probabilities (float32 0..1, one band per class, nodata -1): grey stretch 0..1 of the cloud band.
- Cloud polygons: magenta outline, light translucent fill.

The Processing algorithms attach :class:`LayerStyler` post-processors so that styling happens
whenever QGIS loads an output on completion (Toolbox, batch and modeler alike).
"""
from __future__ import annotations

from typing import Callable, List, Optional, Tuple

from qgis.core import (
    QgsContrastEnhancement,
    QgsFillSymbol,
    QgsMapLayer,
    QgsMultiBandColorRenderer,
    QgsPalettedRasterRenderer,
    QgsProcessingLayerPostProcessorInterface,
    QgsRasterBandStats,
    QgsRasterLayer,
    QgsSingleBandGrayRenderer,
    QgsSingleSymbolRenderer,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QColor

REFLECTANCE_FALLBACK_DN: Tuple[float, float] = (0.0, 3000.0)   # reflectance 0..0.3
CUMULATIVE_CUT: Tuple[float, float] = (0.02, 0.98)
STRETCH_MIN_MAX = QgsContrastEnhancement.ContrastEnhancementAlgorithm.StretchToMinimumMaximum

MASK_CLASSES = (
    (0, QColor(0, 0, 0, 0), "Clear"),            # transparent: the imagery below shows through
    (1, QColor(255, 0, 255, 200), "Cloud"),      # magenta, readable over white clouds and imagery
    (2, QColor(255, 190, 0, 200), "Cloud shadow"),  # amber: readable over dark shadows and water
    (255, QColor(0, 0, 0, 0), "No data"),
)


def _band_cut(layer: QgsRasterLayer, band: int) -> Tuple[float, float]:
    """2-98 % cumulative cut of a band (estimated on a sample), or the reflectance fallback."""
    provider = layer.dataProvider()
    try:
        lo, hi = provider.cumulativeCut(band, CUMULATIVE_CUT[0], CUMULATIVE_CUT[1], layer.extent(), 250000)
    except Exception:  # noqa: BLE001 - any failure means "use the fallback"
        return REFLECTANCE_FALLBACK_DN
    if lo is None or hi is None or not hi > lo:
        stats = provider.bandStatistics(band, QgsRasterBandStats.Stats.Min | QgsRasterBandStats.Stats.Max)
        if stats.maximumValue > stats.minimumValue:
            return float(stats.minimumValue), float(stats.maximumValue)
        return REFLECTANCE_FALLBACK_DN
    return float(lo), float(hi)


def style_translation(layer: QgsRasterLayer, band_set_key: str = "rgb") -> None:
    """Multiband colour renderer on bands 1-3 with a per-band 2-98 % stretch.

    The band sets put their display bands first: rgb/rgbn = B4, B3, B2 (true colour),
    nir_swir_re = B8, B11, B5 (false colour: vegetation red/orange, water dark).
    """
    if not isinstance(layer, QgsRasterLayer) or not layer.isValid() or layer.bandCount() < 3:
        return
    provider = layer.dataProvider()
    renderer = QgsMultiBandColorRenderer(provider, 1, 2, 3)
    setters = (renderer.setRedContrastEnhancement, renderer.setGreenContrastEnhancement,
               renderer.setBlueContrastEnhancement)
    for band, setter in zip((1, 2, 3), setters):
        lo, hi = _band_cut(layer, band)
        ce = QgsContrastEnhancement(provider.dataType(band))
        ce.setContrastEnhancementAlgorithm(STRETCH_MIN_MAX, False)
        ce.setMinimumValue(lo)
        ce.setMaximumValue(hi)
        setter(ce)
    layer.setRenderer(renderer)
    layer.triggerRepaint()


def style_cloud_mask(layer: QgsRasterLayer) -> None:
    """Paletted renderer: Clear (transparent), Cloud (magenta), Cloud shadow (amber), No data (transparent)."""
    if not isinstance(layer, QgsRasterLayer) or not layer.isValid():
        return
    classes = [QgsPalettedRasterRenderer.Class(value, color, label) for value, color, label in MASK_CLASSES]
    layer.setRenderer(QgsPalettedRasterRenderer(layer.dataProvider(), 1, classes))
    layer.triggerRepaint()


def style_cloud_probability(layer: QgsRasterLayer) -> None:
    """Grey stretch of the cloud probability from 0 (black) to 1 (white). The bands are one per class,
    clear first and cloud second (docs/model_cards.md); a one-band file is the cloud probability."""
    if not isinstance(layer, QgsRasterLayer) or not layer.isValid():
        return
    provider = layer.dataProvider()
    band = 2 if layer.bandCount() >= 2 else 1
    renderer = QgsSingleBandGrayRenderer(provider, band)
    ce = QgsContrastEnhancement(provider.dataType(band))
    ce.setContrastEnhancementAlgorithm(STRETCH_MIN_MAX, False)
    ce.setMinimumValue(0.0)
    ce.setMaximumValue(1.0)
    renderer.setContrastEnhancement(ce)
    layer.setRenderer(renderer)
    layer.triggerRepaint()


def style_cloud_polygons(layer: QgsVectorLayer) -> None:
    if not isinstance(layer, QgsVectorLayer) or not layer.isValid():
        return
    symbol = QgsFillSymbol.createSimple({"color": "255,0,255,60", "outline_color": "255,0,255,255",
                                         "outline_width": "0.4", "outline_width_unit": "MM"})
    layer.setRenderer(QgsSingleSymbolRenderer(symbol))
    layer.triggerRepaint()


class LayerStyler(QgsProcessingLayerPostProcessorInterface):
    """Post-processor that styles an output layer when Processing loads it on completion.

    Lifetime: ``setPostProcessor`` transfers the C++ object to the QgsProcessingContext, which
    deletes it when the context goes away; but QGIS holds no reference to the *Python* object, so
    without one kept here it would be garbage-collected and the override lost. So: a fresh instance
    per output (never reuse one, its C++ side dies with its context), created by :func:`styler`,
    which keeps it in ``_LIVE`` until the context has deleted it.
    """

    def __init__(self, style: Callable[[QgsMapLayer], None]) -> None:
        super().__init__()
        self._style = style

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 (QGIS's name)
        try:
            self._style(layer)
        except Exception as exc:  # noqa: BLE001 - a styling problem must not fail the run
            if feedback is not None:
                feedback.reportError(f"Could not style layer '{layer.name()}': {exc}", False)


_LIVE: List[LayerStyler] = []


def _prune() -> None:
    """Forget post-processors whose C++ side their context has already deleted."""
    from qgis.PyQt import sip

    _LIVE[:] = [p for p in _LIVE if not sip.isdeleted(p)]


def style_function(kind: str, band_set_key: Optional[str] = None) -> Callable[[QgsMapLayer], None]:
    if kind == "translation":
        key = band_set_key or "rgb"
        return lambda layer: style_translation(layer, key)
    if kind == "mask":
        return style_cloud_mask
    if kind == "probability":
        return style_cloud_probability
    if kind == "polygons":
        return style_cloud_polygons
    raise ValueError(f"unknown styler kind {kind}")


def styler(kind: str, band_set_key: Optional[str] = None) -> LayerStyler:
    """A new post-processor for ``kind`` ('translation', 'mask', 'probability' or 'polygons'), kept
    alive until its context deletes it. Pass it to ``LayerDetails.setPostProcessor`` once."""
    _prune()
    post_processor = LayerStyler(style_function(kind, band_set_key))
    _LIVE.append(post_processor)
    return post_processor

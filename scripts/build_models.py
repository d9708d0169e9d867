"""Build the graphical models shipped in ``sar2eo_cloud_plugin/processing/models/`` (``.model3``).

The models are written with the Processing API (QgsProcessingModelAlgorithm + child algorithms)
rather than by hand, so they stay valid for the algorithms' current parameters; re-run this after
changing a parameter of an algorithm a model uses, then check the result opens in the modeler.

    QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/build_models.py

Each model is reloaded from the written file and checked (children resolve to registered
algorithms, the parameters and outputs are there) before the script reports success.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["QT_HASH_SEED"] = "0"  # deterministic XML attribute order: rebuilding gives the same files
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from qgis.core import (  # noqa: E402
    QgsApplication,
    QgsProcessingModelAlgorithm,
    QgsProcessingModelChildAlgorithm,
    QgsProcessingModelChildParameterSource as Source,
    QgsProcessingModelOutput,
    QgsProcessingModelParameter,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
)
from qgis.PyQt.QtCore import QPointF  # noqa: E402

from sar2eo_cloud_plugin.core.tasks import CLOUD_MASK, TRANSLATE  # noqa: E402

MODELS_DIR = REPO / "sar2eo_cloud_plugin" / "processing" / "models"
GROUP, GROUP_ID = "Models", "models"


def _param(model, definition, x, y, advanced=False):
    if advanced:
        definition.setFlags(definition.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
    component = QgsProcessingModelParameter(definition.name())
    component.setPosition(QPointF(x, y))
    model.addModelParameter(definition, component)


def _child(alg_id, child_id, description, x, y, params, outputs):
    """``params``: name -> Source; ``outputs``: model output name -> (child output, description, mandatory)."""
    child = QgsProcessingModelChildAlgorithm(alg_id)
    if child.algorithm() is None:
        raise SystemExit(f"algorithm {alg_id} is not registered; is the plugin's provider importable?")
    child.setChildId(child_id)
    child.setDescription(description)
    child.setPosition(QPointF(x, y))
    for name, source in params.items():
        child.addParameterSources(name, [source])
    # Like the modeler does: every other input parameter gets its default as a static value, so the
    # model is valid and a later change of the algorithm's default does not silently change the model.
    for definition in child.algorithm().parameterDefinitions():
        if definition.isDestination() or definition.name() in params or definition.defaultValue() is None:
            continue
        child.addParameterSources(definition.name(), [Source.fromStaticValue(definition.defaultValue())])
    model_outputs = {}
    for i, (name, (child_output, label, mandatory)) in enumerate(outputs.items()):
        out = QgsProcessingModelOutput(name, label)
        out.setChildId(child_id)
        out.setChildOutputName(child_output)
        out.setMandatory(mandatory)
        out.setPosition(QPointF(x + 200, y + 60 + 40 * i))
        model_outputs[name] = out
    child.setModelOutputs(model_outputs)
    return child


def _scene_inputs(model, sentinel2_label: str) -> None:
    """The inputs both shipped models share: the scene pair, band set, device, polygon area, model files."""
    from sar2eo_cloud_plugin.core.bands import BAND_SET_KEYS, BAND_SETS
    from sar2eo_cloud_plugin.core.tasks import DEVICE_LABELS

    _param(model, QgsProcessingParameterRasterLayer("SENTINEL1", "Sentinel-1 layer (VV and VH backscatter)"), 120, 80)
    _param(model, QgsProcessingParameterRasterLayer("SENTINEL2", sentinel2_label), 120, 320)
    _param(model, QgsProcessingParameterEnum("BAND_SET", "Translated band set",
                                             options=[BAND_SETS[k].label for k in BAND_SET_KEYS], defaultValue=0),
           120, 160)
    _param(model, QgsProcessingParameterEnum("DEVICE", "Compute device", options=list(DEVICE_LABELS), defaultValue=0),
           120, 240)
    _param(model, QgsProcessingParameterNumber("MIN_AREA", "Minimum cloud polygon area (m²)",
                                               QgsProcessingParameterNumber.Double, defaultValue=0.0, minValue=0.0),
           120, 400, advanced=True)
    _param(model, QgsProcessingParameterFile(
        "SAR2EO_MODEL_FILE", "Translation model file (.json card; empty = the bundled model)",
        behavior=QgsProcessingParameterFile.File, extension="json", optional=True), 120, 480, advanced=True)
    _param(model, QgsProcessingParameterFile(
        "CLOUD_MODEL_FILE", "Cloud model file (.json card; empty = the bundled model)",
        behavior=QgsProcessingParameterFile.File, extension="json", optional=True), 120, 560, advanced=True)


def _translate_child(outputs) -> QgsProcessingModelChildAlgorithm:
    """Translate SAR to EO fed from the shared inputs (VV band 1, VH band 2, units detected)."""
    return _child(
        TRANSLATE.algorithm_id, "translate", "Translate SAR to EO", 480, 140,
        {"INPUT": Source.fromModelParameter("SENTINEL1"),
         "VV_BAND": Source.fromStaticValue(1), "VH_BAND": Source.fromStaticValue(2),
         "UNITS": Source.fromStaticValue(0),
         "BAND_SET": Source.fromModelParameter("BAND_SET"),
         "DEVICE": Source.fromModelParameter("DEVICE"),
         "MODEL_FILE": Source.fromModelParameter("SAR2EO_MODEL_FILE")},
        outputs)


CLOUD_MASK_OUTPUT = ("OUTPUT", "Cloud mask (0 clear, 1 cloud, 2 shadow, 255 nodata)", True)


def _cloudmask_child(extra_params, outputs) -> QgsProcessingModelChildAlgorithm:
    """Cloud mask fed from the shared inputs; ``extra_params`` adds or overrides child parameters."""
    return _child(
        CLOUD_MASK.algorithm_id, "cloudmask", "Cloud mask (Sentinel-2)", 480, 380,
        {"INPUT": Source.fromModelParameter("SENTINEL2"),
         "DEVICE": Source.fromModelParameter("DEVICE"),
         "MIN_AREA": Source.fromModelParameter("MIN_AREA"),
         "MODEL_FILE": Source.fromModelParameter("CLOUD_MODEL_FILE"),
         **extra_params},
        outputs)


def translate_and_cloud_mask() -> QgsProcessingModelAlgorithm:
    model = QgsProcessingModelAlgorithm("Translate SAR and mask clouds of the same area", GROUP, GROUP_ID)
    _scene_inputs(model, "Sentinel-2 layer of the same area")

    model.addChildAlgorithm(_translate_child({"EO": ("OUTPUT", "Translated Sentinel-2-like layer", True)}))
    model.addChildAlgorithm(_cloudmask_child({}, {"CLOUD_MASK": CLOUD_MASK_OUTPUT,
                                                  "CLOUD_POLYGONS": ("OUTPUT_POLYGONS", "Cloud and shadow polygons",
                                                                     False)}))
    model.updateDestinationParameters()
    model.setHelpContent({
        "ALG_DESC": (
            "Translates a Sentinel-1 scene (VV and VH backscatter, dB or linear) into a Sentinel-2-like "
            "layer with the chosen band set, and masks the clouds of a Sentinel-2 scene of the same area: "
            "the two products you compare when clouds hide the optical view. Runs the plugin's "
            "'Translate SAR to EO' and 'Cloud mask (Sentinel-2)' algorithms; open it in the Graphical "
            "Modeler (Processing > Graphical Modeler > Open Model: the .model3 file in the plugin's "
            "processing/models folder; save your copy elsewhere) to change their options or add steps. "
            "The translated layer is a model prediction, not an observation."),
        "ALG_CREATOR": "SAR2EO & Cloud plugin",
        "ALG_HELP_CREATOR": "SAR2EO & Cloud plugin",
        "ALG_VERSION": "1",
        "SHORT_DESCRIPTION": "Translate a Sentinel-1 scene to EO and mask the clouds of a Sentinel-2 scene.",
        "SENTINEL1": "Sentinel-1 GRD layer with VV as band 1 and VH as band 2 (dB or linear power; detected).",
        "SENTINEL2": "Sentinel-2 layer (L1C 13-band, L2A 12-band, or bands described as B2, B3, B4, B8; detected).",
        "BAND_SET": "Bands of the translated layer: RGB (B4, B3, B2), NIR + SWIR + Red-Edge (B8, B11, B5) "
                    "or RGB + NIR.",
        "DEVICE": "Auto uses a CUDA GPU when PyTorch sees one, else the CPU.",
        "MIN_AREA": "Cloud polygons smaller than this area (m²) are dropped.",
        "SAR2EO_MODEL_FILE": "Advanced: a translation model card (.json beside its .safetensors) to use instead of "
                             "the bundled one.",
        "CLOUD_MODEL_FILE": "Advanced: a cloud model card (.json) to use instead of the bundled one.",
        "translate:EO": "GeoTIFF, uint16 reflectance x 10,000 (nodata 0), on the Sentinel-1 grid.",
        "cloudmask:CLOUD_MASK": "GeoTIFF, uint8: 0 clear, 1 cloud, 2 shadow, 255 nodata, on the Sentinel-2 grid.",
        "cloudmask:CLOUD_POLYGONS": "Optional: one dissolved polygon per class (cloud, shadow).",
    })
    return model


def sar_under_clouds() -> QgsProcessingModelAlgorithm:
    """A chain: the cloud polygons of the Sentinel-2 scene cut the translated Sentinel-1 scene."""
    model = QgsProcessingModelAlgorithm("Translated SAR under the clouds of a Sentinel-2 scene", GROUP, GROUP_ID)
    _scene_inputs(model, "Cloudy Sentinel-2 layer of the same area")
    _param(model, QgsProcessingParameterNumber("BUFFER", "Buffer around cloud and shadow (m)",
                                               QgsProcessingParameterNumber.Double, defaultValue=30.0, minValue=0.0,
                                               maxValue=10000.0), 120, 640)
    model.addChildAlgorithm(_translate_child({}))
    # Cloud and shadow both hide the optical view: the polygons of both classes, grown by the buffer.
    model.addChildAlgorithm(_cloudmask_child({"OUTPUT_POLYGONS": Source.fromStaticValue("TEMPORARY_OUTPUT"),
                                              "MODE": Source.fromStaticValue(0),
                                              "BUFFER": Source.fromModelParameter("BUFFER")},
                                             {"CLOUD_MASK": CLOUD_MASK_OUTPUT}))
    # Output of the two steps in, one layer out: the translated pixels that fall inside the clouds,
    # on the Sentinel-1 grid (not cropped, so it overlays the scene pixel for pixel); 0 = nodata.
    model.addChildAlgorithm(_child(
        "gdal:cliprasterbymasklayer", "clip", "Keep the translation under the clouds", 820, 260,
        {"INPUT": Source.fromChildOutput("translate", "OUTPUT"),
         "MASK": Source.fromChildOutput("cloudmask", "OUTPUT_POLYGONS"),
         "NODATA": Source.fromStaticValue(0),
         "CROP_TO_CUTLINE": Source.fromStaticValue(False),
         "KEEP_RESOLUTION": Source.fromStaticValue(True)},
        {"EO_UNDER_CLOUDS": ("OUTPUT", "Translated SAR under the clouds", True)}))
    model.updateDestinationParameters()
    model.setHelpContent({
        "ALG_DESC": (
            "Where clouds and their shadows hide a Sentinel-2 scene, shows what the Sentinel-1 scene of the "
            "same area translates to: masks cloud and cloud shadow in the Sentinel-2 layer (polygons grown by "
            "the buffer), translates the Sentinel-1 layer to a Sentinel-2-like layer, and keeps the "
            "translated pixels inside those polygons (GDAL 'Clip raster by mask layer'). Put the result "
            "above the Sentinel-2 layer to fill its gaps. To change the steps, open the .model3 file "
            "(plugin folder processing/models) "
            "in the Graphical Modeler and save your copy elsewhere. The translated pixels are model "
            "predictions, not observations."),
        "ALG_CREATOR": "SAR2EO & Cloud plugin",
        "ALG_HELP_CREATOR": "SAR2EO & Cloud plugin",
        "ALG_VERSION": "1",
        "SHORT_DESCRIPTION": "Translate a Sentinel-1 scene and keep it where a Sentinel-2 scene is cloudy.",
        "SENTINEL1": "Sentinel-1 GRD layer with VV as band 1 and VH as band 2 (dB or linear power; detected).",
        "SENTINEL2": "Sentinel-2 layer of the same area (band layout detected).",
        "BAND_SET": "Bands of the translated layer: RGB (B4, B3, B2), NIR + SWIR + Red-Edge (B8, B11, B5) "
                    "or RGB + NIR.",
        "DEVICE": "Auto uses a CUDA GPU when PyTorch sees one, else the CPU.",
        "MIN_AREA": "Cloud and shadow polygons smaller than this area (m²) are not filled.",
        "BUFFER": "Cloud and shadow are grown by this distance (m) before the translation fills them.",
        "SAR2EO_MODEL_FILE": "Advanced: a translation model card (.json) to use instead of the bundled one.",
        "CLOUD_MODEL_FILE": "Advanced: a cloud model card (.json) to use instead of the bundled one.",
        "cloudmask:CLOUD_MASK": "GeoTIFF, uint8: 0 clear, 1 cloud, 2 shadow, 255 nodata, on the Sentinel-2 grid.",
        "clip:EO_UNDER_CLOUDS": "GeoTIFF on the Sentinel-1 grid: translated reflectance x 10,000 inside the "
                                "clouds and shadows, 0 (nodata) elsewhere.",
    })
    return model


MODELS = {"translate_and_cloud_mask": translate_and_cloud_mask, "sar_under_clouds": sar_under_clouds}


def check(path: Path) -> None:
    model = QgsProcessingModelAlgorithm()
    if not model.fromFile(str(path)):
        raise SystemExit(f"{path} does not load back")
    for child_id, child in model.childAlgorithms().items():
        if child.algorithm() is None:
            raise SystemExit(f"{path}: child {child_id} ({child.algorithmId()}) does not resolve")
    ok, errors = model.validate() if hasattr(model, "validate") else (True, [])
    if not ok:
        raise SystemExit(f"{path}: invalid model: {errors}")
    params = [p.name() for p in model.parameterDefinitions()]
    print(f"{path.name}: '{model.displayName()}', {len(model.childAlgorithms())} steps, parameters {params}")


def main() -> int:
    app = QgsApplication([], False)
    app.initQgis()
    sys.path.append(os.path.join(QgsApplication.pkgDataPath(), "python", "plugins"))
    from processing.core.Processing import Processing  # registers the GDAL provider a model uses

    Processing.initialize()
    from sar2eo_cloud_plugin.processing.provider import Sar2EoCloudProvider

    provider = Sar2EoCloudProvider()
    QgsApplication.processingRegistry().addProvider(provider)
    MODELS_DIR.mkdir(parents=True, exist_ok=True)
    for name, build in MODELS.items():
        path = MODELS_DIR / f"{name}.model3"
        model = build()
        if not model.toFile(str(path)):
            raise SystemExit(f"could not write {path}")
        check(path)
    QgsApplication.processingRegistry().removeProvider(provider)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Which loaded layers look like Sentinel-1 / Sentinel-2, and the parameters a run uses.

Kept small and side-effect free so the dock, the layer-tree actions and the tests share it.
"""
from __future__ import annotations

import os
import re
from typing import Dict, List, Optional

from qgis.core import QgsMapLayer, QgsMapLayerType, QgsProcessingOutputLayerDefinition, QgsProject, QgsRasterLayer

from ..core.bands import BAND_SET_KEYS, canonical_s2_band
from ..core.tasks import CLOUD_MASK, TASKS, TRANSLATE, device_index, task as task_spec

ALG_IDS = {t.key: t.algorithm_id for t in TASKS}
TEMPORARY_OUTPUT = "TEMPORARY_OUTPUT"

_BAND_NAME = re.compile(r"^Band\s+\d+\s*:?\s*")


def band_descriptions(layer: QgsMapLayer) -> List[str]:
    """Band descriptions as GDAL stores them ('' where none): QGIS shows 'Band 1: VV (dB)'."""
    if not isinstance(layer, QgsRasterLayer) or not layer.isValid():
        return []
    return [_BAND_NAME.sub("", layer.bandName(i)).strip() for i in range(1, layer.bandCount() + 1)]


def _polarisation(desc: str) -> Optional[str]:
    match = re.search(r"\b(VV|VH|HH|HV)\b", desc.upper())
    return match.group(1) if match else None


def sar_bands(layer: QgsMapLayer) -> Optional[tuple]:
    """(VV band, VH band) from the band descriptions, or None when they do not say."""
    pols = [_polarisation(d) for d in band_descriptions(layer)]
    if "VV" in pols and "VH" in pols:
        return pols.index("VV") + 1, pols.index("VH") + 1
    return None


def is_raster(layer: QgsMapLayer) -> bool:
    return layer is not None and layer.type() == QgsMapLayerType.RasterLayer and layer.isValid()


def looks_like_s1(layer: QgsMapLayer) -> bool:
    """Two bands, or bands described as VV and VH."""
    if not is_raster(layer):
        return False
    return layer.bandCount() == 2 or sar_bands(layer) is not None


def looks_like_s2(layer: QgsMapLayer) -> bool:
    """At least three bands (and not SAR), or bands described as B2/B3/B4."""
    if not is_raster(layer) or sar_bands(layer) is not None:
        return False
    names = {canonical_s2_band(d) for d in band_descriptions(layer)}
    return layer.bandCount() >= 3 or {"B2", "B3", "B4"} <= names


def suggested_task(layer: QgsMapLayer) -> Optional[str]:
    if looks_like_s1(layer):
        return TRANSLATE.key
    if looks_like_s2(layer):
        return CLOUD_MASK.key
    return None


def missing_model(task: str, band_set: str = "rgb") -> Optional[str]:
    """The model a run with default settings needs when none of it is installed (inside the plugin or
    downloaded; a file check, no hashing), else None. Cloud mask: any of its models will do (auto)."""
    from ..core import modelstore

    names = task_spec(task).bundled_models() if task == CLOUD_MASK.key else [task_spec(task).bundled_model(band_set)]
    usable = (modelstore.INSTALLED, modelstore.BUNDLED)
    if any(modelstore.status(n) in usable for n in names):
        return None
    if task == CLOUD_MASK.key:   # name the model auto prefers (an L2A layer's), not the weak RGB one
        from ..core.cloud import AUTO_PREFERENCE

        preferred = AUTO_PREFERENCE[0].format(level="l2a")
        if preferred in names:
            return preferred
    return names[0] if names else task_spec(task).bundled_model(band_set)


def has_bundled_model(task: str, band_set: str = "rgb") -> bool:
    """Whether the model a run with default settings needs is installed (inside the plugin or downloaded)."""
    return missing_model(task, band_set) is None


def output_name(task: str, layer: QgsMapLayer, band_set: str = "rgb") -> str:
    if task == TRANSLATE.key:
        return f"{layer.name()} SAR2EO {band_set}"
    return f"{layer.name()} cloud mask"


def unique_output_path(folder: str, task: str, layer: QgsMapLayer, band_set: str = "rgb") -> str:
    """A new GeoTIFF path in ``folder`` that does not exist yet."""
    stem = re.sub(r"[^\w.-]+", "_", output_name(task, layer, band_set)).strip("_") or "output"
    path = os.path.join(folder, stem + ".tif")
    n = 1
    while os.path.exists(path):
        n += 1
        path = os.path.join(folder, f"{stem}_{n}.tif")
    return path


def build_parameters(task: str, layer: QgsMapLayer, *, device: str = "auto", band_set: str = "rgb",
                     tile_size: Optional[int] = None, overlap: Optional[int] = None,
                     model_file: str = "", output: str = "", project: Optional[QgsProject] = None,
                     cloud_model: int = 0, cloud_mode: int = 0, buffer_m: float = 0.0) -> Dict:
    """Parameters for the plugin's Processing algorithm (names per the Processing contract).
    ``cloud_model``, ``cloud_mode`` and ``buffer_m`` apply to the cloud mask only.

    ``output`` empty = a temporary output. The destination is an output layer definition bound to
    ``project`` so the finished layer is loaded like the Processing dialog loads it.
    """
    project = project or QgsProject.instance()
    dest = QgsProcessingOutputLayerDefinition(output or TEMPORARY_OUTPUT, project)
    dest.destinationName = output_name(task, layer, band_set)
    params: Dict = {"INPUT": layer.id() if project.mapLayer(layer.id()) else layer.source(),
                    "DEVICE": device_index(device), "OUTPUT": dest}
    if task == TRANSLATE.key:
        params["BAND_SET"] = BAND_SET_KEYS.index(band_set) if band_set in BAND_SET_KEYS else 0
        vv_vh = sar_bands(layer)
        if vv_vh:
            params["VV_BAND"], params["VH_BAND"] = vv_vh
    elif task == CLOUD_MASK.key:
        # enum indices of the cloud-mask algorithm: MODEL (0 auto, then the bundled cards), MODE (0 classes,
        # 1 cloud only), BUFFER in metres
        params.update({"MODEL": int(cloud_model), "MODE": int(cloud_mode), "BUFFER": float(buffer_m)})
    else:
        raise ValueError(f"unknown task {task!r}")
    if tile_size:
        params["TILE_SIZE"] = int(tile_size)
    if overlap is not None:
        params["OVERLAP"] = int(overlap)
    if model_file:
        params["MODEL_FILE"] = model_file
    return params

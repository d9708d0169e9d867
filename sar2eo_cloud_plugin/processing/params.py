"""Reading the algorithms' own parameter values (band numbers, model file, output folder)."""
from __future__ import annotations

import os
from typing import Dict, Optional

from qgis.core import QgsProcessingAlgorithm, QgsProcessingContext, QgsProcessingException, QgsProperty

from ..core import outputs as safe
from ..core.errors import OutputError


def band_number(alg: QgsProcessingAlgorithm, parameters: Dict, name: str, context: QgsProcessingContext,
                label: str = "") -> Optional[int]:
    """A band-number parameter: None when not set, else an integer >= 1. ``0``, negative or
    non-numeric values are an error naming the parameter (they used to become band 1 silently)."""
    raw = parameters.get(name)
    if raw is None or raw == "":
        return None
    if isinstance(raw, QgsProperty):
        raw = alg.parameterAsInt(parameters, name, context)
    what = f"{name}{f' ({label})' if label else ''}"
    value: Optional[int] = None
    if isinstance(raw, bool):
        value = None
    elif isinstance(raw, int):
        value = raw
    elif isinstance(raw, float) and raw.is_integer():
        value = int(raw)
    elif isinstance(raw, str):
        text = raw.strip()
        if text.lstrip("+-").isdigit():
            value = int(text)
    if value is None:
        raise QgsProcessingException(f"{what} is {raw!r}: a band number must be a whole number (1 = the first band).")
    if value < 1:
        raise QgsProcessingException(f"{what} is {value}: band numbers start at 1 (the first band); "
                                     "leave it empty to use the default.")
    return value


def check_output_folder(path: str, what: str = "output") -> None:
    """Up-front check that the folder of output ``path`` can take a file (QgsProcessingException
    naming the folder and the cause: read-only file system, no permission, a parent that is a file)."""
    try:
        safe.check_output_folder(os.path.dirname(os.path.abspath(path)), what)
    except OutputError as exc:
        raise QgsProcessingException(str(exc)) from exc


def model_path(alg: QgsProcessingAlgorithm, parameters: Dict, context: QgsProcessingContext,
               name: str = "MODEL_FILE") -> Optional[str]:
    path = alg.parameterAsFile(parameters, name, context)
    if not path:
        return None
    if not os.path.isfile(path):
        raise QgsProcessingException(f"Model file not found: {path}")
    return path

"""The algorithms' dependency check: the one in :mod:`..deps`, said as a QgsProcessingException.

Kept free of torch: the heavy imports (torch, rasterio, the core's inference module) happen inside
:func:`import_inference`, called from ``processAlgorithm``, so the provider loads fast and even
without PyTorch. What each task needs, and which versions, is declared once, in ``deps.py`` (the
packages from the task's :class:`~..core.tasks.TaskSpec`); this module only asks it.
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Tuple

from qgis.core import QgsProcessingException

from ..core.tasks import TaskSpec
from ..deps import REQUIREMENTS, check_dependencies


def can_execute(task: TaskSpec) -> Tuple[bool, str]:
    """(True, "") when ``task`` can run here, else (False, what is missing and the pip command)."""
    report = check_dependencies()
    if report.can_run(task.key):
        return True, ""
    return False, report.message(task.key)


def import_inference(task: TaskSpec) -> ModuleType:
    """Import and return ``core.inference`` for ``task``, or raise a QgsProcessingException that names
    the missing packages (none is imported before they are all known to be there)."""
    report = check_dependencies()
    if not report.can_run(task.key):
        raise QgsProcessingException(report.message(task.key))
    runtime = report.runtime(task.key)
    try:
        if runtime:  # its main package first, so that a broken install fails here, in words
            importlib.import_module(REQUIREMENTS[runtime[0]].module)
        from ..core import inference
    except ImportError as exc:  # installed but broken (ABI mismatch, missing shared library, ...)
        raise QgsProcessingException(f"A run-time package failed to import: {exc}. "
                                     "Reinstall the packages listed in the plugin's README.") from exc
    return inference

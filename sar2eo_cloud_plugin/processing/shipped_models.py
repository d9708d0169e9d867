"""Graphical models shipped with the plugin (``processing/models/*.model3``), listed under its provider.

A model loaded with ``QgsProcessingModelAlgorithm.fromFile`` is named after the model's own
name (``name() == displayName()``, e.g. "Translate SAR and mask clouds of the same area"), so
added to a provider its id would be ``sar2eo_cloud:Translate SAR and mask clouds ...`` — with
spaces, and changing whenever the title is edited. :class:`ShippedModel` keeps the title for the
Toolbox but gives the model a stable id from its file name: ``models/translate_and_cloud_mask.model3``
-> ``sar2eo_cloud:translate_and_cloud_mask``, runnable as
``qgis_process.bin run sar2eo_cloud:translate_and_cloud_mask -- ...`` as well as by path.

``QgsProcessingProvider.addAlgorithm`` refuses a second algorithm with the same ``name()`` and
sets the provider on the model (so ``id()`` becomes ``<provider>:<name>``); ``createInstance`` is
overridden so that the copies Processing runs keep the stable name and the file's path.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List

from qgis.core import Qgis, QgsMessageLog, QgsProcessingModelAlgorithm

MODELS_DIR = Path(__file__).resolve().parent / "models"


class ShippedModel(QgsProcessingModelAlgorithm):
    """A ``.model3`` from the plugin, with a stable name taken from its file name."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self._path = str(path)
        self._stable_name = Path(path).stem
        if not self.fromFile(self._path):
            raise ValueError(f"cannot read model file {path}")
        self._title = super().name() or self._stable_name
        self._help_from_model()

    def _help_from_model(self) -> None:
        """Model outputs are clones of the child algorithm's output parameter, without help; the model's
        own help text for them (keyed ``<child>:<output>``, written by scripts/build_models.py) becomes
        their help, like the model's inputs have."""
        texts = self.helpContent() or {}
        for definition in self.parameterDefinitions():
            if not definition.help() and texts.get(definition.name()):
                definition.setHelp(texts[definition.name()])

    def name(self) -> str:
        return self._stable_name

    def displayName(self) -> str:  # noqa: N802
        return self._title

    def createInstance(self):  # noqa: N802
        return ShippedModel(self._path)


def model_files() -> List[Path]:
    return sorted(MODELS_DIR.glob("*.model3"))


def shipped_model_algorithms() -> List[QgsProcessingModelAlgorithm]:
    """One :class:`ShippedModel` per ``.model3`` file; an unreadable file is logged and left out."""
    algs: List[QgsProcessingModelAlgorithm] = []
    for path in model_files():
        try:
            algs.append(ShippedModel(os.fspath(path)))
        except Exception as exc:  # noqa: BLE001 - one bad model must not stop the provider loading
            QgsMessageLog.logMessage(f"Shipped model {path.name} not loaded: {exc}", "SAR2EO & Cloud",
                                     Qgis.MessageLevel.Warning)
    return algs

"""Processing algorithm ``sar2eo_cloud:download_models``: the model manager's downloads, headless.

    qgis_process run sar2eo_cloud:download_models -- MODELS=sar2eo_rgb MODELS=ukis_csmask_4b_l2a

Each model of the plugin's index (``model_index.json``) is downloaded into the models folder (the QGIS
profile's, or FOLDER), verified against its sha256 and only then put in place (:mod:`..core.modelstore`).
No network is used anywhere else in the plugin.
"""
from __future__ import annotations

from typing import Any, Dict, List

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputString,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterString,
)

from ..core import modelstore
from .base import Sar2EoAlgorithm
from .feedback import check_cancelled
from .guard import core_errors


class DownloadModelsAlgorithm(Sar2EoAlgorithm):
    NAME = "download_models"
    ICON = "dock.svg"
    DISPLAY_NAME = "Download models"
    GROUP = "Models"
    GROUP_ID = "models"
    TAGS = ("download", "model", "weights", "install", "offline")

    MODELS = "MODELS"
    FOLDER = "FOLDER"
    MIRROR = "MIRROR"
    INSTALLED = "INSTALLED"

    def shortHelpString(self) -> str:  # noqa: N802
        rows = "".join(f"<li><b>{e.name}</b> ({e.task}; {', '.join(e.bands)}; {e.total_bytes / 1e6:.0f} MB; "
                       f"{e.licence}; from {e.source})</li>" for e in modelstore.load_index())
        return self.tr(
            "<p>Downloads models the plugin's tools need into the models folder (under the QGIS profile unless "
            "another folder is chosen), checks each file's sha256 before it is used, and removes a download "
            "that does not match. An interrupted download resumes where it stopped.</p>"
            f"<h3>Models that can be downloaded</h3><ul>{rows}</ul>"
            "<p>The same as the dock's model manager (Models…), for scripts and <i>qgis_process</i>.</p>")

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        names = [e.name for e in modelstore.load_index()]
        param = QgsProcessingParameterEnum(self.MODELS, self.tr("Models"), options=names, allowMultiple=True,
                                           defaultValue=[])
        param.setUsesStaticStrings(True)   # MODELS=sar2eo_rgb on the command line, stable across index changes
        self.add(param, "The models to download, by name (several may be chosen).")
        self.add(QgsProcessingParameterFile(self.FOLDER, self.tr("Models folder (empty = the QGIS profile's)"),
                                            behavior=QgsProcessingParameterFile.Behavior.Folder, optional=True),
                 "Where the models go. Empty: the folder the plugin searches by default (set in the model "
                 "manager; <profile>/sar2eo_cloud/models unless changed).", advanced=True)
        self.add(QgsProcessingParameterString(self.MIRROR, self.tr("Mirror URL"), optional=True),
                 "A web folder that holds every model file under its own name (an intranet copy of the release "
                 "files); empty = the addresses in the model index.", advanced=True)
        self.addOutput(QgsProcessingOutputString(self.INSTALLED, self.tr("Installed model cards")))

    def processAlgorithm(self, parameters: Dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> Dict[str, Any]:
        names: List[str] = self.parameterAsEnumStrings(parameters, self.MODELS, context)
        if not names:
            raise QgsProcessingException(self.tr("Choose at least one model (MODELS)."))
        folder = self.parameterAsFile(parameters, self.FOLDER, context) or None
        mirror = self.parameterAsString(parameters, self.MIRROR, context).strip() or None
        installed = []
        with modelstore.archive_session(folder):    # several ukis models: their PyPI wheel is fetched once
            for i, name in enumerate(names):
                check_cancelled(feedback)
                feedback.pushInfo(self.tr(f"Model {name}: downloading and verifying"))

                def progress(done: int, total, i=i) -> None:
                    part = done / total if total else 0.0
                    feedback.setProgress(100.0 * (i + min(part, 1.0)) / len(names))

                with core_errors():
                    card = modelstore.install(name, store=folder, progress=progress, cancel=feedback.isCanceled,
                                              mirror=mirror, log=feedback.pushInfo)
                feedback.pushInfo(self.tr(f"Model {name} installed: {card}"))
                installed.append(str(card))
        return {self.INSTALLED: ";".join(installed)}

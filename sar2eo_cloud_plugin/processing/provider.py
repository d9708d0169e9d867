"""The "SAR2EO & Cloud" Processing provider (stable id ``sar2eo_cloud``)."""
from __future__ import annotations

import os

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from ..core.tasks import PROVIDER_ID

NO_GEOMETRY = {"csv", "xlsx", "xls", "ods", "dbf", "txt"}
ICON_PATH = os.path.join(os.path.dirname(os.path.dirname(__file__)), "icons", "icon.svg")


class Sar2EoCloudProvider(QgsProcessingProvider):
    def id(self) -> str:
        return PROVIDER_ID

    def name(self) -> str:
        return "SAR2EO & Cloud"

    def longName(self) -> str:  # noqa: N802
        return "SAR2EO & Cloud: Sentinel-1 to Sentinel-2 translation and cloud masking"

    def icon(self) -> QIcon:
        return QIcon(ICON_PATH)

    def supportedOutputRasterLayerExtensions(self):  # noqa: N802
        # The core writes tiled, compressed GeoTIFFs only.
        return ["tif"]

    def defaultRasterFileExtension(self) -> str:  # noqa: N802
        return "tif"

    def supportedOutputVectorLayerExtensions(self):  # noqa: N802
        # Polygons written to a format without geometry (a CSV, a spreadsheet, a bare .dbf) would lose their
        # geometry silently; Processing refuses a destination whose extension is not listed here.
        return [ext for ext in super().supportedOutputVectorLayerExtensions() if ext.lower() not in NO_GEOMETRY]

    def defaultVectorFileExtension(self, hasGeometry=True) -> str:  # noqa: N802
        return "gpkg"

    def loadAlgorithms(self) -> None:  # noqa: N802
        from .batch_algorithm import BatchFolderAlgorithm
        from .cloudmask_algorithm import CloudMaskAlgorithm
        from .download_algorithm import DownloadModelsAlgorithm
        from .shipped_models import shipped_model_algorithms
        from .translate_algorithm import TranslateSarToEoAlgorithm

        for alg in (TranslateSarToEoAlgorithm(), CloudMaskAlgorithm(), BatchFolderAlgorithm(),
                    DownloadModelsAlgorithm()):
            self.addAlgorithm(alg)
        for alg in shipped_model_algorithms():
            self.addAlgorithm(alg)

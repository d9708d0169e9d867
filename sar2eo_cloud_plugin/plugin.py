"""The QGIS plugin object: registers the Processing provider (and, with a GUI, the dock and actions).

Kept thin: everything that computes lives in ``core``; everything Processing-specific in ``processing``.
"""
from __future__ import annotations

from qgis.core import QgsApplication


class Sar2EoCloudPlugin:
    def __init__(self, iface) -> None:
        self.iface = iface
        self.provider = None

    def initProcessing(self) -> None:  # noqa: N802 (QGIS's name)
        """Called by QGIS (also by qgis_process) before initGui."""
        from .processing.provider import Sar2EoCloudProvider

        if self.provider is None:
            self.provider = Sar2EoCloudProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802
        self.initProcessing()

    def unload(self) -> None:
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None

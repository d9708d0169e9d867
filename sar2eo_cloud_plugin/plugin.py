"""The QGIS plugin object: registers the Processing provider and, with a GUI, the dock and actions.

Kept thin: everything that computes lives in ``core``; everything Processing-specific in
``processing``; the desktop GUI in ``gui`` (which runs the same Processing algorithms).
"""
from __future__ import annotations

from qgis.core import Qgis, QgsApplication, QgsMessageLog

LOG_TAG = "SAR2EO & Cloud"


class Sar2EoCloudPlugin:
    def __init__(self, iface) -> None:
        self.iface = iface
        self.provider = None
        self.deps = None
        self.settings = None
        self.dock = None
        self.dock_action = None
        self.actions = None
        self._resources = None
        self._deps_message = None
        from .profile import activate

        activate()   # packages installed from the dock and downloaded models, before anything checks for them

    def initProcessing(self) -> None:  # noqa: N802 (QGIS's name)
        """Called by QGIS (also by qgis_process) before initGui."""
        from .processing.provider import Sar2EoCloudProvider

        if self.provider is None:
            provider = Sar2EoCloudProvider()
            if QgsApplication.processingRegistry().addProvider(provider):
                self.provider = provider
            else:  # already registered by someone else: not ours to remove at unload
                QgsMessageLog.logMessage("The Processing provider 'sar2eo_cloud' was already registered; "
                                         "using that one.", LOG_TAG, Qgis.MessageLevel.Warning)

    # ---- GUI -------------------------------------------------------------------------------
    def initGui(self) -> None:  # noqa: N802
        self.initProcessing()
        try:
            from . import resources  # compiled from resources.qrc by the build (pyrcc5)

            self._resources = resources
        except ImportError:  # running from a source checkout: the gui falls back to icon files
            self._resources = None

        from qgis.PyQt.QtCore import Qt
        try:   # Qt 6 (QGIS 4) has QAction in QtGui, Qt 5 in QtWidgets
            from qgis.PyQt.QtGui import QAction
        except ImportError:
            from qgis.PyQt.QtWidgets import QAction

        from .deps import check_dependencies
        from .gui.actions import LayerActions, icon
        from .gui.dock import Sar2EoCloudDock
        from .gui.settings import PluginSettings

        self.deps = check_dependencies()
        self.report_dependencies()
        self.settings = PluginSettings()
        main = self.iface.mainWindow()

        self.dock = Sar2EoCloudDock(main, deps=self.deps, settings=self.settings)
        self.iface.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.dock)
        self.dock.hide()

        self.dock_action = QAction(icon("dock.svg"), "SAR2EO & Cloud panel", main)
        self.dock_action.setObjectName("sar2eo_dock_toggle")
        self.dock_action.setCheckable(True)
        self.dock_action.setToolTip("Show or hide the SAR2EO & Cloud panel")
        self.dock_action.toggled.connect(self._set_dock_visible)
        self.dock.visibilityChanged.connect(self._dock_visibility_changed)

        self.actions = LayerActions(self.iface, deps=self.deps, settings=self.settings, log=self.dock.append_log)
        self.actions.setup(self.dock_action)
        self.dock.dependenciesChanged.connect(self._dependencies_changed)

    def _dependencies_changed(self) -> None:
        """The dock's installer succeeded: everything uses the new check, and the warning goes."""
        self.deps = self.dock.deps
        if self.actions is not None:
            self.actions.deps = self.deps
        if self._deps_message is not None:
            try:
                self.iface.messageBar().popWidget(self._deps_message)
            except RuntimeError:   # the user closed it already
                pass
            self._deps_message = None
        self.report_dependencies()

    def report_dependencies(self) -> None:
        """One message bar entry + one log entry naming exactly what is missing and the pip command."""
        if self.deps is None or self.deps.ok:
            return
        text = self.deps.message()
        QgsMessageLog.logMessage(text, LOG_TAG, Qgis.MessageLevel.Warning)
        bar = self.iface.messageBar()
        bar.pushMessage("SAR2EO & Cloud", text + " Or press Install dependencies… in the SAR2EO & Cloud panel.",
                        Qgis.MessageLevel.Warning, 0)
        self._deps_message = bar.currentItem()   # removed again once the dock's installer has succeeded

    def _set_dock_visible(self, visible: bool) -> None:
        if self.dock is not None:
            self.dock.setVisible(visible)
            if visible:
                self.dock.raise_()

    def _dock_visibility_changed(self, visible: bool) -> None:
        if self.dock_action is not None and self.dock_action.isChecked() != visible:
            self.dock_action.blockSignals(True)
            self.dock_action.setChecked(visible)
            self.dock_action.blockSignals(False)

    def show_dock(self) -> None:
        if self.dock_action is not None:
            self.dock_action.setChecked(True)
        self._set_dock_visible(True)

    # ---- unload ----------------------------------------------------------------------------
    def unload(self) -> None:
        if self.actions is not None:
            self.actions.teardown()
            self.actions = None
        if self.dock is not None:
            self.dock.shutdown()
            try:
                self.dock.visibilityChanged.disconnect(self._dock_visibility_changed)
            except (TypeError, RuntimeError):
                pass
            self.iface.removeDockWidget(self.dock)
            self.dock.hide()
            self.dock.setParent(None)
            self.dock.deleteLater()
            self.dock = None
        if self.dock_action is not None:
            try:
                self.dock_action.toggled.disconnect(self._set_dock_visible)
            except (TypeError, RuntimeError):
                pass
            self.dock_action.deleteLater()
            self.dock_action = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
        # The compiled icons stay registered: the module stays imported, so a reload (same process)
        # would not register them again if they were cleaned up here.
        self._resources = None

"""Layer-tree context-menu entries, plugin menu and toolbar, and the one-click runs behind them.

On QGIS 3.22 the layer tree has no "menu about to show" hook for plugins, so the entries are
registered with ``iface.addCustomActionForLayerType(action, "", RasterLayer, allLayers=False)``
and attached to each matching layer with ``iface.addCustomActionForLayer`` (existing layers at
start-up, later ones from ``QgsProject.layersAdded``): "Translate SAR to EO" / "…" appear on
Sentinel-1-like rasters, "Cloud mask" / "…" on Sentinel-2-like rasters.

One click runs the algorithm with the remembered defaults in the background (same runner as the
dock); the "…" entries open the algorithm's Processing dialog prefilled with the layer.
"""
from __future__ import annotations

import os
from typing import Callable, Dict, List, Optional

from qgis.core import Qgis, QgsMapLayer, QgsMapLayerType, QgsMessageLog, QgsProject
from qgis.PyQt.QtCore import QFile, QObject
from qgis.PyQt.QtGui import QIcon

try:   # Qt 6 (QGIS 4) has QAction in QtGui, Qt 5 in QtWidgets
    from qgis.PyQt.QtGui import QAction
except ImportError:
    from qgis.PyQt.QtWidgets import QAction

from ..core.tasks import CLOUD_MASK, TASKS, TRANSLATE
from ..deps import FEATURE_LABELS, DependencyReport
from .layers import ALG_IDS, build_parameters, looks_like_s1, looks_like_s2, unique_output_path
from .runner import LOG_TAG, AlgorithmRun
from .settings import PluginSettings

MENU = "&SAR2EO && Cloud"
ICON_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "icons")


def icon(name: str) -> QIcon:
    """Icon from the compiled resources (``:/plugins/sar2eo_cloud_plugin/icons/…``), else the file."""
    resource = f":/plugins/sar2eo_cloud_plugin/icons/{name}"
    if QFile.exists(resource):
        return QIcon(resource)
    return QIcon(os.path.join(ICON_DIR, name))


LAYER_TESTS: Dict[str, Callable] = {TRANSLATE.key: looks_like_s1, CLOUD_MASK.key: looks_like_s2}


class LayerActions(QObject):
    """Owns every QAction of the plugin and their registration with ``iface``."""

    def __init__(self, iface, deps: Optional[DependencyReport] = None, settings: Optional[PluginSettings] = None,
                 log: Optional[Callable[[str, bool], None]] = None, parent: Optional[QObject] = None) -> None:
        super().__init__(parent)
        self.iface = iface
        self.deps = deps
        self.settings = settings or PluginSettings()
        self.log = log or (lambda _t, _e=False: None)
        self.layer_actions: Dict[str, QAction] = {}      # one-click entries, per task
        self.dialog_actions: Dict[str, QAction] = {}     # "…" entries, per task
        self.menu_actions: List[QAction] = []            # menu / toolbar entries
        self.toolbar = None
        self.runs: List[AlgorithmRun] = []
        self._layers_connected = False

    # ---- set-up / tear-down ----------------------------------------------------------------
    def setup(self, dock_action: Optional[QAction] = None) -> None:
        main = self.iface.mainWindow()
        for task, icon_name in ((t.key, t.icon) for t in TASKS):
            label = FEATURE_LABELS[task]
            one = QAction(icon(icon_name), label, main)
            one.setObjectName(f"sar2eo_{task}_layer")
            one.setToolTip(f"{label} with the default settings, in the background")
            one.triggered.connect(lambda _c=False, t=task: self.run_on_current_layer(t))
            dlg = QAction(icon(icon_name), f"{label}…", main)
            dlg.setObjectName(f"sar2eo_{task}_layer_dialog")
            dlg.triggered.connect(lambda _c=False, t=task: self.open_dialog_for_current_layer(t))
            self.layer_actions[task], self.dialog_actions[task] = one, dlg
            for action in (one, dlg):
                action.setEnabled(self._can_run(task))
                self.iface.addCustomActionForLayerType(action, "", QgsMapLayerType.RasterLayer, False)

        # Plugin menu and toolbar: the dock toggle, then one-click and dialog entries per task.
        self.toolbar = self.iface.addToolBar("SAR2EO & Cloud")
        self.toolbar.setObjectName("Sar2EoCloudToolbar")
        entries: List[QAction] = []
        if dock_action is not None:
            entries.append(dock_action)
        for task, icon_name in ((t.key, t.icon) for t in TASKS):
            label = FEATURE_LABELS[task]
            one = QAction(icon(icon_name), f"{label} (active layer)", main)
            one.setObjectName(f"sar2eo_{task}_menu")
            one.setToolTip(f"{label} on the active layer with the default settings")
            one.triggered.connect(lambda _c=False, t=task: self.run_on_current_layer(t))
            one.setEnabled(self._can_run(task))
            dlg = QAction(icon(icon_name), f"{label}…", main)
            dlg.setObjectName(f"sar2eo_{task}_menu_dialog")
            dlg.triggered.connect(lambda _c=False, t=task: self.open_dialog_for_current_layer(t))
            dlg.setEnabled(self._can_run(task))
            entries.extend([one, dlg])
            self.toolbar.addAction(one)
        if dock_action is not None:
            self.toolbar.insertAction(self.toolbar.actions()[0] if self.toolbar.actions() else None, dock_action)
        for action in entries:
            self.iface.addPluginToMenu(MENU, action)
        self.menu_actions = entries

        for layer in QgsProject.instance().mapLayers().values():
            self.attach(layer)
        QgsProject.instance().layersAdded.connect(self._on_layers_added)
        self._layers_connected = True

    def teardown(self) -> None:
        if self._layers_connected:
            try:
                QgsProject.instance().layersAdded.disconnect(self._on_layers_added)
            except (TypeError, RuntimeError):
                pass
            self._layers_connected = False
        for run in list(self.runs):
            run.cancel()
        for run in list(self.runs):
            run.wait(10.0)
        for action in list(self.layer_actions.values()) + list(self.dialog_actions.values()):
            self.iface.removeCustomActionForLayerType(action)
            action.deleteLater()
        for action in self.menu_actions:
            self.iface.removePluginMenu(MENU, action)
        if self.toolbar is not None:
            for action in self.toolbar.actions():
                self.toolbar.removeAction(action)
            self.toolbar.hide()
            self.toolbar.setParent(None)
            self.toolbar.deleteLater()
            self.toolbar = None
        for action in self.menu_actions:
            if action.objectName() != "sar2eo_dock_toggle":
                action.deleteLater()
        self.layer_actions, self.dialog_actions, self.menu_actions = {}, {}, []

    # ---- layers ----------------------------------------------------------------------------
    def _on_layers_added(self, layers) -> None:
        for layer in layers:
            self.attach(layer)

    def attach(self, layer) -> List[str]:
        """Show the matching entries in ``layer``'s context menu; returns the tasks attached."""
        attached = []
        for task, test in LAYER_TESTS.items():
            try:
                matches = test(layer)
            except Exception:  # noqa: BLE001 - a strange layer must not break the plugin
                matches = False
            if matches and task in self.layer_actions:
                self.iface.addCustomActionForLayer(self.layer_actions[task], layer)
                self.iface.addCustomActionForLayer(self.dialog_actions[task], layer)
                attached.append(task)
        return attached

    def current_layer(self) -> Optional[QgsMapLayer]:
        """The layer selected in the Layers panel (QGIS keeps the active layer in step with it, a
        right-click included)."""
        return self.iface.activeLayer()

    # ---- running ---------------------------------------------------------------------------
    def _can_run(self, task: str) -> bool:
        return self.deps is None or self.deps.can_run(task)

    def _message(self, text: str, level=Qgis.MessageLevel.Info, duration: int = 5) -> None:
        self.iface.messageBar().pushMessage("SAR2EO & Cloud", text, level, duration)
        QgsMessageLog.logMessage(text, LOG_TAG, level)
        self.log(text, level == Qgis.MessageLevel.Critical)

    def run_on_current_layer(self, task: str) -> Optional[AlgorithmRun]:
        layer = self.current_layer()
        if layer is None or layer.type() != QgsMapLayerType.RasterLayer:
            self._message(f"{FEATURE_LABELS[task]}: select a raster layer in the Layers panel first.",
                          Qgis.MessageLevel.Warning)
            return None
        return self.run_one_click(task, layer)

    def run_one_click(self, task: str, layer) -> Optional[AlgorithmRun]:
        """Run ``task`` on ``layer`` with the remembered defaults, in the background."""
        if not self._can_run(task):
            self._message(self.deps.message(), Qgis.MessageLevel.Critical, 0)
            return None
        s = self.settings
        folder = s.output_folder
        output = unique_output_path(folder, task, layer, s.band_set) if folder and os.path.isdir(folder) else ""
        params = build_parameters(task, layer, device=s.device, band_set=s.band_set,
                                  tile_size=s.tile_size(task), output=output)
        name = layer.name()
        run = AlgorithmRun(ALG_IDS[task], params, QgsProject.instance(), description=f"{FEATURE_LABELS[task]}: {name}")
        run.message.connect(lambda text, err, n=name: self.log(f"[{n}] {text}", err))
        run.finished.connect(lambda state, results, layers, r=run, t=task, n=name:
                             self._on_one_click_finished(r, t, n, state, results, layers))
        self.runs.append(run)
        self._message(f"{FEATURE_LABELS[task]} started on '{layer.name()}' (progress in the status bar).")
        if not run.start():
            if run in self.runs:
                self.runs.remove(run)
            self._message(f"{FEATURE_LABELS[task]} could not start: {'; '.join(run.errors)}",
                          Qgis.MessageLevel.Critical, 0)
            return None
        return run

    def _on_one_click_finished(self, run, task, name, state, results, layers) -> None:
        if run in self.runs:
            self.runs.remove(run)
        if state == "ok":
            added = ", ".join(f"'{lay.name()}'" for lay in layers) or "no layer"
            self._message(f"{FEATURE_LABELS[task]} on '{name}' done: added {added}.", Qgis.MessageLevel.Success)
        elif state == "cancelled":
            self._message(f"{FEATURE_LABELS[task]} on '{name}' cancelled.", Qgis.MessageLevel.Info)
        else:
            why = run.errors[-1] if run.errors else "see the Log Messages panel"
            self._message(f"{FEATURE_LABELS[task]} on '{name}' failed: {why}", Qgis.MessageLevel.Critical, 0)

    def open_dialog_for_current_layer(self, task: str):
        layer = self.current_layer()
        params = {"INPUT": layer.id()} if layer is not None else {}
        return self.open_dialog(task, params)

    @staticmethod
    def open_dialog(task: str, params: Dict):
        import processing  # the Processing plugin, present in every QGIS desktop

        return processing.execAlgorithmDialog(ALG_IDS[task], params)

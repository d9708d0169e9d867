"""Run inside the real ``qgis`` binary: ``qgis --code tests/gui/qgis_window_script.py`` (see test_qgis_window.py).

Environment:
  SAR2EO_WINDOW_PNG    where to save the screenshot of the main window
  SAR2EO_WINDOW_JSON   where to write the facts found in the window
  SAR2EO_WINDOW_S1     the real Sentinel-1 sample to load
  SAR2EO_WINDOW_MODEL  optional model card (GENERATED test model) to run the dock with
  SAR2EO_WINDOW_RELOAD "1" to unload and load the plugin again at the end (Plugin Reloader style)

The script never blocks the event loop: each step is scheduled with QTimer.singleShot so QGIS
keeps painting, the background task runs, and the window is grabbed as the user would see it.
"""
import json
import os
import time
import traceback

from qgis.core import QgsApplication, QgsProject
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import QApplication, QDockWidget, QToolBar
from qgis.utils import iface

PLUGIN = "sar2eo_cloud_plugin"
PNG = os.environ["SAR2EO_WINDOW_PNG"]
JSON_OUT = os.environ["SAR2EO_WINDOW_JSON"]
S1 = os.environ["SAR2EO_WINDOW_S1"]
MODEL = os.environ.get("SAR2EO_WINDOW_MODEL", "")
RELOAD = os.environ.get("SAR2EO_WINDOW_RELOAD", "1") == "1"

facts = {"errors": [], "steps": []}
state = {"t0": time.monotonic()}


def write_facts():
    facts["elapsed_s"] = round(time.monotonic() - state["t0"], 2)
    with open(JSON_OUT, "w", encoding="utf-8") as fh:
        json.dump(facts, fh, indent=2, default=str)


def guarded(fn):
    def wrapper():
        try:
            if not facts["steps"] or facts["steps"][-1] != fn.__name__:
                facts["steps"].append(fn.__name__)
            fn()
        except Exception:  # noqa: BLE001 - record and finish, never hang QGIS
            facts["errors"].append(f"{fn.__name__}: {traceback.format_exc()}")
            finish()
    return wrapper


def plugin_object():
    import qgis.utils

    return qgis.utils.plugins.get(PLUGIN)


def window_facts(prefix):
    main = iface.mainWindow()
    dock = main.findChild(QDockWidget, "Sar2EoCloudDock")
    toolbar = main.findChild(QToolBar, "Sar2EoCloudToolbar")
    facts[prefix + "dock_found"] = dock is not None
    facts[prefix + "dock_visible"] = bool(dock is not None and dock.isVisible())
    facts[prefix + "dock_area"] = int(main.dockWidgetArea(dock)) if dock is not None else None
    facts[prefix + "dock_title"] = dock.windowTitle() if dock is not None else None
    facts[prefix + "toolbar_actions"] = [a.text() for a in toolbar.actions()] if toolbar is not None else None
    facts[prefix + "provider"] = QgsApplication.processingRegistry().providerById("sar2eo_cloud") is not None
    menus = {}
    for menu_action in main.menuBar().actions():
        menu = menu_action.menu()
        if menu is None:
            continue
        for sub in menu.actions():
            if sub.menu() is not None and "SAR2EO" in sub.text():
                menus[menu_action.text().replace("&", "")] = [a.text() for a in sub.menu().actions()]
    facts[prefix + "plugin_menu"] = menus


def context_menu_texts(layer):
    view = iface.layerTreeView()
    view.setCurrentLayer(layer)
    menu = view.menuProvider().createContextMenu()
    texts = [a.text() for a in menu.actions() if a.text()]
    menu.deleteLater()
    return texts


@guarded
def step_load():
    import qgis.utils

    iface.mainWindow().showMaximized()
    facts["plugin_loaded"] = PLUGIN in qgis.utils.plugins
    facts["active_plugins"] = sorted(qgis.utils.active_plugins)
    layer = iface.addRasterLayer(S1, "S1 VV VH (real sample)")
    facts["layer_valid"] = bool(layer and layer.isValid())
    state["layer"] = layer
    facts["layer_context_menu"] = context_menu_texts(layer)
    plugin = plugin_object()
    plugin.show_dock()
    dock = plugin.dock
    dock.set_layer(layer)
    if MODEL:
        dock.advanced.setCollapsed(False)
        dock.model_file.setFilePath(MODEL)
        dock.tile_spin.setValue(64)
    QTimer.singleShot(1500, step_run)


@guarded
def step_run():
    plugin = plugin_object()
    dock = plugin.dock
    facts["device_label"] = dock.device_label.text()
    if not MODEL:
        QTimer.singleShot(500, step_shoot)
        return
    before = set(QgsProject.instance().mapLayers())
    state["before"] = before
    run = dock.start_run()
    facts["run_started"] = run is not None
    state["run_deadline"] = time.monotonic() + 120
    QTimer.singleShot(200, step_wait)


@guarded
def step_wait():
    dock = plugin_object().dock
    if dock.is_running() and time.monotonic() < state["run_deadline"]:
        QTimer.singleShot(200, step_wait)
        return
    facts["run_state"] = dock.run.state if dock.run is not None else None
    new_ids = set(QgsProject.instance().mapLayers()) - state["before"]
    new = [QgsProject.instance().mapLayer(i) for i in new_ids]
    facts["new_layers"] = [{"name": lay.name(), "valid": lay.isValid(), "crs": lay.crs().authid(),
                            "bands": lay.bandCount(), "renderer": lay.renderer().type()} for lay in new]
    facts["input_crs"] = state["layer"].crs().authid()
    facts["dock_log"] = dock.log.toPlainText().splitlines()[-8:]
    if new:
        # The output comes from a GENERATED random-weight test model: it is noise, so the screenshot
        # shows the real input on the canvas and the new layer only in the Layers panel (unchecked).
        root = QgsProject.instance().layerTreeRoot()
        for lay in new:
            root.findLayer(lay.id()).setItemVisibilityChecked(False)
        facts["note"] = "output made with a GENERATED random-weight test model; hidden on the canvas"
        iface.mapCanvas().setExtent(state["layer"].extent())
        iface.mapCanvas().refresh()
    QTimer.singleShot(2500, step_shoot)


@guarded
def step_shoot():
    QApplication.processEvents()
    window_facts("")
    image = iface.mainWindow().grab()
    facts["png_saved"] = bool(image.save(PNG))
    facts["png_size"] = [image.width(), image.height()]
    QTimer.singleShot(200, step_one_click)


def context_menu_action(layer, text):
    view = iface.layerTreeView()
    view.setCurrentLayer(layer)
    menu = view.menuProvider().createContextMenu()
    found = [a for a in menu.actions() if a.text() == text]
    return found[0] if found else None


@guarded
def step_one_click():
    """Click "Translate SAR to EO" in the real layer-tree context menu of the S1 layer."""
    plugin = plugin_object()
    before_runs = len(plugin.actions.runs)
    action = context_menu_action(state["layer"], "Translate SAR to EO")
    facts["one_click_action_found"] = action is not None
    state["before_one_click"] = set(QgsProject.instance().mapLayers())
    action.trigger()
    runs = plugin.actions.runs[before_runs:]
    facts["one_click_started"] = bool(runs)
    state["one_click_run"] = runs[0] if runs else None
    state["run_deadline"] = time.monotonic() + 120
    QTimer.singleShot(200, step_one_click_wait)


@guarded
def step_one_click_wait():
    run = state["one_click_run"]
    if run is not None and run.active and time.monotonic() < state["run_deadline"]:
        QTimer.singleShot(200, step_one_click_wait)
        return
    facts["one_click_state"] = run.state if run is not None else None
    facts["one_click_errors"] = list(run.errors) if run is not None else []
    new = set(QgsProject.instance().mapLayers()) - state["before_one_click"]
    facts["one_click_new_layers"] = [QgsProject.instance().mapLayer(i).name() for i in new]
    bar = iface.messageBar()
    facts["message_bar"] = [w.text() for w in bar.items()] if hasattr(bar, "items") else []
    # Next: the "…" entry opens the algorithm's Processing dialog (modal: inspect and close it from a timer).
    QTimer.singleShot(1500, step_close_dialog)
    action = context_menu_action(state["layer"], "Translate SAR to EO…")
    facts["dialog_action_found"] = action is not None
    action.trigger()  # returns once step_close_dialog has closed the dialog
    facts["dialog_returned"] = True
    if RELOAD:
        QTimer.singleShot(200, step_reload)
    else:
        finish()


def find_algorithm_dialog():
    from qgis.PyQt.QtWidgets import QDialog

    for widget in QApplication.topLevelWidgets():
        if isinstance(widget, QDialog) and widget.isVisible() and "Translate SAR to EO" in widget.windowTitle():
            return widget
    return QApplication.activeModalWidget()


@guarded
def step_close_dialog():
    dialog = find_algorithm_dialog()
    if dialog is None:
        state["dialog_tries"] = state.get("dialog_tries", 0) + 1
        if state["dialog_tries"] < 60:
            QTimer.singleShot(300, step_close_dialog)
        else:
            facts["errors"].append("the algorithm dialog did not appear")
            finish()
        return
    QApplication.processEvents()
    facts["dialog_title"] = dialog.windowTitle()
    params = dialog.createProcessingParameters() if hasattr(dialog, "createProcessingParameters") else {}
    value = params.get("INPUT")
    layer = value if hasattr(value, "name") else QgsProject.instance().mapLayer(str(value))
    facts["dialog_input_layer"] = layer.name() if layer is not None else repr(value)
    dialog.grab().save(os.path.join(os.path.dirname(PNG), "qgis_algorithm_dialog.png"))
    dialog.reject()


@guarded
def step_reload():
    import qgis.utils

    qgis.utils.unloadPlugin(PLUGIN)
    QApplication.processEvents()
    QgsApplication.sendPostedEvents(None, 52)  # QEvent.DeferredDelete
    QApplication.processEvents()
    window_facts("after_unload_")
    facts["after_unload_context_menu"] = context_menu_texts(state["layer"])
    qgis.utils.loadPlugin(PLUGIN)
    qgis.utils.startPlugin(PLUGIN)
    QApplication.processEvents()
    window_facts("after_reload_")
    facts["after_reload_context_menu"] = context_menu_texts(state["layer"])
    finish()


def finish():
    write_facts()
    QgsProject.instance().setDirty(False)
    QTimer.singleShot(300, lambda: os._exit(0))  # noqa: SLF001 - quit without "save project?" prompts


# Safety net: whatever happens, write what we have and quit.
QTimer.singleShot(170000, finish)
QTimer.singleShot(1000, step_load)

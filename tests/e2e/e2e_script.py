"""Run inside the real ``qgis`` binary by tests/e2e/test_fresh_profile.py: what a user does in a fresh profile.

Install dependencies from the dock, download models from the model manager, run both algorithms; screenshots
and facts go to SAR2EO_E2E_ARTIFACTS. Every step is scheduled with QTimer (the event loop never blocks, so pip's
QProcess and the download thread report back and the dialogs paint as a user sees them).

Environment: SAR2EO_E2E_S1, SAR2EO_E2E_S2 (real samples), SAR2EO_E2E_OUT (outputs), SAR2EO_E2E_ARTIFACTS,
SAR2EO_E2E_MODELS (comma-separated model names); pip's and the model mirror's addresses come from PIP_INDEX_URL
and SAR2EO_CLOUD_MODEL_MIRROR (set by the test to its 127.0.0.1 server).
"""
import json
import os
import sys
import time
import traceback

from qgis.core import QgsProcessingFeedback
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import QApplication
from qgis.utils import iface

PLUGIN = "sar2eo_cloud_plugin"
ART = os.environ["SAR2EO_E2E_ARTIFACTS"]
OUT = os.environ["SAR2EO_E2E_OUT"]
MODELS = os.environ["SAR2EO_E2E_MODELS"].split(",")
facts = {"errors": [], "steps": []}
state = {"t0": time.monotonic()}


def write_facts():
    facts["elapsed_s"] = round(time.monotonic() - state["t0"], 1)
    with open(os.path.join(ART, "facts.json"), "w", encoding="utf-8") as fh:
        json.dump(facts, fh, indent=2, default=str)


def finish():
    write_facts()
    QTimer.singleShot(300, lambda: os._exit(0))  # noqa: SLF001 - no "save project?" prompt


def step(fn):
    def wrapper():
        try:
            facts["steps"].append(fn.__name__)
            fn()
        except Exception:  # noqa: BLE001 - record and finish, never hang QGIS
            facts["errors"].append(f"{fn.__name__}: {traceback.format_exc()}")
            finish()
    return wrapper


def grab(widget, name):
    QApplication.processEvents()
    widget.grab().save(os.path.join(ART, name))


def wait_for(predicate, then, timeout_s, what):
    deadline = time.monotonic() + timeout_s

    def poll():
        try:
            if predicate():
                step(then)()
            elif time.monotonic() > deadline:
                facts["errors"].append(f"timed out after {timeout_s} s waiting for {what}")
                finish()
            else:
                QTimer.singleShot(250, poll)
        except Exception:  # noqa: BLE001
            facts["errors"].append(f"waiting for {what}: {traceback.format_exc()}")
            finish()
    QTimer.singleShot(250, poll)


def plugin():
    import qgis.utils

    return qgis.utils.plugins[PLUGIN]


@step
def start():
    p = plugin()
    facts["blocked_before"] = p.deps.blocked_features()
    facts["deps_message_before"] = p.deps.message()
    p.show_dock()
    dock = p.dock
    facts["install_button_shown"] = not dock.install_button.isHidden()
    dialog = dock.open_installer()
    state["installer"] = dialog
    state["install_results"] = []
    dialog.installed.connect(state["install_results"].append)
    facts["python_dir"] = str(dialog.target)
    facts["pip_will_install"] = dialog.specs()
    grab(dialog, "installer_before.png")
    dialog.install_button.click()
    wait_for(lambda: state["install_results"], installed, 300, "pip to finish")


@step
def installed():
    dialog = state["installer"]
    facts["install_ok"] = state["install_results"][0]
    facts["install_status"] = dialog.status.text()
    from qgis.PyQt.QtGui import QTextCursor

    dialog.log.moveCursor(QTextCursor.MoveOperation.End)
    grab(dialog, "installer_done.png")
    with open(os.path.join(ART, "pip.log"), "w", encoding="utf-8") as fh:
        fh.write(dialog.log.toPlainText())
    if not facts["install_ok"]:
        finish()
        return
    import onnxruntime

    facts["onnxruntime_from"] = onnxruntime.__file__
    facts["blocked_after"] = plugin().dock.deps.blocked_features()
    dialog.close()
    manager = plugin().dock.open_model_manager()
    state["manager"] = manager
    manager.select(MODELS)
    facts["selected"] = manager.selected_names()
    manager.download_button.click()
    wait_for(lambda: not manager.is_busy() and manager.status.text().startswith(("Installed", "Could", "Not",
                                                                                  "Download cancelled", "No ")),
             downloaded, 240, "the model downloads")


@step
def downloaded():
    from sar2eo_cloud_plugin.core import modelstore

    manager = state["manager"]
    facts["download_status"] = manager.status.text()
    facts["model_states"] = {n: modelstore.status(n) for n in MODELS}
    facts["model_cards"] = [str(modelstore.find_card(n)) for n in MODELS]
    grab(manager, "model_manager.png")
    manager.close()
    QTimer.singleShot(100, step(run_algorithms))


class LogFeedback(QgsProcessingFeedback):
    def __init__(self):
        super().__init__()
        self.lines = []

    def pushInfo(self, info):  # noqa: N802
        self.lines.append(info)
        super().pushInfo(info)


def run(alg, params):
    import processing
    from qgis.core import QgsProcessingException

    feedback = LogFeedback()
    t0 = time.monotonic()
    try:
        res = processing.run(alg, params, feedback=feedback)
        ok, error = os.path.isfile(res["OUTPUT"]), ""
    except QgsProcessingException as exc:
        ok, error = False, str(exc)
    return {"ok": ok, "error": error, "seconds": round(time.monotonic() - t0, 1),
            "runtime": next((ln for ln in feedback.lines if ln.startswith("Runtime:")), ""),
            "log_tail": feedback.lines[-8:]}


@step
def run_algorithms():
    facts["translate"] = run("sar2eo_cloud:translate_sar_to_eo", {
        "INPUT": os.environ["SAR2EO_E2E_S1"], "BAND_SET": 0, "OUTPUT": os.path.join(OUT, "e2e_eo_rgb.tif")})
    facts["cloud"] = run("sar2eo_cloud:cloud_mask", {
        "INPUT": os.environ["SAR2EO_E2E_S2"], "OUTPUT": os.path.join(OUT, "e2e_cloudmask.tif")})
    facts["torch_imported"] = "torch" in sys.modules
    for path in (os.path.join(OUT, "e2e_eo_rgb.tif"), os.path.join(OUT, "e2e_cloudmask.tif")):
        if os.path.isfile(path):
            iface.addRasterLayer(path, os.path.basename(path))
    QTimer.singleShot(1500, step(end))


@step
def end():
    grab(iface.mainWindow(), "window_end.png")
    finish()


QTimer.singleShot(3000, start)

"""Run inside the real ``qgis`` binary (see test_batch_gui.py): the folder batch and a shipped model in
QGIS's background task runner (the thread the Toolbox uses), their dialogs, and the model in the
Graphical Modeler.

Environment: SAR2EO_BATCH_JSON (facts out), SAR2EO_BATCH_IN (input folder), SAR2EO_BATCH_OUT (output
folder), SAR2EO_BATCH_MODELS (folder of GENERATED test model cards), SAR2EO_BATCH_S1 / _S2 (a real pair),
SAR2EO_BATCH_PNG (screenshot of the modeler). Every step is scheduled on the event loop; never blocks.
"""
import json
import os
import traceback

from qgis.core import (
    QgsApplication,
    QgsProcessingAlgRunnerTask,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProject,
)
from qgis.PyQt.QtCore import QTimer

OUT_JSON = os.environ["SAR2EO_BATCH_JSON"]
IN_DIR = os.environ["SAR2EO_BATCH_IN"]
OUT_DIR = os.environ["SAR2EO_BATCH_OUT"]
MODELS = os.environ["SAR2EO_BATCH_MODELS"]
S1, S2 = os.environ["SAR2EO_BATCH_S1"], os.environ["SAR2EO_BATCH_S2"]
PNG = os.environ["SAR2EO_BATCH_PNG"]

facts = {"errors": []}
keep = {}


def write():
    with open(OUT_JSON, "w", encoding="utf-8") as fh:
        json.dump(facts, fh, indent=2, default=str)


def finish():
    write()
    QgsProject.instance().setDirty(False)
    QTimer.singleShot(300, lambda: os._exit(0))  # noqa: SLF001


def guarded(fn):
    def wrapper(*args):
        try:
            facts.setdefault("steps", []).append(fn.__name__)
            write()
            fn(*args)
        except Exception:  # noqa: BLE001
            facts["errors"].append(f"{fn.__name__}: {traceback.format_exc()}")
            finish()
    return wrapper


def run_task(alg_id, params, key, then):
    registry = QgsApplication.processingRegistry()
    alg = registry.createAlgorithmById(alg_id)
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    feedback = QgsProcessingFeedback()
    log = []
    feedback.progressChanged.connect(lambda p: log.append(p))

    def done(ok, results):
        facts[key] = {"ok": ok, "results": {k: str(v) for k, v in (results or {}).items()},
                      "progress_max": max(log) if log else None, "progress_steps": len(log),
                      "thread": "main" if threaded is False else "background",
                      "load_on_completion": list(context.layersToLoadOnCompletion().keys())}
        QTimer.singleShot(100, then)

    # What the algorithm dialog does: a background task unless the algorithm says FlagNoThreading
    # (QGIS 3.22 sets it on every graphical model, 3.40 on none), then the main thread.
    threaded = not (alg.flags() & alg.FlagNoThreading)
    if not threaded:
        results, ok = alg.run(params, context, feedback)
        guarded(done)(ok, results)
        return
    task = QgsProcessingAlgRunnerTask(alg, params, context, feedback)
    keep[key] = (alg, context, feedback, task, log)
    task.executed.connect(guarded(done))
    QgsApplication.taskManager().addTask(task)


@guarded
def step_check():
    import qgis.utils

    if "sar2eo_cloud_plugin" not in qgis.utils.active_plugins:
        if facts.setdefault("waits", 0) < 50:
            facts["waits"] += 1
            QTimer.singleShot(200, step_check)
            return
    registry = QgsApplication.processingRegistry()
    facts["algorithms"] = sorted(a.id() for a in registry.algorithms() if a.provider().id() == "sar2eo_cloud")
    import processing

    dialog = processing.createAlgorithmDialog("sar2eo_cloud:batch_folder", {"INPUT_FOLDER": IN_DIR})
    facts["batch_dialog"] = dialog is not None and dialog.windowTitle()
    if dialog is not None:
        dialog.close()
    dialog = processing.createAlgorithmDialog("sar2eo_cloud:translate_and_cloud_mask", {})
    facts["model_dialog"] = dialog is not None and dialog.windowTitle()
    if dialog is not None:
        dialog.close()
    QTimer.singleShot(100, step_modeler)


@guarded
def step_modeler():
    from processing.modeler.ModelerDialog import ModelerDialog

    alg = QgsApplication.processingRegistry().createAlgorithmById("sar2eo_cloud:sar_under_clouds")
    dlg = ModelerDialog.create(alg)
    dlg.resize(1500, 950)
    dlg.show()
    if hasattr(dlg, "zoomFull"):
        dlg.zoomFull()
    keep["modeler"] = dlg
    facts["modeler_title"] = dlg.windowTitle()
    facts["modeler_children"] = sorted(dlg.model().childAlgorithms().keys())
    facts["modeler_items"] = len(dlg.view().scene().items())
    QTimer.singleShot(1500, step_shoot)


@guarded
def step_shoot():
    dlg = keep["modeler"]
    facts["modeler_png"] = dlg.grab().save(PNG)
    dlg.setDirty(False) if hasattr(dlg, "setDirty") else None
    dlg.close()
    QTimer.singleShot(100, step_batch)


@guarded
def step_batch():
    run_task("sar2eo_cloud:batch_folder",
             {"INPUT_FOLDER": IN_DIR, "OUTPUT_FOLDER": OUT_DIR, "TASK": 0, "BAND_SET": 0, "DEVICE": 1,
              "TILE_SIZE": 64, "OVERLAP": 16, "MODEL_FILE": os.path.join(MODELS, "sar2eo_rgb.json")},
             "batch", step_model)


@guarded
def step_model():
    run_task("sar2eo_cloud:translate_and_cloud_mask",
             {"SENTINEL1": S1, "SENTINEL2": S2, "BAND_SET": 0, "DEVICE": 1,
              "SAR2EO_MODEL_FILE": os.path.join(MODELS, "sar2eo_rgb.json"),
              "CLOUD_MODEL_FILE": os.path.join(MODELS, "cloudmask.json"),
              "translate:EO": os.path.join(OUT_DIR, "model_eo.tif"),
              "cloudmask:CLOUD_MASK": os.path.join(OUT_DIR, "model_mask.tif"),
              "cloudmask:CLOUD_POLYGONS": "TEMPORARY_OUTPUT"},
             "model", finish)


QTimer.singleShot(170000, finish)
QTimer.singleShot(1000, step_check)

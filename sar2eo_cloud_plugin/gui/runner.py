"""Run one of the plugin's Processing algorithms in the background and load its results.

An :class:`AlgorithmRun` wraps ``QgsProcessingAlgRunnerTask`` (the task the Processing
dialog itself uses) added to ``QgsApplication.taskManager()``: the algorithm runs in a
worker thread, progress and log lines come back as Qt signals, and when it succeeds the
layers the algorithm asked to load (``context.layersToLoadOnCompletion()``) are added to
the project with the algorithm's layer post-processor (its styling). On cancel or error
nothing is added; the core engine removes partial files.
"""
from __future__ import annotations

import traceback
from typing import Dict, List, Optional

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsMapLayer,
    QgsMessageLog,
    QgsProcessingAlgRunnerTask,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingUtils,
    QgsProject,
)
from qgis.PyQt.QtCore import QObject, pyqtSignal

LOG_TAG = "SAR2EO & Cloud"

# Runs whose task is queued or running. The task holds raw pointers to the run's context and
# feedback, so those must stay alive until it has finished, even if the dock that started the
# run is closed or the plugin unloaded meanwhile.
_ACTIVE: set = set()


class RunFeedback(QgsProcessingFeedback):
    """Feedback that forwards the algorithm's text to a Qt signal (emitted from the worker thread;
    receivers in the GUI thread get it queued)."""

    message = pyqtSignal(str, bool)  # text, is_error

    def setProgressText(self, text):  # noqa: N802
        super().setProgressText(text)
        self.message.emit(text, False)

    def pushInfo(self, info):  # noqa: N802
        super().pushInfo(info)
        self.message.emit(info, False)

    def pushWarning(self, warning):  # noqa: N802
        super().pushWarning(warning)
        self.message.emit(warning, False)

    def pushCommandInfo(self, info):  # noqa: N802
        super().pushCommandInfo(info)
        self.message.emit(info, False)

    def pushConsoleInfo(self, info):  # noqa: N802
        super().pushConsoleInfo(info)
        self.message.emit(info, False)

    def reportError(self, error, fatalError=False):  # noqa: N802, N803
        super().reportError(error, fatalError)
        self.message.emit(error, True)


def load_results(alg, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> List[QgsMapLayer]:
    """Add the layers the algorithm asked to load to their project, like Processing's
    ``handleAlgorithmResults`` does (layer name, the algorithm's post-processor = styling), but
    without depending on the Processing plugin's configuration being initialised."""
    added: List[QgsMapLayer] = []
    for ref, details in context.layersToLoadOnCompletion().items():
        try:
            layer = QgsProcessingUtils.mapLayerFromString(ref, context, typeHint=details.layerTypeHint)
            if layer is None or not layer.isValid():
                feedback.reportError(f"The result {ref} could not be loaded as a layer.")
                continue
            details.setOutputLayerName(layer)
            layer = context.temporaryLayerStore().takeMapLayer(layer) or layer
            project = details.project or QgsProject.instance()
            project.addMapLayer(layer)
            if details.postProcessor():
                details.postProcessor().postProcessLayer(layer, context, feedback)
            added.append(layer)
        except Exception:  # never let a styling problem lose the result silently
            QgsMessageLog.logMessage(f"Error loading result layer {ref}:\n{traceback.format_exc()}", LOG_TAG,
                                     Qgis.MessageLevel.Warning)
            feedback.reportError(f"The result {ref} was written but could not be loaded; see the log.")
    return added


class AlgorithmRun(QObject):
    """One background run of a Processing algorithm.

    Signals: ``progressChanged(float)`` 0..100, ``message(str, bool)`` log line / is-error,
    ``finished(str, dict, list)`` with the state (``"ok"``, ``"cancelled"``, ``"failed"``), the
    algorithm's results and the layers added to the project.
    """

    progressChanged = pyqtSignal(float)  # noqa: N815
    message = pyqtSignal(str, bool)
    finished = pyqtSignal(str, dict, list)

    def __init__(self, alg_id: str, parameters: Dict, project: Optional[QgsProject] = None,
                 description: str = "", parent: Optional[QObject] = None) -> None:
        super().__init__(parent)
        self.alg_id = alg_id
        self.parameters = parameters
        self.project = project or QgsProject.instance()
        self.description = description or alg_id
        self.state = "new"
        self.results: Dict = {}
        self.layers: List[QgsMapLayer] = []
        self.errors: List[str] = []
        self.task: Optional[QgsProcessingAlgRunnerTask] = None
        self.context: Optional[QgsProcessingContext] = None
        self.feedback: Optional[RunFeedback] = None
        self.alg = None

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> bool:
        """Validate and queue the run; False (with a message) when it cannot start."""
        registry = QgsApplication.processingRegistry()
        self.alg = registry.createAlgorithmById(self.alg_id)
        if self.alg is None:
            return self._refuse(f"The algorithm {self.alg_id} is not available (is the plugin's Processing "
                                "provider loaded?).")
        self.context = QgsProcessingContext()
        self.context.setProject(self.project)
        self.feedback = RunFeedback()
        self.feedback.message.connect(self._on_message)
        self.feedback.progressChanged.connect(self.progressChanged)
        ok, why = self.alg.checkParameterValues(self.parameters, self.context)
        if not ok:
            return self._refuse(why)
        self.state = "running"
        self.task = QgsProcessingAlgRunnerTask(self.alg, self.parameters, self.context, self.feedback)
        self.task.setDescription(self.description)
        self.task.executed.connect(self._on_executed)
        _ACTIVE.add(self)
        QgsApplication.taskManager().addTask(self.task)
        return True

    def cancel(self) -> None:
        """Ask the algorithm to stop; it returns at its next tile and leaves no output."""
        if self.state != "running":
            return
        self.state = "cancelling"
        if self.feedback is not None:
            self.feedback.cancel()
        if self.task is not None:
            try:
                self.task.cancel()
            except RuntimeError:  # the task manager already deleted the finished task
                pass

    @property
    def active(self) -> bool:
        return self.state in ("running", "cancelling")

    def wait(self, timeout_s: float = 30.0) -> bool:
        """Process events until the run has finished (tests, plugin unload); True when it has."""
        import time

        from qgis.PyQt.QtCore import QCoreApplication, QEventLoop

        deadline = time.monotonic() + timeout_s
        while self.active and time.monotonic() < deadline:
            QCoreApplication.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
            time.sleep(0.01)
        return not self.active

    # ---- internals -------------------------------------------------------------------------
    def _refuse(self, why: str) -> bool:
        self.state = "failed"
        self.errors.append(why)
        self.message.emit(why, True)
        self.finished.emit("failed", {}, [])
        return False

    def _on_message(self, text: str, is_error: bool) -> None:
        if is_error:
            self.errors.append(text)
        self.message.emit(text, is_error)

    def _on_executed(self, ok: bool, results: Dict) -> None:
        self.task = None  # owned and deleted by the task manager
        _ACTIVE.discard(self)
        cancelled = self.state == "cancelling" or (self.feedback is not None and self.feedback.isCanceled())
        if cancelled:
            self.state = "cancelled"
            self.message.emit("Cancelled: nothing was added to the project.", False)
        elif not ok:
            self.state = "failed"
            if not self.errors:
                self.message.emit("The algorithm failed; see the Log Messages panel.", True)
        else:
            self.results = dict(results or {})
            self.layers = load_results(self.alg, self.context, self.feedback)
            self.state = "ok"
        self.finished.emit(self.state, self.results, list(self.layers))
        # The task is done with its context and feedback once it has emitted executed(); drop them on
        # the next event-loop turn so no QGIS object outlives its use in a Python reference.
        from qgis.PyQt.QtCore import QTimer

        QTimer.singleShot(0, self._release)

    def _release(self) -> None:
        self.context = None
        self.feedback = None
        self.alg = None

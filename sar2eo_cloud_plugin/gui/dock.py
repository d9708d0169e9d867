"""The plugin's dock panel: pick a raster layer and a task, press Run.

The dock only builds parameters; the work is done by the plugin's Processing algorithms in a
background task (:class:`..runner.AlgorithmRun`), never in the GUI thread.
"""
from __future__ import annotations

import time
from typing import Callable, Optional

from qgis.core import QgsMapLayerProxyModel, QgsProject
from qgis.gui import QgsCollapsibleGroupBox, QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt, QTimer, pyqtSignal
from qgis.PyQt.QtWidgets import (
    QComboBox,
    QDockWidget,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..core.bands import BAND_SET_KEYS, BAND_SETS
from ..core.cards import bundled_translation_notes
from ..core.cloud import model_choices as cloud_model_choices
from ..core.tasks import CLOUD_MASK, DEFAULT_DEVICE, DEVICES, TASKS, TRANSLATE
from ..deps import FEATURE_LABELS, DependencyReport
from ..processing.cloudmask_algorithm import MODES as CLOUD_MODES
from .layers import ALG_IDS, build_parameters, missing_model, suggested_task
from .runner import AlgorithmRun
from .settings import PluginSettings

DOCK_OBJECT_NAME = "Sar2EoCloudDock"


class Sar2EoCloudDock(QDockWidget):
    """Dock panel. ``runFinished(state, results, layers)`` is emitted after each run."""

    runFinished = pyqtSignal(str, dict, list)  # noqa: N815
    dependenciesChanged = pyqtSignal()  # noqa: N815  (after the installer succeeded: deps re-checked)

    def __init__(self, parent: Optional[QWidget] = None, deps: Optional[DependencyReport] = None,
                 settings: Optional[PluginSettings] = None,
                 describe_devices: Optional[Callable[[], str]] = None) -> None:
        super().__init__("SAR2EO & Cloud", parent)
        self.setObjectName(DOCK_OBJECT_NAME)
        self.deps = deps
        self.settings = settings or PluginSettings()
        self._describe_devices = describe_devices
        self._devices_described = False
        self.run: Optional[AlgorithmRun] = None
        self._started = 0.0
        self._model_files = {}
        self._model_task = None
        self._build()
        self._restore_settings()
        self._model_task = self.task
        self._update_task_widgets()
        self._update_buttons()

    # ---- construction ----------------------------------------------------------------------
    def _build(self) -> None:
        body = QWidget(self)
        layout = QVBoxLayout(body)
        form = QFormLayout()

        self.layer_combo = QgsMapLayerComboBox(body)
        self.layer_combo.setObjectName("layerCombo")
        self.layer_combo.setFilters(QgsMapLayerProxyModel.Filter.RasterLayer)
        self.layer_combo.setAllowEmptyLayer(False)
        form.addRow("Input layer", self.layer_combo)

        self.task_combo = QComboBox(body)
        self.task_combo.setObjectName("taskCombo")
        for spec in TASKS:
            self.task_combo.addItem(spec.label, spec.key)
        form.addRow("Task", self.task_combo)

        self.band_set_combo = QComboBox(body)
        self.band_set_combo.setObjectName("bandSetCombo")
        notes = bundled_translation_notes()
        for key in BAND_SET_KEYS:
            label = BAND_SETS[key].label + (" (experimental)" if notes[key] else "")
            self.band_set_combo.addItem(label, key)
            if notes[key]:
                self.band_set_combo.setItemData(self.band_set_combo.count() - 1, notes[key],
                                                Qt.ItemDataRole.ToolTipRole)
        form.addRow("Band set", self.band_set_combo)

        # Cloud mask only: the model (auto picks by the layer's bands), classes and buffer.
        self.cloud_model_combo = QComboBox(body)
        self.cloud_model_combo.setObjectName("cloudModelCombo")
        for index, key in enumerate(cloud_model_choices()):
            self.cloud_model_combo.addItem("Auto (best for the layer's bands)" if key == "auto" else key, index)
        form.addRow("Cloud model", self.cloud_model_combo)
        self.cloud_mode_combo = QComboBox(body)
        self.cloud_mode_combo.setObjectName("cloudModeCombo")
        for index, (_key, label) in enumerate(CLOUD_MODES):   # the cloud-mask algorithm's MODE enum
            self.cloud_mode_combo.addItem(label, index)
        form.addRow("Classes", self.cloud_mode_combo)
        self.buffer_spin = QDoubleSpinBox(body)
        self.buffer_spin.setObjectName("bufferSpin")
        self.buffer_spin.setRange(0.0, 10000.0)
        self.buffer_spin.setDecimals(0)
        self.buffer_spin.setSingleStep(10.0)
        self.buffer_spin.setSuffix(" m")
        self.buffer_spin.setToolTip("Dilate cloud and shadow by this distance (0: none).")
        form.addRow("Buffer", self.buffer_spin)

        self.device_combo = QComboBox(body)
        self.device_combo.setObjectName("deviceCombo")
        for device in DEVICES:
            self.device_combo.addItem(device.short_label, device.key)
        form.addRow("Device", self.device_combo)
        self.device_label = QLabel("Looking for compute devices…", body)
        self.device_label.setObjectName("deviceLabel")
        self.device_label.setWordWrap(True)
        form.addRow("", self.device_label)
        layout.addLayout(form)

        self.advanced = QgsCollapsibleGroupBox("Advanced", body)
        self.advanced.setObjectName("advancedGroup")
        adv = QFormLayout(self.advanced)
        self.tile_spin = QSpinBox(self.advanced)
        self.tile_spin.setObjectName("tileSize")
        self.tile_spin.setRange(32, 4096)
        self.tile_spin.setSingleStep(32)
        self.tile_spin.setSuffix(" px")
        adv.addRow("Tile size", self.tile_spin)
        self.overlap_spin = QSpinBox(self.advanced)
        self.overlap_spin.setObjectName("overlap")
        self.overlap_spin.setRange(0, 1024)
        self.overlap_spin.setValue(32)
        self.overlap_spin.setSuffix(" px")
        adv.addRow("Overlap", self.overlap_spin)
        self.model_file = QgsFileWidget(self.advanced)
        self.model_file.setObjectName("modelFile")
        self.model_file.setStorageMode(QgsFileWidget.StorageMode.GetFile)
        self.model_file.setFilter("Model cards (*.json)")
        self.model_file.lineEdit().setPlaceholderText("[Bundled model]")
        adv.addRow("Model file", self.model_file)
        self.output_file = QgsFileWidget(self.advanced)
        self.output_file.setObjectName("outputFile")
        self.output_file.setStorageMode(QgsFileWidget.StorageMode.SaveFile)
        self.output_file.setFilter("GeoTIFF (*.tif *.tiff)")
        self.output_file.lineEdit().setPlaceholderText("[Save to temporary file]")
        adv.addRow("Output file", self.output_file)
        self.output_folder = QgsFileWidget(self.advanced)
        self.output_folder.setObjectName("outputFolder")
        self.output_folder.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.output_folder.lineEdit().setPlaceholderText("[Temporary files]")
        self.output_folder.setToolTip("Where the one-click layer actions write their results (remembered).")
        adv.addRow("One-click output folder", self.output_folder)
        self.advanced.setCollapsed(True)
        layout.addWidget(self.advanced)

        buttons = QHBoxLayout()
        self.run_button = QPushButton("Run", body)
        self.run_button.setObjectName("runButton")
        self.cancel_button = QPushButton("Cancel", body)
        self.cancel_button.setObjectName("cancelButton")
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)

        # Models and dependencies: the model manager, and (while a dependency is missing) the installer.
        tools = QHBoxLayout()
        self.models_button = QPushButton("Models…", body)
        self.models_button.setObjectName("modelsButton")
        self.models_button.setToolTip("Installed and downloadable models: download, delete, import a card.")
        self.install_button = QPushButton("Install dependencies…", body)
        self.install_button.setObjectName("installDepsButton")
        self.install_button.setToolTip("Install the Python packages the plugin needs (pip, into the plugin's "
                                       "folder in the QGIS profile).")
        tools.addWidget(self.models_button)
        tools.addWidget(self.install_button)
        layout.addLayout(tools)
        self.model_manager = None
        self.installer_dialog = None

        self.progress = QProgressBar(body)
        self.progress.setObjectName("progressBar")
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        layout.addWidget(self.progress)

        self.status_label = QLabel("", body)
        self.status_label.setObjectName("statusLabel")
        self.status_label.setWordWrap(True)
        layout.addWidget(self.status_label)

        self.log = QPlainTextEdit(body)
        self.log.setObjectName("logView")
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(500)
        self.log.setPlaceholderText("Messages of the runs appear here.")
        layout.addWidget(self.log, 1)
        self.setWidget(body)

        self.layer_combo.layerChanged.connect(self._on_layer_changed)
        self.task_combo.currentIndexChanged.connect(self._on_task_changed)
        self.band_set_combo.currentIndexChanged.connect(self._save_settings)
        self.band_set_combo.currentIndexChanged.connect(self._update_buttons)
        self.model_file.fileChanged.connect(self._update_buttons)
        self.device_combo.currentIndexChanged.connect(self._save_settings)
        self.tile_spin.valueChanged.connect(self._save_settings)
        self.output_folder.fileChanged.connect(self._save_settings)
        self.run_button.clicked.connect(self.start_run)
        self.cancel_button.clicked.connect(self.cancel_run)
        self.models_button.clicked.connect(self.open_model_manager)
        self.install_button.clicked.connect(self.open_installer)

    # ---- settings --------------------------------------------------------------------------
    def _restore_settings(self) -> None:
        self._restoring = True
        s = self.settings
        self.device_combo.setCurrentIndex(max(0, self.device_combo.findData(s.device)))
        self.band_set_combo.setCurrentIndex(max(0, self.band_set_combo.findData(s.band_set)))
        self.output_folder.setFilePath(s.output_folder)
        if s.output_folder:
            self.output_file.setDefaultRoot(s.output_folder)
        self.tile_spin.setValue(s.tile_size(self.task))
        self._restoring = False
        task = suggested_task(self.layer_combo.currentLayer())
        if task:
            self.set_task(task)

    def _save_settings(self, *_args) -> None:
        if getattr(self, "_restoring", False):
            return
        s = self.settings
        s.device = self.device
        s.band_set = self.band_set
        s.output_folder = self.output_folder.filePath()
        s.set_tile_size(self.task, self.tile_spin.value())

    # ---- accessors -------------------------------------------------------------------------
    @property
    def task(self) -> str:
        return self.task_combo.currentData() or TASKS[0].key

    def set_task(self, task: str) -> None:
        self.task_combo.setCurrentIndex(max(0, self.task_combo.findData(task)))

    @property
    def band_set(self) -> str:
        return self.band_set_combo.currentData() or BAND_SET_KEYS[0]

    @property
    def device(self) -> str:
        return self.device_combo.currentData() or DEFAULT_DEVICE

    def set_layer(self, layer) -> None:
        self.layer_combo.setLayer(layer)

    # ---- reactions -------------------------------------------------------------------------
    def _on_layer_changed(self, layer) -> None:
        task = suggested_task(layer) if layer is not None else None
        if task and not self.is_running():
            self.set_task(task)
        self._update_buttons()

    def _on_task_changed(self, *_args) -> None:
        # Each task keeps its own model-file override (a translation card cannot mask clouds).
        previous = getattr(self, "_model_task", None)
        if previous is not None and previous != self.task:
            self._model_files[previous] = self.model_file.filePath()
            self.model_file.setFilePath(self._model_files.get(self.task, ""))
        self._model_task = self.task
        self._restoring = True
        self.tile_spin.setValue(self.settings.tile_size(self.task))
        self._restoring = False
        self._update_task_widgets()
        self._update_buttons()

    def _update_task_widgets(self) -> None:
        idle = not self.is_running()
        self.band_set_combo.setEnabled(self.task == TRANSLATE.key and idle)
        for widget in (self.cloud_model_combo, self.cloud_mode_combo, self.buffer_spin):
            widget.setEnabled(self.task == CLOUD_MASK.key and idle)

    def blocked_reason(self, task: Optional[str] = None) -> str:
        task = task or self.task
        if self.deps is not None and not self.deps.can_run(task):
            return self.deps.message(task)
        missing = None if self.model_file.filePath().strip() else missing_model(task, self.band_set)
        if missing:
            from ..core.modelstore import how_to_get

            return f"{FEATURE_LABELS[task]} cannot run: {how_to_get(missing)}"
        return ""

    # ---- models and dependencies ------------------------------------------------------------
    def open_model_manager(self):
        from .model_manager import ModelManagerDialog

        if self.model_manager is None:
            self.model_manager = ModelManagerDialog(self, self.settings)   # lists the models as it opens
            self.model_manager.modelsChanged.connect(self._update_buttons)
        else:
            self.model_manager.refresh()   # the store may have changed since it was last shown
        self.model_manager.show()
        self.model_manager.raise_()
        return self.model_manager

    def open_installer(self):
        from ..profile import python_dir
        from .installer import InstallerDialog

        if self.installer_dialog is None:
            self.installer_dialog = InstallerDialog(python_dir(), self, self.settings, self.deps)
            self.installer_dialog.installed.connect(self._dependencies_installed)
        self.installer_dialog.show()
        self.installer_dialog.raise_()
        return self.installer_dialog

    def _dependencies_installed(self, ok: bool) -> None:
        if ok:
            from ..deps import check_dependencies

            self.deps = check_dependencies()
            self._devices_described = False
            self._update_buttons()
            self.dependenciesChanged.emit()

    def _update_buttons(self) -> None:
        running = self.is_running()
        self.install_button.setVisible(self.deps is not None and not self.deps.ok)
        blocked = self.blocked_reason()
        self.run_button.setEnabled(not running and not blocked and self.layer_combo.currentLayer() is not None)
        self.cancel_button.setEnabled(running)
        for w in (self.layer_combo, self.task_combo, self.device_combo, self.advanced):
            w.setEnabled(not running)
        self._update_task_widgets()
        if blocked:
            self.status_label.setText(blocked)
        elif not running and self.status_label.text().startswith(tuple(FEATURE_LABELS.values())):
            self.status_label.setText("")

    def showEvent(self, event) -> None:  # noqa: N802
        super().showEvent(event)
        if not self._devices_described:
            # After the dock has painted: describing devices imports torch (seconds).
            QTimer.singleShot(0, self.describe_devices)

    def describe_devices(self) -> str:
        """The device line: what torch sees (the first part; the CUDA choice follows it), then the installed
        ONNX Runtime and its providers (core.runtime), which the runs use by default."""
        self._devices_described = True
        torch_status = self.deps.packages.get("torch") if self.deps is not None else None
        from ..core import runtime

        if torch_status is not None and not torch_status.ok:
            text = f"No PyTorch device: {torch_status.problem}"
        else:
            try:
                if self._describe_devices is not None:
                    text = self._describe_devices()
                else:
                    from ..core.inference import describe_devices

                    text = describe_devices()
            except Exception as exc:  # noqa: BLE001 - shown to the user, never fatal
                text = f"Could not query devices: {exc}"
        cuda = text.startswith("CUDA available")
        try:
            offered = runtime.ort_providers_offered()
            text += (f"; ONNX Runtime: {', '.join(offered)}" if offered else "; ONNX Runtime not installed")
            cuda = cuda or runtime.CUDA_PROVIDER in offered
        except Exception as exc:  # noqa: BLE001 - shown to the user, never fatal
            text += f"; ONNX Runtime could not be queried: {exc}"
        self.device_label.setText(text)
        self._set_cuda_available(cuda)
        return text

    def _set_cuda_available(self, available: bool) -> None:
        """Grey out the CUDA choice when torch sees no GPU (the algorithm would refuse it)."""
        item = self.device_combo.model().item(self.device_combo.findData("cuda"))
        if item is not None:
            item.setEnabled(available)
            item.setToolTip("" if available else "PyTorch sees no CUDA GPU here")
        if not available and self.device == "cuda":
            self.device_combo.setCurrentIndex(self.device_combo.findData(DEFAULT_DEVICE))
            self.append_log("CUDA is not available here; device set to Auto.")

    # ---- running ---------------------------------------------------------------------------
    def is_running(self) -> bool:
        return self.run is not None and self.run.active

    def append_log(self, text: str, is_error: bool = False) -> None:
        stamp = time.strftime("%H:%M:%S")
        self.log.appendPlainText(f"{stamp} {'ERROR: ' if is_error else ''}{text}")

    def parameters(self) -> dict:
        layer = self.layer_combo.currentLayer()
        return build_parameters(self.task, layer, device=self.device, band_set=self.band_set,
                                tile_size=self.tile_spin.value(), overlap=self.overlap_spin.value(),
                                model_file=self.model_file.filePath().strip(),
                                output=self.output_file.filePath().strip(), project=QgsProject.instance(),
                                cloud_model=self.cloud_model_combo.currentData() or 0,
                                cloud_mode=self.cloud_mode_combo.currentData() or 0,
                                buffer_m=self.buffer_spin.value())

    def start_run(self) -> Optional[AlgorithmRun]:
        """Start the selected task on the selected layer in the background."""
        if self.is_running():
            return None
        layer = self.layer_combo.currentLayer()
        if layer is None:
            self.append_log("Choose a raster layer first.", True)
            return None
        blocked = self.blocked_reason()
        if blocked:
            self.append_log(blocked, True)
            return None
        self._save_settings()
        try:
            params = self.parameters()
        except Exception as exc:  # noqa: BLE001
            self.append_log(str(exc), True)
            return None
        self.progress.setValue(0)
        self.append_log(f"{FEATURE_LABELS[self.task]} on '{layer.name()}' started (device {self.device}).")
        run = AlgorithmRun(ALG_IDS[self.task], params, QgsProject.instance(),
                           description=f"{FEATURE_LABELS[self.task]}: {layer.name()}")
        run.progressChanged.connect(lambda p: self.progress.setValue(int(round(p))))
        run.message.connect(self.append_log)
        run.finished.connect(self._on_finished)
        self.run = run
        self._started = time.monotonic()
        self.status_label.setText("Running…")
        if not run.start():
            self.run = None
            self.status_label.setText("Could not start; see the log below.")
        self._update_buttons()
        return run if self.run is run else None

    def cancel_run(self) -> None:
        if self.is_running():
            self.append_log("Cancelling…")
            self.status_label.setText("Cancelling…")
            self.run.cancel()
            self._update_buttons()

    def _on_finished(self, state: str, results: dict, layers: list) -> None:
        elapsed = time.monotonic() - self._started
        if state == "ok":
            self.progress.setValue(100)
            names = ", ".join(f"'{lay.name()}'" for lay in layers) or "no layer"
            extra = ""
            if "CLOUD_FRACTION" in results:
                extra = f", cloud {100 * float(results['CLOUD_FRACTION']):.1f} %"
                if results.get("SHADOW_FRACTION") is not None:
                    extra += f", shadow {100 * float(results['SHADOW_FRACTION']):.1f} %"
                if results.get("MODEL_USED"):
                    extra += f", model {results['MODEL_USED']}"
            if results.get("DEVICE_USED"):
                extra += f", device {results['DEVICE_USED']}"
            if results.get("RUNTIME_USED"):
                extra += f", runtime {results['RUNTIME_USED']}"
            self.append_log(f"Done in {elapsed:.1f} s: added {names}{extra}.")
            self.status_label.setText(f"Done in {elapsed:.1f} s.")
        elif state == "cancelled":
            self.progress.setValue(0)
            self.status_label.setText("Cancelled.")
        else:
            self.progress.setValue(0)
            self.status_label.setText("Failed; see the log below.")
        self._update_buttons()
        self.runFinished.emit(state, results, layers)

    def shutdown(self, wait_s: float = 10.0) -> None:
        """Cancel a run in progress and wait for it to stop (plugin unload)."""
        if self.is_running():
            self.run.cancel()
            self.run.wait(wait_s)
        for dialog in (self.model_manager, self.installer_dialog):   # a download or pip must not outlive us
            if dialog is not None:
                dialog.close()

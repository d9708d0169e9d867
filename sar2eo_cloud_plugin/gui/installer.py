"""The dock's dependency installer: pip, with the plugin's pins, into the plugin's own folder.

Runs ``installer.pip_command`` as a :class:`QProcess` (the GUI stays responsive; nothing blocks on pip),
shows pip's log as it comes and the step it is at, and tells a failure in words
(:func:`..installer.explain_failure`: no network, proxy, no space, ...). On success the folder is put on
``sys.path`` at once (no restart needed for ONNX Runtime) and ``installed`` is emitted so the dock checks
its dependencies again.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import List, Optional

from qgis.PyQt.QtCore import QProcess, QProcessEnvironment, pyqtSignal
from qgis.PyQt.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QDialog,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from .. import installer
from ..deps import DependencyReport, check_dependencies
from .settings import PluginSettings

STEPS = (("Collecting", "Finding packages…"), ("Downloading", "Downloading…"), ("Processing", "Reading wheels…"),
         ("Installing collected packages", "Installing…"), ("Successfully installed", "Installed."))


class InstallerDialog(QDialog):
    """Install dependencies. ``installed(ok)`` is emitted when pip has finished."""

    installed = pyqtSignal(bool)

    def __init__(self, target: Path, parent: Optional[QWidget] = None, settings: Optional[PluginSettings] = None,
                 report: Optional[DependencyReport] = None) -> None:
        super().__init__(parent)
        self.setObjectName("Sar2EoInstaller")
        self.setWindowTitle("SAR2EO & Cloud — install dependencies")
        self.target = Path(target)
        self.settings = settings or PluginSettings()
        self.report = report if report is not None else check_dependencies()
        self.process: Optional[QProcess] = None
        self.output = ""
        self.failure = ""
        self._build()
        self._update_command()

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        intro = QLabel("Installs the Python packages the plugin needs into its own folder, which it adds to "
                       f"QGIS's Python when it starts:<br><code>{self.target}</code>", self)
        intro.setWordWrap(True)
        layout.addWidget(intro)
        self.runtime_group = QButtonGroup(self)
        self.cpu_radio = QRadioButton(installer.RUNTIME_LABELS["cpu"], self)
        self.cpu_radio.setObjectName("runtimeCpu")
        self.gpu_radio = QRadioButton(installer.RUNTIME_LABELS["gpu"], self)
        self.gpu_radio.setObjectName("runtimeGpu")
        for i, radio in enumerate((self.cpu_radio, self.gpu_radio)):
            self.runtime_group.addButton(radio, i)
            layout.addWidget(radio)
        (self.gpu_radio if self.settings.install_runtime == "gpu" else self.cpu_radio).setChecked(True)
        self.torch_check = QCheckBox("Also install PyTorch (optional: several GB; only needed to run models "
                                     "that have no ONNX graph)", self)
        self.torch_check.setObjectName("withTorch")
        self.torch_check.setChecked(self.settings.install_torch)
        layout.addWidget(self.torch_check)
        self.onnx_check = QCheckBox(installer.ONNX_LABEL, self)
        self.onnx_check.setObjectName("withOnnx")
        layout.addWidget(self.onnx_check)
        self.command_label = QLabel("", self)
        self.command_label.setObjectName("pipCommand")
        self.command_label.setWordWrap(True)
        layout.addWidget(self.command_label)

        buttons = QHBoxLayout()
        self.install_button = QPushButton("Install", self)
        self.install_button.setObjectName("installButton")
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setObjectName("cancelInstallButton")
        self.cancel_button.setEnabled(False)
        buttons.addWidget(self.install_button)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)
        self.progress = QProgressBar(self)
        self.progress.setObjectName("installProgress")
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        layout.addWidget(self.progress)
        self.status = QLabel("", self)
        self.status.setObjectName("installStatus")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        self.log = QPlainTextEdit(self)
        self.log.setObjectName("installLog")
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(2000)
        layout.addWidget(self.log, 1)
        self.resize(760, 480)

        self.runtime_group.buttonClicked.connect(self._update_command)
        self.torch_check.toggled.connect(self._update_command)
        self.onnx_check.toggled.connect(self._update_command)
        self.install_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)

    @property
    def runtime(self) -> str:
        return "gpu" if self.gpu_radio.isChecked() else "cpu"

    def specs(self) -> List[str]:
        return installer.requirements(self.runtime, self.torch_check.isChecked(), self.report,
                                      with_onnx=self.onnx_check.isChecked())

    def command(self) -> List[str]:
        return installer.pip_command(self.target, self.specs())

    def _update_command(self, *_args) -> None:
        self.settings.install_runtime = self.runtime
        self.settings.install_torch = self.torch_check.isChecked()
        try:
            self.command_label.setText("pip will install: " + " ".join(self.specs()))
        except RuntimeError as exc:
            self.command_label.setText(str(exc))

    def is_running(self) -> bool:
        return self.process is not None and self.process.state() != QProcess.ProcessState.NotRunning

    def start(self) -> None:
        if self.is_running():
            return
        try:
            argv = self.command()
        except RuntimeError as exc:
            self._fail(f"{exc} Install Python's pip for QGIS, or run the command from the README by hand.")
            return
        self.output, self.failure = "", ""
        self.log.clear()
        self.log.appendPlainText("$ " + " ".join(argv))
        self.process = QProcess(self)
        self.process.setProcessChannelMode(QProcess.ProcessChannelMode.MergedChannels)
        self.process.setProcessEnvironment(QProcessEnvironment.systemEnvironment())
        self.process.readyReadStandardOutput.connect(self._read)
        self.process.finished.connect(self._finished)
        self.process.errorOccurred.connect(self._error)
        self.progress.setRange(0, 0)   # busy: pip does not say how far it is
        self.status.setText("Starting pip…")
        for w in (self.install_button, self.cpu_radio, self.gpu_radio, self.torch_check):
            w.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.process.start(argv[0], argv[1:])

    def _read(self) -> None:
        text = bytes(self.process.readAllStandardOutput()).decode("utf-8", "replace")
        self.output += text
        for line in text.splitlines():
            if line.strip():
                self.log.appendPlainText(line.rstrip())
            for prefix, label in STEPS:
                if line.startswith(prefix):
                    name = re.sub(r"^\S+\s+", "", line).split(" ")[0] if prefix in ("Collecting",
                                                                                  "Downloading") else ""
                    self.status.setText(f"{label} {name}".strip())

    def _error(self, error) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            self._fail("pip could not be started (no Python with pip was found beside QGIS). Install pip for "
                       "QGIS's Python, or run the command from the README by hand.")

    def _finished(self, code: int, _status=None) -> None:
        if self.process is not None:
            self._read()
        self._done()
        if code == 0:
            installer.activate(self.target)
            self.report = check_dependencies()
            left = self.report.message()
            self.status.setText("Installed. " + (f"Still missing: {left}" if left else
                                                 "The plugin's tools can run now."))
            self.progress.setRange(0, 1)
            self.progress.setValue(1)
            self.installed.emit(True)
        elif not self.failure:
            self._fail(installer.explain_failure(self.output, code, self.target))

    def _fail(self, text: str) -> None:
        self._done()
        self.failure = text
        self.status.setText(f"<b>Not installed:</b> {text}")
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.installed.emit(False)

    def _done(self) -> None:
        for w in (self.install_button, self.cpu_radio, self.gpu_radio, self.torch_check):
            w.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def cancel(self) -> None:
        if self.is_running():
            self.failure = "Cancelled: pip was stopped; press Install to try again."
            self.process.kill()
            self.status.setText(self.failure)

    def closeEvent(self, event) -> None:  # noqa: N802
        self.cancel()
        if self.process is not None:
            self.process.waitForFinished(5000)
        super().closeEvent(event)

"""The dock's model manager: what is installed, what can be downloaded, and doing it.

Lists every model of the plugin's index and every card in the models folder with its state (installed,
bundled with the plugin, available, incomplete); downloads the selected models with progress and Cancel
(in a worker thread: the GUI never waits on the network), each file verified by sha256 before it is put
in place (a bad download is removed, :mod:`..core.download`); deletes a model; imports a local card with
its weights or graph; changes the models folder. ``sar2eo_cloud:download_models`` does the same headless.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import List, Optional

from qgis.gui import QgsFileWidget
from qgis.PyQt.QtCore import QObject, Qt, pyqtSignal
from qgis.PyQt.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..core import modelfile, modelstore
from ..core.errors import CancelledError, Sar2EoError
from .settings import PluginSettings

STATE_LABELS = {modelstore.INSTALLED: "installed", modelstore.BUNDLED: "inside the plugin",
                modelstore.AVAILABLE: "available for download", modelstore.INCOMPLETE: "incomplete (download again)"}
COLUMNS = ("Model", "Task", "Bands", "Size", "State", "Licence")


class _Signals(QObject):
    progress = pyqtSignal(str, object, object)   # model name, bytes done, bytes total (or None)
    finished = pyqtSignal(list, str)             # installed names, error text ('' = none; 'cancelled')


class ModelManagerDialog(QDialog):
    """Model manager. ``modelsChanged`` is emitted after a download, delete, import or folder change."""

    modelsChanged = pyqtSignal()  # noqa: N815

    def __init__(self, parent: Optional[QWidget] = None, settings: Optional[PluginSettings] = None) -> None:
        super().__init__(parent)
        self.setObjectName("Sar2EoModelManager")
        self.setWindowTitle("SAR2EO & Cloud — models")
        self.settings = settings or PluginSettings()
        self._cancel = threading.Event()
        self._worker: Optional[threading.Thread] = None
        self._signals = _Signals()
        self._signals.progress.connect(self._on_progress)
        self._signals.finished.connect(self._on_finished)
        self._build()
        self.refresh()

    # ---- construction ----------------------------------------------------------------------
    def _build(self) -> None:
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.folder = QgsFileWidget(self)
        self.folder.setObjectName("modelsFolder")
        self.folder.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        store = modelstore.store_dir()
        self.folder.setFilePath(str(store) if store else "")
        self.folder.setToolTip("Where downloaded models are kept (the QGIS profile's folder unless you choose one).")
        form.addRow("Models folder", self.folder)
        layout.addLayout(form)

        self.table = QTableWidget(0, len(COLUMNS), self)
        self.table.setObjectName("modelTable")
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setStretchLastSection(True)
        layout.addWidget(self.table, 1)

        buttons = QHBoxLayout()
        self.download_button = QPushButton("Download", self)
        self.download_button.setObjectName("downloadButton")
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setObjectName("cancelDownloadButton")
        self.delete_button = QPushButton("Delete", self)
        self.delete_button.setObjectName("deleteButton")
        self.import_button = QPushButton("Import card…", self)
        self.import_button.setObjectName("importButton")
        for b in (self.download_button, self.cancel_button, self.delete_button, self.import_button):
            buttons.addWidget(b)
        layout.addLayout(buttons)

        self.progress = QProgressBar(self)
        self.progress.setObjectName("downloadProgress")
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        layout.addWidget(self.progress)
        self.status = QLabel("", self)
        self.status.setObjectName("modelStatus")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.status)
        self.resize(760, 420)

        self.download_button.clicked.connect(self.download_selected)
        self.cancel_button.clicked.connect(self.cancel)
        self.delete_button.clicked.connect(self.delete_selected)
        self.import_button.clicked.connect(self.import_card)
        self.folder.fileChanged.connect(self._folder_changed)
        self.table.itemSelectionChanged.connect(self._update_buttons)

    # ---- the list --------------------------------------------------------------------------
    def refresh(self) -> None:
        index = {e.name: e for e in modelstore.load_index()}
        names = modelstore.known_names()
        self.table.setRowCount(len(names))
        for row, name in enumerate(names):
            entry = index.get(name)
            size = (f"{sum(f.bytes for f in modelstore.files_for_runtimes(entry)) / 1e6:.0f} MB" if entry else "")
            values = (name, entry.task if entry else "", ", ".join(entry.bands) if entry else "", size,
                      STATE_LABELS[modelstore.status(name)], entry.licence if entry else "your own model")
            for col, text in enumerate(values):
                item = QTableWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole, name)
                self.table.setItem(row, col, item)
        self.table.resizeColumnsToContents()
        self._update_buttons()

    def selected_names(self) -> List[str]:
        rows = sorted({i.row() for i in self.table.selectedItems()})
        return [self.table.item(r, 0).data(Qt.ItemDataRole.UserRole) for r in rows]

    def select(self, names: List[str]) -> None:
        """Select the rows of ``names`` (and only those)."""
        self.table.clearSelection()
        mode = self.table.selectionMode()
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.MultiSelection)
        for row in range(self.table.rowCount()):
            if self.table.item(row, 0).text() in names:
                self.table.selectRow(row)
        self.table.setSelectionMode(mode)

    def is_busy(self) -> bool:
        return self._worker is not None and self._worker.is_alive()

    def _update_buttons(self) -> None:
        busy = self.is_busy()
        chosen = self.selected_names()
        self.download_button.setEnabled(not busy and any(modelstore.index_entry(n) for n in chosen))
        self.cancel_button.setEnabled(busy)
        self.delete_button.setEnabled(not busy and any(modelstore.status(n) in (modelstore.INSTALLED,
                                                                                  modelstore.INCOMPLETE)
                                                       for n in chosen))
        self.import_button.setEnabled(not busy)
        self.folder.setEnabled(not busy)

    # ---- actions ---------------------------------------------------------------------------
    def _folder_changed(self, path: str) -> None:
        default = None
        try:
            from ..profile import default_models_dir

            default = default_models_dir()
        except Exception:  # noqa: BLE001 - outside a QGIS profile (tests): no default to compare with
            pass
        self.settings.models_dir = "" if (not path or (default and Path(path) == default)) else path
        modelstore.set_store_dir(Path(path) if path else default)
        self.refresh()
        self.modelsChanged.emit()

    def download_selected(self) -> None:
        names = [n for n in self.selected_names() if modelstore.index_entry(n)]
        if not names or self.is_busy():
            return
        self._cancel.clear()
        self.progress.setValue(0)
        self.status.setText(f"Downloading {', '.join(names)}…")
        store = modelstore.store_dir()
        self._worker = threading.Thread(target=self._download, args=(names, store), daemon=True,
                                        name="sar2eo-model-download")
        self._worker.start()
        self._update_buttons()

    def _download(self, names: List[str], store: Optional[Path]) -> None:
        """Worker thread: no widget is touched here, only signals (queued to the GUI thread)."""
        done: List[str] = []
        try:
            with modelstore.archive_session(store):    # several ukis models: their wheel is fetched once
                for name in names:
                    modelstore.install(name, store=store, cancel=self._cancel.is_set,
                                       progress=lambda d, t, name=name: self._signals.progress.emit(name, d, t))
                    done.append(name)
        except CancelledError:
            self._signals.finished.emit(done, "cancelled")
            return
        except Sar2EoError as exc:
            self._signals.finished.emit(done, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - shown in words, never lost in a thread
            self._signals.finished.emit(done, f"Unexpected error: {exc}")
            return
        self._signals.finished.emit(done, "")

    def _on_progress(self, name: str, done, total) -> None:
        if total:
            self.progress.setValue(int(100 * done / total))
        self.status.setText(f"Downloading {name}: {done / 1e6:.1f}" + (f" of {total / 1e6:.1f}" if total else "")
                            + " MB")

    def _on_finished(self, done: list, error: str) -> None:
        self._worker = None
        if error == "cancelled":
            self.status.setText("Download cancelled. What was received is kept and the next download resumes it."
                                + (f" Installed: {', '.join(done)}." if done else ""))
        elif error:
            self.status.setText(error)
        else:
            self.progress.setValue(100)
            self.status.setText(f"Installed and verified: {', '.join(done)}.")
        self.refresh()
        self.modelsChanged.emit()

    def cancel(self) -> None:
        self._cancel.set()
        self.status.setText("Cancelling…")

    def wait(self, timeout: float = 30.0) -> bool:
        """Wait for a running download's thread (closing, tests); True when none is running."""
        worker = self._worker
        if worker is not None:
            worker.join(timeout)
        return not (worker is not None and worker.is_alive())

    def delete_selected(self, confirm: bool = True) -> None:
        names = [n for n in self.selected_names()
                 if modelstore.status(n) in (modelstore.INSTALLED, modelstore.INCOMPLETE)]
        if not names:
            return
        if confirm and QMessageBox.question(self, "Delete models", f"Delete {', '.join(names)} from "
                                            f"{modelstore.store_dir()}?") != QMessageBox.StandardButton.Yes:
            return
        removed = [p.name for n in names for p in modelstore.remove(n)]
        self.status.setText(f"Deleted {', '.join(removed)}.")
        self.refresh()
        self.modelsChanged.emit()

    def import_card(self, path: Optional[str] = None) -> None:
        if not path:
            path, _ = QFileDialog.getOpenFileName(self, "Import a model card", "", "Model cards (*.json)")
        if not path:
            return
        try:
            card = modelstore.import_card(path)
        except (Sar2EoError, OSError) as exc:
            self.status.setText(f"Not imported: {exc}")
            return
        self.status.setText(f"Imported {modelfile.card_path_for(card).stem} into {card.parent}.")
        self.refresh()
        self.modelsChanged.emit()

    def closeEvent(self, event) -> None:  # noqa: N802
        if self.is_busy():
            self.cancel()
            self.wait(10.0)
        super().closeEvent(event)

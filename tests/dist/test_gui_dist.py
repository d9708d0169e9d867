"""The dock's model manager and dependency installer, driven as a user would (headless Qt, pytest-qgis):
downloads from a 127.0.0.1 server (GENERATED files, see conftest.world), pip against a local wheelhouse."""
from __future__ import annotations

import os
import sys

import pytest
from generated import WEIGHTS
from wheelhouse import clean_pip_env, ensure_wheelhouse

from sar2eo_cloud_plugin import installer
from sar2eo_cloud_plugin.core import download, modelstore
from tests.gui.conftest import wait_until


@pytest.fixture
def manager(qgis_app, world):
    from sar2eo_cloud_plugin.gui.model_manager import ModelManagerDialog

    dialog = ModelManagerDialog()
    yield dialog
    dialog.close()


def test_lists_downloads_and_deletes(manager, world):
    _bundled, store, _server = world
    assert manager.table.rowCount() == 1 and manager.table.item(0, 0).text() == "sar2eo_rgb"
    assert manager.table.item(0, 4).text() == "available for download"
    assert manager.folder.filePath() == str(store)
    manager.select(["sar2eo_rgb"])
    assert manager.download_button.isEnabled() and not manager.delete_button.isEnabled()
    manager.download_button.click()
    assert wait_until(lambda: not manager.is_busy(), 30)
    wait_until(lambda: manager.table.item(0, 4).text() == "installed", 5)
    assert manager.table.item(0, 4).text() == "installed", manager.status.text()
    assert manager.status.text().startswith("Installed and verified") and manager.progress.value() == 100
    assert (store / "sar2eo_rgb.safetensors").read_bytes() == WEIGHTS
    manager.select(["sar2eo_rgb"])
    manager.delete_selected(confirm=False)
    assert manager.table.item(0, 4).text() == "available for download"
    assert not (store / "sar2eo_rgb.safetensors").exists()


def test_bad_download_is_removed_and_said(manager, world):
    _bundled, store, server = world
    server.add("sar2eo_rgb.safetensors", WEIGHTS[::-1])
    manager.select(["sar2eo_rgb"])
    manager.download_button.click()
    assert wait_until(lambda: not manager.is_busy(), 30)
    wait_until(lambda: "expected" in manager.status.text(), 5)
    assert "is not the expected one" in manager.status.text() and "removed" in manager.status.text()
    assert modelstore.status("sar2eo_rgb") == modelstore.AVAILABLE
    assert not any(p.name.startswith("sar2eo_rgb.safetensors") for p in store.glob("*"))


def test_slow_download_cancelled_from_the_dialog(manager, world):
    _bundled, store, server = world
    server.files["/sar2eo_rgb.safetensors"].delay = 1.0      # a slow server: 16 KiB a second
    manager.select(["sar2eo_rgb"])
    manager.download_button.click()
    assert wait_until(lambda: manager.progress.value() > 0, 30)
    assert manager.cancel_button.isEnabled(), manager.status.text()
    manager.cancel_button.click()
    assert wait_until(lambda: not manager.is_busy(), 30)
    wait_until(lambda: "cancelled" in manager.status.text(), 5)
    assert "Download cancelled" in manager.status.text()
    assert modelstore.status("sar2eo_rgb") == modelstore.AVAILABLE
    kept = download.part_path(store / "sar2eo_rgb.safetensors")
    assert 0 < kept.stat().st_size < len(WEIGHTS)             # kept for a resume, never installed


def test_import_card(manager, world, tmp_path):
    from generated import write_local_card

    manager.import_card(str(write_local_card(tmp_path / "mine")))
    names = [manager.table.item(r, 0).text() for r in range(manager.table.rowCount())]
    assert "my_rgbn" in names and manager.status.text().startswith("Imported my_rgbn")


# ------------------------------------------------------------------------------------------ installer
@pytest.fixture
def pip_env(monkeypatch):
    """pip as the dialog runs it (QProcess inherits the environment): this Python, the local wheelhouse only."""
    for key, value in clean_pip_env().items():
        if key.startswith("PIP_"):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv(installer.PYTHON_ENV, sys.executable)
    monkeypatch.setenv("PIP_NO_INDEX", "1")


def _installer(tmp_path):
    from sar2eo_cloud_plugin.deps import check_dependencies
    from sar2eo_cloud_plugin.gui.installer import InstallerDialog

    return InstallerDialog(installer.target_dir(tmp_path / "profile"), report=check_dependencies())


def test_installer_installs_from_wheelhouse(qgis_app, pip_env, monkeypatch, tmp_path):
    monkeypatch.setenv("PIP_FIND_LINKS", str(ensure_wheelhouse()))
    monkeypatch.setattr(sys, "path", list(sys.path))
    dialog = _installer(tmp_path)
    results = []
    dialog.installed.connect(results.append)
    assert dialog.cpu_radio.isChecked() and not dialog.torch_check.isChecked()
    assert "onnxruntime==1.32.0" in dialog.command_label.text()
    dialog.install_button.click()
    assert wait_until(lambda: results, 300), dialog.log.toPlainText()[-2000:]
    assert results == [True], dialog.status.text() + dialog.log.toPlainText()[-2000:]
    assert (dialog.target / "onnxruntime" / "__init__.py").is_file()
    assert str(dialog.target) in sys.path
    assert "Successfully installed" in dialog.log.toPlainText()
    assert dialog.status.text().startswith("Installed.")
    dialog.close()


def test_installer_failure_in_words(qgis_app, pip_env, monkeypatch, tmp_path):
    empty = tmp_path / "no_wheels"
    empty.mkdir()
    monkeypatch.setenv("PIP_FIND_LINKS", str(empty))
    dialog = _installer(tmp_path)
    results = []
    dialog.installed.connect(results.append)
    dialog.install_button.click()
    assert wait_until(lambda: results, 120)
    assert results == [False]
    assert "Not installed:" in dialog.status.text() and "pip found no package" in dialog.status.text()
    assert "Traceback" not in dialog.status.text() and dialog.install_button.isEnabled()
    assert not os.path.isdir(dialog.target / "onnxruntime")
    dialog.close()

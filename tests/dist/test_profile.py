"""What the plugin sets up when it starts (profile.activate): its pip folder on sys.path, the model store."""
from __future__ import annotations

import sys

from sar2eo_cloud_plugin import installer, profile
from sar2eo_cloud_plugin.core import modelstore


def test_activate_at_start(qgis_app, monkeypatch, tmp_path):
    from qgis.core import QgsApplication

    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delenv(modelstore.STORE_ENV, raising=False)
    monkeypatch.setattr(modelstore, "_store_dir", None)
    folder = profile.python_dir()
    assert folder == installer.target_dir(QgsApplication.qgisSettingsDirPath())
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sar2eo_fake_installed_pkg.py").write_text("VALUE = 42\n")   # GENERATED stand-in for a package
    profile.activate()
    assert sys.path[-1] == str(folder)
    import sar2eo_fake_installed_pkg

    assert sar2eo_fake_installed_pkg.VALUE == 42
    assert modelstore.store_dir() == profile.default_models_dir()
    assert profile.default_models_dir().parent == folder.parent
    sys.modules.pop("sar2eo_fake_installed_pkg", None)
    (folder / "sar2eo_fake_installed_pkg.py").unlink()


def test_chosen_models_folder_wins(qgis_app, monkeypatch, tmp_path):
    from sar2eo_cloud_plugin.gui.settings import PluginSettings

    monkeypatch.delenv(modelstore.STORE_ENV, raising=False)
    monkeypatch.setattr(modelstore, "_store_dir", None)
    settings = PluginSettings()
    before = settings.models_dir
    try:
        settings.models_dir = str(tmp_path)
        profile.activate()
        assert modelstore.store_dir() == tmp_path
    finally:
        settings.models_dir = before

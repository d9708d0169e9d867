"""The plugin's folders under the QGIS profile, set up when the plugin starts (desktop and qgis_process).

``<profile>/sar2eo_cloud/python<X.Y>``: Python packages the dock's Install button put there (see
:mod:`.installer`), appended to ``sys.path``. ``<profile>/sar2eo_cloud/models``: downloaded models (see
:mod:`.core.modelstore`), unless the user chose another folder (setting ``sar2eo_cloud_plugin/models_dir``).
"""
from __future__ import annotations

from pathlib import Path

from qgis.core import QgsApplication

from . import installer
from .core import modelstore


def profile_dir() -> Path:
    return Path(QgsApplication.qgisSettingsDirPath())


def python_dir() -> Path:
    return installer.target_dir(profile_dir())


def default_models_dir() -> Path:
    return profile_dir() / installer.SUBDIR / "models"


def models_dir() -> Path:
    from .gui.settings import PluginSettings

    chosen = PluginSettings().models_dir
    return Path(chosen) if chosen else default_models_dir()


def activate() -> None:
    """Packages installed by the plugin become importable; downloaded models are found."""
    installer.activate(python_dir())
    modelstore.set_store_dir(models_dir())

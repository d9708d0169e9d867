"""Putting the plugin where QGIS loads it from, outside this checkout, for the tests that start
``qgis_process.bin`` or the real ``qgis`` binary (one definition for all of them)."""
from __future__ import annotations

import os
import shutil
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PLUGIN = "sar2eo_cloud_plugin"

def copy_plugin(plugins_dir: Path) -> Path:
    """Copy the package into ``plugins_dir/sar2eo_cloud_plugin`` as QGIS loads it from a plugins folder.

    copytree follows the package's metadata.txt/LICENSE symlinks (to the top-level files), so the copy
    holds real files. Skips when the top-level metadata.txt is missing: QGIS cannot load the plugin then."""
    if not (REPO / "metadata.txt").is_file():
        pytest.skip("top-level metadata.txt is missing; QGIS cannot load the plugin without it")
    dest = plugins_dir / PLUGIN
    shutil.copytree(REPO / PLUGIN, dest, symlinks=False,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.partial.tif"))
    assert (dest / "metadata.txt").is_file() and not (dest / "metadata.txt").is_symlink()
    return dest


def install_plugin_in_profile(profiles: Path) -> Path:
    """Install the plugin into a fresh default profile under ``profiles`` (for ``qgis --profiles-path``)
    and enable it in that profile's QGIS3.ini; returns the installed plugin folder."""
    dest = copy_plugin(profiles / "profiles" / "default" / "python" / "plugins")
    enable_plugin_in_profile(profiles)
    return dest


def enable_plugin_in_profile(profiles: Path) -> None:
    """Make ``profiles``' default profile the default and enable the plugin (and Processing) in its QGIS3.ini,
    as the Plugin Manager does after an install; no version check, no tips."""
    profile = profiles / "profiles" / "default"
    ini = profile / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True, exist_ok=True)
    ini.write_text("[PythonPlugins]\n"
                   f"{PLUGIN}=true\n"
                   "processing=true\n"
                   "\n[qgis]\n"
                   "checkVersion=false\n"
                   "showTips=false\n"
                   "allowVersionCheck=false\n", encoding="utf-8")
    (profiles / "profiles" / "profiles.ini").write_text("[core]\ndefaultProfile=default\n", encoding="utf-8")


def qgis_process_env(plugins_dir: Path, config_dir: Path, **extra: str) -> dict:
    """Environment for ``qgis_process.bin``: the venv's packages on PYTHONPATH (it does not see the venv
    otherwise), the plugin from ``plugins_dir`` and a throw-away QGIS profile in ``config_dir``."""
    env = dict(os.environ)
    env.update(QT_QPA_PLATFORM="offscreen", PYTHONPATH=sysconfig.get_paths()["purelib"],
               QGIS_PLUGINPATH=str(plugins_dir), QGIS_CUSTOM_CONFIG_PATH=str(config_dir), **extra)
    return env

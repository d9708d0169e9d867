"""Run inside the real ``qgis`` binary (see tests/test_packaging.py::test_qgis_installs_the_zip_like_a_user):
install the release zip with QGIS's own "Install from ZIP" code (pyplugin_installer), then record what loaded.

Environment: SAR2EO_INSTALL_ZIP (the zip), SAR2EO_INSTALL_JSON (where to write the facts).
"""
import json
import os
import sys
import traceback

import qgis.utils
from qgis.core import QgsApplication
from qgis.PyQt.QtCore import QTimer

PLUGIN = "sar2eo_cloud_plugin"
facts = {"errors": []}


def record():
    try:
        from pyplugin_installer import instance

        instance().installFromZipFile(os.environ["SAR2EO_INSTALL_ZIP"])
        # The profile's plugins folder: qgis.utils.HOME_PLUGIN_PATH in QGIS 3.40, qgis.utils.home_plugin_path in 3.22.
        home = getattr(qgis.utils, "HOME_PLUGIN_PATH", None) or qgis.utils.home_plugin_path
        facts["home_plugin_path"] = home
        facts["installed"] = os.path.isfile(os.path.join(home, PLUGIN, "metadata.txt"))
        facts["active"] = PLUGIN in qgis.utils.active_plugins
        module = sys.modules.get(PLUGIN)
        facts["loaded_from"] = getattr(module, "__file__", None)
        facts["name"] = qgis.utils.pluginMetadata(PLUGIN, "name")
        facts["version"] = qgis.utils.pluginMetadata(PLUGIN, "version")
        facts["icon"] = qgis.utils.pluginMetadata(PLUGIN, "icon")
        provider = QgsApplication.processingRegistry().providerById("sar2eo_cloud")
        facts["algorithms"] = sorted(a.id() for a in provider.algorithms()) if provider else []
    except Exception:  # noqa: BLE001 - everything goes into the facts
        facts["errors"].append(traceback.format_exc())
    with open(os.environ["SAR2EO_INSTALL_JSON"], "w", encoding="utf-8") as fh:
        json.dump(facts, fh, indent=2)
    QTimer.singleShot(300, lambda: os._exit(0))  # noqa: SLF001 - quit without "save project?" prompts


QTimer.singleShot(1000, record)

"""Plugin settings remembered between sessions (QgsSettings, under ``sar2eo_cloud_plugin/``)."""
from __future__ import annotations

from qgis.core import QgsSettings

from ..core.tasks import DEFAULT_DEVICE, DEVICE_KEYS, task as task_spec

PREFIX = "sar2eo_cloud_plugin/"


class PluginSettings:
    """Typed access to the plugin's QgsSettings keys.

    Keys: ``device`` (auto/cpu/cuda), ``output_folder`` (one-click results; empty = temporary
    outputs), ``band_set`` (last band set key), ``tile_size/translate`` and ``tile_size/cloud_mask``,
    ``models_dir`` (where downloaded models go; empty = under the QGIS profile, see ``profile.py``),
    ``install_runtime`` (cpu/gpu) and ``install_torch`` (the dock's dependency installer's choices).
    """

    def __init__(self, settings: QgsSettings = None) -> None:
        self._s = settings or QgsSettings()

    def _get(self, key: str, default, type_=str):
        value = self._s.value(PREFIX + key, default)
        try:
            return type_(value) if value is not None else default
        except (TypeError, ValueError):
            return default

    def _set(self, key: str, value) -> None:
        self._s.setValue(PREFIX + key, value)

    @property
    def device(self) -> str:
        value = str(self._get("device", DEFAULT_DEVICE)).lower()
        return value if value in DEVICE_KEYS else DEFAULT_DEVICE

    @device.setter
    def device(self, value: str) -> None:
        self._set("device", value if value in DEVICE_KEYS else DEFAULT_DEVICE)

    @property
    def output_folder(self) -> str:
        return self._get("output_folder", "") or ""

    @output_folder.setter
    def output_folder(self, value: str) -> None:
        self._set("output_folder", value or "")

    @property
    def band_set(self) -> str:
        from ..core.bands import BAND_SET_KEYS

        value = self._get("band_set", BAND_SET_KEYS[0])
        return value if value in BAND_SET_KEYS else BAND_SET_KEYS[0]

    @band_set.setter
    def band_set(self, value: str) -> None:
        self._set("band_set", value)

    def tile_size(self, task: str) -> int:
        default = task_spec(task).default_tile_size
        value = self._get(f"tile_size/{task}", default, int)
        return value if value >= 16 else default

    def set_tile_size(self, task: str, value: int) -> None:
        self._set(f"tile_size/{task}", int(value))

    @property
    def models_dir(self) -> str:
        return self._get("models_dir", "") or ""

    @models_dir.setter
    def models_dir(self, value: str) -> None:
        self._set("models_dir", value or "")

    @property
    def install_runtime(self) -> str:
        value = str(self._get("install_runtime", "cpu"))
        return value if value in ("cpu", "gpu") else "cpu"

    @install_runtime.setter
    def install_runtime(self, value: str) -> None:
        self._set("install_runtime", value)

    @property
    def install_torch(self) -> bool:
        return str(self._get("install_torch", "false")).lower() in ("true", "1")

    @install_torch.setter
    def install_torch(self, value: bool) -> None:
        self._set("install_torch", "true" if value else "false")

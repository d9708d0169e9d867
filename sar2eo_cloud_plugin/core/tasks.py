"""What the plugin knows about its tasks and compute devices, declared once.

Processing (algorithm ids, device enum), the folder batch (task enum, output names), the dock,
the layer actions, the settings and the dependency check all derive their tables from here, so a
new task is one :class:`TaskSpec` (plus its algorithm) instead of edits in half a dozen files.
QGIS-free and light: it imports nothing but the standard library and :mod:`.bands`.

The spellings are stable interfaces and stay as they were: ``key`` is the plugin's own task key
(settings ``tile_size/<key>``, the GUI, the dependency features), ``card_task`` the ``task`` field
of a model card, ``batch_name`` the word in the batch's file names (``<stem>_cloudmask.tif``,
``sar2eo_batch_cloudmask_summary.json``: changing it would stop earlier batches from resuming).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, Tuple

from .bands import BAND_SET_KEYS

PROVIDER_ID = "sar2eo_cloud"


# --------------------------------------------------------------------------- devices
@dataclass(frozen=True)
class Device:
    key: str            # what core.inference.resolve_device takes
    label: str          # the Processing enum option
    short_label: str    # the dock's combo box


# The order is the Processing DEVICE enum: the index is the stable value (.model3 files, scripts).
DEVICES: Tuple[Device, ...] = (
    Device("auto", "Auto (CUDA GPU if available, else CPU)", "Auto"),
    Device("cpu", "CPU", "CPU"),
    Device("cuda", "CUDA (NVIDIA GPU)", "CUDA"),
)
DEVICE_KEYS: Tuple[str, ...] = tuple(d.key for d in DEVICES)
DEVICE_LABELS: Tuple[str, ...] = tuple(d.label for d in DEVICES)
DEFAULT_DEVICE = DEVICE_KEYS[0]


def device_index(key: str) -> int:
    """The DEVICE enum index of ``key`` (0, auto, for anything unknown)."""
    return DEVICE_KEYS.index(key) if key in DEVICE_KEYS else 0


# --------------------------------------------------------------------------- tasks
@dataclass(frozen=True)
class TaskSpec:
    key: str                        # plugin task key: "translate", "cloud_mask"
    card_task: str                  # model card "task": "sar2eo", "cloudmask"
    architectures: Tuple[str, ...]  # network architectures a card of this task may name (core/networks.py)
    algorithm: str                  # Processing algorithm name (id = provider:name)
    label: str                      # short user-visible name (menus, messages, dock)
    batch_label: str                # option of the batch algorithm's TASK enum
    batch_name: str                 # word in the batch's output and summary file names
    icon: str                       # file in the plugin's icons/ folder
    model_name: str                 # bundled model name; "{band_set}" is filled in for translation
    outputs: Mapping[str, str]      # batch output suffix per output parameter of the algorithm
    packages: Tuple[str, ...]       # deps.REQUIREMENTS keys the task always needs at run time
    runtimes: Tuple[Tuple[str, ...], ...]  # alternatives, preferred first: the task runs when ONE is complete
    default_tile_size: int          # dock/one-click tile size (input pixels / network pixels)
    tile_multiple: int              # the network's tile size must be a multiple of this

    @property
    def algorithm_id(self) -> str:
        return f"{PROVIDER_ID}:{self.algorithm}"

    @property
    def summary_name(self) -> str:
        return f"sar2eo_batch_{self.batch_name}_summary.json"

    def bundled_model(self, band_set: str = BAND_SET_KEYS[0]) -> str:
        """Name (card stem) of the bundled model a run with default settings uses."""
        return self.model_name.format(band_set=band_set)

    def bundled_models(self) -> List[str]:
        """Names of every bundled model of the task (cards read for the cloud models; JSON only)."""
        if "{band_set}" in self.model_name:
            return [self.bundled_model(k) for k in BAND_SET_KEYS]
        from .cloud import bundled_cloud_models

        return bundled_cloud_models() or [self.model_name]

    def output_suffix(self, output: str = "OUTPUT", band_set: str = BAND_SET_KEYS[0]) -> str:
        return self.outputs[output].format(band_set=band_set)

    def all_output_suffixes(self) -> Tuple[str, ...]:
        """Every file-name ending this task's batch outputs can have (raster outputs)."""
        found: List[str] = []
        for template in self.outputs.values():
            for name in ([template.format(band_set=k) for k in BAND_SET_KEYS] if "{band_set}" in template
                         else [template]):
                if name not in found:
                    found.append(name)
        return tuple(found)


# What every task needs whichever network runtime runs it, and the torch runtime's own packages. A
# runtime is one entry of TaskSpec.runtimes; another runtime (e.g. onnxruntime) is another entry,
# and deps.py then accepts a task whose packages are there with ANY one complete runtime.
_BASE_PACKAGES = ("numpy", "rasterio")
TORCH_RUNTIME = ("torch", "safetensors")
ORT_RUNTIME = ("onnxruntime",)   # preferred: small, no CUDA download, runs the cards' ONNX graphs

TRANSLATE = TaskSpec(
    key="translate", card_task="sar2eo", architectures=("resnet_generator",), algorithm="translate_sar_to_eo",
    label="Translate SAR to EO", batch_label="Translate SAR to EO (folder of Sentinel-1 VV/VH scenes)",
    batch_name="translate", icon="translate.svg", model_name="sar2eo_{band_set}",
    outputs={"OUTPUT": "_eo_{band_set}.tif"},
    packages=_BASE_PACKAGES, runtimes=(ORT_RUNTIME, TORCH_RUNTIME), default_tile_size=256, tile_multiple=4,
)
CLOUD_MASK = TaskSpec(
    key="cloud_mask", card_task="cloudmask", architectures=("unet",), algorithm="cloud_mask",
    label="Cloud mask", batch_label="Cloud mask (folder of Sentinel-2 scenes)",
    batch_name="cloudmask", icon="cloud.svg", model_name="cloudmask",
    outputs={"OUTPUT": "_cloudmask.tif", "OUTPUT_PROBABILITY": "_cloudprob.tif", "OUTPUT_POLYGONS": "_clouds.gpkg"},
    packages=_BASE_PACKAGES,
    runtimes=(ORT_RUNTIME, TORCH_RUNTIME + ("torchvision", "segmentation_models_pytorch")),
    default_tile_size=512, tile_multiple=32,
)

# In the order of the dock's task combo and the batch's TASK enum (the index is the stable value).
TASKS: Tuple[TaskSpec, ...] = (TRANSLATE, CLOUD_MASK)
BY_KEY: Dict[str, TaskSpec] = {t.key: t for t in TASKS}
CARD_TASKS: Tuple[str, ...] = tuple(t.card_task for t in TASKS)


def task(key: str) -> TaskSpec:
    """The TaskSpec of a plugin task key (ValueError naming the known keys)."""
    try:
        return BY_KEY[key]
    except KeyError:
        raise ValueError(f"unknown task {key!r} (known: {', '.join(BY_KEY)})") from None

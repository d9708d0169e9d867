"""The base class of the plugin's Processing algorithms (as QGIS's own ``QgisAlgorithm``).

It holds what every algorithm repeats: name, group, tags, icon, help URL and ``createInstance``
from class attributes (or from the algorithm's :class:`~..core.tasks.TaskSpec`), a ``tr()`` for
user-visible strings, :meth:`add`, which registers a parameter *with* its help text (every
parameter has one: ``tests/qgis/test_algorithm_contract.py`` checks it), and the parameters the
algorithms share (DEVICE, RUNTIME, TILE_SIZE, OVERLAP, BATCH_SIZE, MODEL_FILE, and the RUNTIME_USED
output), declared once here.
Kept free of torch, like the rest of the package's modules at import time.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple, TypeVar

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingOutputString,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
)
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon

from ..core.runtime import RUNTIME_LABELS, RUNTIMES
from ..core.tasks import DEVICE_KEYS, DEVICE_LABELS, TaskSpec
from .helptext import help_url, icon_path

P = TypeVar("P", bound=QgsProcessingParameterDefinition)

DEVICE_HELP = ("Where the network runs: auto (a CUDA GPU when the runtime sees one, else the CPU), CPU or CUDA. "
               "With ONNX Runtime, CUDA is its CUDA provider (onnxruntime-gpu); auto also takes DirectML or CoreML "
               "where the installed onnxruntime offers them.")
RUNTIME_HELP = ("Which library runs the network: auto (ONNX Runtime when it is installed and the model has an ONNX "
                "graph, else PyTorch), ONNX Runtime, or PyTorch. ONNX Runtime is the faster one on a CPU and needs no "
                "PyTorch; the runtime and provider used are logged and returned as RUNTIME_USED.")
MODEL_FILE_HELP = "A model card (.json beside its .safetensors) instead of a bundled model; its sha256 is checked."

# (name, description, help) of the tiling parameters, in the order they are added.
Tiling = Sequence[Tuple[str, str, str]]


class Sar2EoAlgorithm(QgsProcessingAlgorithm):
    """Subclasses set ``TASK_SPEC`` (name and icon come from it) or ``NAME``/``ICON``, and ``DISPLAY_NAME``,
    ``GROUP``, ``GROUP_ID``, ``TAGS``; they add their parameters with :meth:`add`."""

    TASK_SPEC: Optional[TaskSpec] = None
    NAME = ""
    ICON = ""
    DISPLAY_NAME = ""
    GROUP = ""
    GROUP_ID = ""
    TAGS: Tuple[str, ...] = ()

    # Parameters shared by the algorithms (the names are the Processing contract).
    DEVICE = "DEVICE"
    RUNTIME = "RUNTIME"
    RUNTIME_USED = "RUNTIME_USED"
    TILE_SIZE = "TILE_SIZE"
    OVERLAP = "OVERLAP"
    BATCH_SIZE = "BATCH_SIZE"
    MODEL_FILE = "MODEL_FILE"

    # ------------------------------------------------------------------ metadata
    @classmethod
    def tr(cls, text: str) -> str:
        return QCoreApplication.translate(cls.__name__, text)

    def name(self) -> str:
        return self.TASK_SPEC.algorithm if self.TASK_SPEC is not None else self.NAME

    def displayName(self) -> str:  # noqa: N802
        return self.tr(self.DISPLAY_NAME)

    def group(self) -> str:
        return self.tr(self.GROUP)

    def groupId(self) -> str:  # noqa: N802
        return self.GROUP_ID

    def tags(self):
        return [self.tr(t) for t in self.TAGS]

    def icon(self) -> QIcon:
        name = self.TASK_SPEC.icon if self.TASK_SPEC is not None else self.ICON
        return QIcon(icon_path(name)) if name else super().icon()

    def helpUrl(self) -> str:  # noqa: N802
        return help_url()

    def createInstance(self):  # noqa: N802
        return type(self)()

    # ------------------------------------------------------------------ parameters
    def add(self, param: P, help_text: str, advanced: bool = False) -> P:
        """Add ``param`` with its (translated) help text; ``advanced`` puts it under Advanced."""
        param.setHelp(self.tr(help_text))
        if advanced:
            param.setFlags(param.flags() | QgsProcessingParameterDefinition.Flag.FlagAdvanced)
        self.addParameter(param)
        return param

    def add_device(self, description: str = "Compute device", help_text: str = DEVICE_HELP,
                   advanced: bool = False) -> QgsProcessingParameterEnum:
        return self.add(QgsProcessingParameterEnum(self.DEVICE, self.tr(description),
                                                   options=[self.tr(label) for label in DEVICE_LABELS],
                                                   defaultValue=0), help_text, advanced)

    def add_runtime(self, output: bool = True) -> QgsProcessingParameterEnum:
        """The advanced RUNTIME enum (core.runtime.RUNTIMES) and, with ``output``, the RUNTIME_USED output
        (the folder batch passes RUNTIME on to each file's run and logs what each used)."""
        param = self.add(QgsProcessingParameterEnum(self.RUNTIME, self.tr("Inference runtime"),
                                                    options=[self.tr(label) for label in RUNTIME_LABELS],
                                                    defaultValue=0), RUNTIME_HELP, advanced=True)
        if output:
            self.addOutput(QgsProcessingOutputString(self.RUNTIME_USED,
                                                     self.tr("Runtime used (runtime and provider)")))
        return param

    def add_tiling(self, tiling: Tiling, defaults: Sequence[Optional[int]] = (None, None, None),
                   minimums: Sequence[int] = (0, 0, 0), maximums: Sequence[Optional[int]] = (None, None, None),
                   optional: bool = True) -> None:
        """TILE_SIZE, OVERLAP and BATCH_SIZE (advanced integers) from ``tiling`` = (name, description, help)
        rows, with the algorithm's own defaults and bounds."""
        for (name, description, help_text), default, low, high in zip(tiling, defaults, minimums, maximums):
            kwargs = {"defaultValue": default, "optional": optional, "minValue": low}
            if high is not None:
                kwargs["maxValue"] = high
            self.add(QgsProcessingParameterNumber(name, self.tr(description), QgsProcessingParameterNumber.Type.Integer,
                                                  **kwargs), help_text, advanced=True)

    def add_model_file(self, description: str = "Model file (.json card beside its .safetensors; empty = the bundled "
                       "model)", help_text: str = MODEL_FILE_HELP) -> QgsProcessingParameterFile:
        return self.add(QgsProcessingParameterFile(self.MODEL_FILE, self.tr(description),
                                                   behavior=QgsProcessingParameterFile.Behavior.File, extension="json",
                                                   optional=True), help_text, advanced=True)

    # ------------------------------------------------------------------ reading parameters
    def device_key(self, parameters: Dict, context: QgsProcessingContext) -> str:
        index = self.parameterAsEnum(parameters, self.DEVICE, context)
        if not 0 <= index < len(DEVICE_KEYS):
            choices = [f"{i} ({k})" for i, k in enumerate(DEVICE_KEYS)]
            raise QgsProcessingException(f"Unknown device option {index}; use {', '.join(choices[:-1])} or "
                                         f"{choices[-1]}.")
        return DEVICE_KEYS[index]

    def runtime_key(self, parameters: Dict, context: QgsProcessingContext) -> str:
        if parameters.get(self.RUNTIME) in (None, ""):
            return RUNTIMES[0]
        return self.enum_key(parameters, self.RUNTIME, context, RUNTIMES)

    def optional_number(self, parameters: Dict, name: str, context: QgsProcessingContext, as_int: bool = False):
        """An optional number parameter: None when it is not set."""
        if parameters.get(name) in (None, ""):
            return None
        return self.parameterAsInt(parameters, name, context) if as_int else \
            self.parameterAsDouble(parameters, name, context)

    def enum_key(self, parameters: Dict, name: str, context: QgsProcessingContext, keys: Sequence[str]) -> str:
        index = self.parameterAsEnum(parameters, name, context)
        if not 0 <= index < len(keys):
            raise QgsProcessingException(self.tr(f"{name}: option {index} does not exist (0..{len(keys) - 1})."))
        return keys[index]

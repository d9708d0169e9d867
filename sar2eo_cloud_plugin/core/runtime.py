"""Which inference runtime runs a model — ONNX Runtime or PyTorch — and the predictor each gives.

Both tasks (translation in :mod:`.inference`, the cloud mask in :mod:`.cloud`) get their network from
:func:`load_predictor` and nothing else, so the choice is made in one place:

* ``onnxruntime`` — the model card's ``onnx`` graph (sha256-checked like the weights) in an
  ``onnxruntime.InferenceSession``. Providers: CUDA when the device is ``cuda`` (or ``auto`` and the
  installed onnxruntime offers it), else DirectML or CoreML where the installed build offers them, and
  always the CPU provider last. Needs only numpy and onnxruntime: no torch, torchvision, safetensors or
  segmentation-models-pytorch are imported on this path (``tests/core/test_no_torch.py`` blocks them).
* ``torch`` — the safetensors weights in the network of ``core.networks``, as before.
* ``auto`` (the default) — ONNX Runtime when it is installed and the model has a graph, else torch.
  ONNX Runtime with its graph optimisations is the fastest correct runtime measured
  (``benchmarks/bench_runtimes.py``, ``benchmarks/README.md``), hence the order.

The predictor is the engine's ``predict``: a float32 NCHW batch in, float32 NCHW out, with the card's
activation (sigmoid or softmax over channels) applied; the graphs hold the bare network (logits), so
activation is applied here the same way for both runtimes.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np

from .errors import DeviceError, InputError, ModelFileError

Log = Callable[[str], None]

# The Processing RUNTIME enum's order (the index is the stable value) and the dock's choices.
RUNTIMES: Tuple[str, ...] = ("auto", "onnxruntime", "torch")
RUNTIME_LABELS: Tuple[str, ...] = ("Auto (ONNX Runtime if installed, else PyTorch)", "ONNX Runtime", "PyTorch")
DEFAULT_RUNTIME = RUNTIMES[0]
PRECISIONS = ("float32", "bfloat16")
ACTIVATIONS = (None, "sigmoid", "softmax")

# onnxruntime's GPU / accelerator providers, preferred in this order over the CPU provider.
CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"
ACCELERATOR_PROVIDERS = (CUDA_PROVIDER, "DmlExecutionProvider", "CoreMLExecutionProvider")
# Graph optimisation levels of onnxruntime.GraphOptimizationLevel by name (the benchmark compares them).
ORT_OPTIMISATIONS = ("all", "disable")


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (looked up, not imported; a blocked module counts as absent)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def onnxruntime_available() -> bool:
    return installed("onnxruntime")


def torch_available() -> bool:
    return installed("torch") and installed("safetensors")


def ort_providers_offered() -> List[str]:
    """The execution providers the installed onnxruntime build offers (empty when it is not installed)."""
    if not onnxruntime_available():
        return []
    import onnxruntime as ort

    return list(ort.get_available_providers())


def ort_providers(device: str, offered: Optional[Sequence[str]] = None) -> List[str]:
    """Providers for an InferenceSession on ``device`` (auto / cpu / cuda), best first, CPU last.

    ``offered``: the installed build's providers (default: asked from onnxruntime). ``cuda`` without the
    CUDA provider is a :class:`DeviceError`."""
    offered = list(ort_providers_offered() if offered is None else offered)
    device = (device or "auto").lower()
    if device == "cpu":
        return [CPU_PROVIDER]
    if device == "cuda":
        if CUDA_PROVIDER not in offered:
            raise DeviceError("CUDA was requested but the installed onnxruntime offers no CUDA provider "
                              f"(it offers {', '.join(offered) or 'none'}). Install onnxruntime-gpu, or choose "
                              "device 'auto' or 'cpu'.")
        return [CUDA_PROVIDER, CPU_PROVIDER]
    if device != "auto":
        raise DeviceError(f"Unknown device '{device}' (use auto, cpu or cuda).")
    return [p for p in ACCELERATOR_PROVIDERS if p in offered] + [CPU_PROVIDER]


def describe_runtimes() -> str:
    """One line naming what can run networks here (dialogs, the dock, logs)."""
    parts = []
    if onnxruntime_available():
        import onnxruntime as ort

        parts.append(f"ONNX Runtime {ort.__version__} ({', '.join(ort.get_available_providers())})")
    else:
        parts.append("ONNX Runtime not installed")
    if installed("torch"):
        from .inference import describe_devices

        parts.append(describe_devices())
    else:
        parts.append("PyTorch not installed")
    return "; ".join(parts)


@dataclass(frozen=True)
class RuntimeInfo:
    """What ran a model: ``runtime`` (onnxruntime | torch), ``device`` (cpu | cuda) and ``provider`` (the
    onnxruntime provider that got the graph, or the torch device)."""

    runtime: str
    device: str
    provider: str
    detail: str = ""

    @property
    def label(self) -> str:
        name = "ONNX Runtime" if self.runtime == "onnxruntime" else "PyTorch"
        return f"{name} ({self.provider})" + (f", {self.detail}" if self.detail else "")


# --------------------------------------------------------------------------------------------- activation
def apply_activation(y: np.ndarray, activation: Optional[str]) -> np.ndarray:
    """The card's output activation on logits, over the channel axis (axis 1), in float32."""
    y = np.asarray(y, dtype=np.float32)
    if activation is None:
        return y
    if activation == "sigmoid":
        # 1 / (1 + e^-x) without overflow warnings for large |x|
        out = np.empty_like(y)
        pos = y >= 0
        out[pos] = 1.0 / (1.0 + np.exp(-y[pos]))
        e = np.exp(y[~pos])
        out[~pos] = e / (1.0 + e)
        return out
    if activation == "softmax":
        e = np.exp(y - y.max(axis=1, keepdims=True))
        e /= e.sum(axis=1, keepdims=True)
        return e
    raise InputError(f"Unknown activation '{activation}' (use sigmoid or softmax).")


# --------------------------------------------------------------------------------------------- predictors
class OrtPredictor:
    """numpy batch -> ONNX Runtime session -> activation -> numpy batch."""

    def __init__(self, session: Any, activation: Optional[str] = None) -> None:
        if activation not in ACTIVATIONS:
            raise InputError(f"Unknown activation '{activation}' (use sigmoid or softmax).")
        self.session, self.activation = session, activation
        self.input_name = session.get_inputs()[0].name
        self.output_name = session.get_outputs()[0].name

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        (y,) = self.session.run([self.output_name], {self.input_name: x})
        return apply_activation(y, self.activation)


class TorchPredictor:
    """numpy batch -> network -> numpy batch, on one device, without autograd.

    ``channels_last`` feeds the network NHWC tensors (about 25 % faster for the EfficientNet U-Net
    in torch on CPU; the network must have been converted with ``net.to(memory_format=torch.channels_last)``).
    ``activation``: None, "sigmoid" or "softmax" (over channels).
    """

    def __init__(self, net: Any, device: str, activation: Optional[str] = None, channels_last: bool = False,
                 precision: str = "float32") -> None:
        if precision not in PRECISIONS:
            raise InputError(f"Unknown precision '{precision}' (use {' or '.join(PRECISIONS)}).")
        if activation not in ACTIVATIONS:
            raise InputError(f"Unknown activation '{activation}' (use sigmoid or softmax).")
        self.net, self.device, self.activation = net, device, activation
        self.channels_last, self.precision = channels_last, precision

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if self.precision == "bfloat16":
                with torch.autocast(device_type="cuda" if self.device.startswith("cuda") else "cpu",
                                    dtype=torch.bfloat16):
                    y = self.net(x).float()
            else:
                y = self.net(x)
            if self.activation == "sigmoid":
                y = torch.sigmoid(y)
            elif self.activation == "softmax":
                y = torch.softmax(y.float(), dim=1)
            return y.float().contiguous().cpu().numpy()


# --------------------------------------------------------------------------------------------- choosing
def model_runnable(card_file: Any, card: Any) -> bool:
    """Whether some installed runtime can run this model (files looked up, not hashed)."""
    from . import modelfile

    return ((modelfile.onnx_present(card_file, card) and onnxruntime_available())
            or (modelfile.weights_present(card_file, card) and torch_available()))


def choose_runtime(requested: str, has_graph: bool, has_weights: bool, card_file: Any = "the model",
                   ort_ok: Optional[bool] = None, torch_ok: Optional[bool] = None) -> Tuple[str, str]:
    """(runtime, why) for a model: ``requested`` is auto | onnxruntime | torch; ``has_graph`` /
    ``has_weights``: whether the model's ONNX graph / safetensors weights are installed."""
    requested = (requested or DEFAULT_RUNTIME).lower()
    if requested not in RUNTIMES:
        raise InputError(f"Unknown runtime '{requested}' (use {', '.join(RUNTIMES)}).")
    ort_ok = onnxruntime_available() if ort_ok is None else ort_ok
    torch_ok = torch_available() if torch_ok is None else torch_ok
    if requested == "onnxruntime":
        if not ort_ok:
            raise ModelFileError("Runtime ONNX Runtime was requested but onnxruntime is not installed in QGIS's "
                                 "Python (python3 -m pip install onnxruntime), or choose runtime 'auto'.")
        if not has_graph:
            raise ModelFileError(f"Runtime ONNX Runtime was requested but {card_file} has no ONNX graph installed "
                                 "(run scripts/setup.sh, or export the model again), or choose runtime 'torch'.")
        return "onnxruntime", "requested"
    if requested == "torch":
        if not torch_ok:
            raise ModelFileError("Runtime PyTorch was requested but torch / safetensors are not installed in QGIS's "
                                 "Python; choose runtime 'auto' to use ONNX Runtime.")
        if not has_weights:
            raise ModelFileError(f"Runtime PyTorch was requested but {card_file} has no safetensors weights "
                                 "installed; choose runtime 'auto' to run its ONNX graph.")
        return "torch", "requested"
    if ort_ok and has_graph:
        return "onnxruntime", "auto: ONNX Runtime is installed and the model has an ONNX graph"
    if torch_ok and has_weights:
        why = ("onnxruntime is not installed" if not ort_ok else "the model has no ONNX graph installed")
        return "torch", f"auto: {why}, so PyTorch"
    have = [n for n, ok in (("onnxruntime", ort_ok), ("torch", torch_ok)) if ok]
    raise ModelFileError(f"Cannot run {card_file}: "
                         + (f"it has {'an ONNX graph' if has_graph else 'no ONNX graph'} and "
                            f"{'safetensors weights' if has_weights else 'no safetensors weights'} installed, "
                            f"and only {' and '.join(have) or 'neither onnxruntime nor torch'} is installed. "
                            "Install onnxruntime (python3 -m pip install onnxruntime) and run scripts/setup.sh, "
                            "or reinstall the model."))


def ort_session(graph_path: Path, providers: Sequence[str], optimisation: str = "all",
                threads: Optional[int] = None) -> Any:
    """An InferenceSession of ``graph_path``. ``optimisation``: "all" (ORT_ENABLE_ALL, the default) or
    "disable" (the graph as exported; the benchmark's plain ORT). ``threads``: intra-op threads (None:
    ``SAR2EO_ORT_THREADS`` if set, else onnxruntime's default, one per physical core)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    level = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
             "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}[optimisation]
    options.graph_optimization_level = level
    threads = threads or int(os.environ.get("SAR2EO_ORT_THREADS", "0") or 0)
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3      # warnings about unused initializers etc. are not the user's business
    try:
        return ort.InferenceSession(str(graph_path), sess_options=options, providers=list(providers))
    except Exception as exc:  # onnxruntime raises its own Fail / InvalidGraph / RuntimeException types
        raise ModelFileError(f"ONNX graph {graph_path} cannot be loaded by onnxruntime {ort.__version__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc


def _check_graph_io(session: Any, graph_path: Path, in_channels: int, out_channels: int) -> None:
    """The graph must take (N, in_channels, H, W) and give (N, out_channels, H, W), as its card says."""
    ins, outs = session.get_inputs(), session.get_outputs()
    if len(ins) != 1 or len(outs) != 1:
        raise ModelFileError(f"ONNX graph {graph_path} has {len(ins)} input(s) and {len(outs)} output(s); "
                             "the plugin runs graphs with one of each.")
    for what, arg, want in (("input", ins[0], in_channels), ("output", outs[0], out_channels)):
        shape = list(arg.shape)
        if len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != want):
            raise ModelFileError(f"ONNX graph {graph_path}: its {what} has shape {shape}, but its card describes "
                                 f"{want} channel(s) in NCHW order.")


def channels_of(card: Any) -> Tuple[int, int]:
    """(input, output) channels of the network a card describes."""
    args = card.architecture_args
    if card.architecture == "resnet_generator":
        return int(args["input_nc"]), int(args["output_nc"])
    return int(args["in_channels"]), int(args["classes"])


def select_model_file(card_file: Path, card: Any, requested: str = DEFAULT_RUNTIME) -> Tuple[str, str]:
    """``(runtime, why)`` for a model: the runtime :func:`choose_runtime` picks among the files that are
    installed (nothing is hashed here: :func:`verify_model_file`, or the loader, checks the file it uses). A
    model with neither file says how to get it (:func:`modelstore.raise_if_not_installed`)."""
    from . import modelfile

    has_graph = modelfile.onnx_present(card_file, card)
    has_weights = modelfile.weights_present(card_file, card)
    if not (has_graph or has_weights):
        from . import modelstore

        modelstore.raise_if_not_installed(card_file)   # a model the plugin downloads: say how to get it, only that
    return choose_runtime(requested, has_graph, has_weights, card_file)


def verify_model_file(card_file: Path, card: Any, runtime: str) -> Path:
    """The file ``runtime`` (onnxruntime | torch) runs for this model, checked against its card (size + sha256)."""
    from . import modelfile

    return (modelfile.verify_onnx(card_file, card) if runtime == "onnxruntime"
            else modelfile.verify_weights(card_file, card))


def load_predictor(card_path: Path, task: str, runtime: str = DEFAULT_RUNTIME, device: str = "auto",
                   activation: Optional[str] = None, precision: str = "float32", optimisation: str = "all",
                   log: Optional[Log] = None) -> Tuple[Callable[[np.ndarray], np.ndarray], Any, RuntimeInfo]:
    """The model at ``card_path`` ready to predict: ``(predictor, card, RuntimeInfo)``.

    Every file is checked against its card (size + sha256) before it is used. ``precision`` bfloat16 is a
    torch autocast option: with runtime auto it selects torch; with onnxruntime it is an error."""
    from . import modelfile

    log = log or (lambda _m: None)
    card_file = modelfile.card_path_for(card_path)
    card = modelfile.read_card(card_file, task)
    if precision not in PRECISIONS:
        raise InputError(f"Unknown precision '{precision}' (use {' or '.join(PRECISIONS)}).")
    if precision != "float32":
        if runtime == "onnxruntime":
            raise InputError(f"Precision {precision} is a PyTorch autocast option; ONNX Runtime runs the graph "
                             "in float32. Choose runtime 'torch' or precision float32.")
        runtime = "torch"
    name, why = select_model_file(card_file, card, runtime)
    if name == "onnxruntime":
        graph = modelfile.verify_onnx(card_file, card)
        providers = ort_providers(device)
        session = ort_session(graph, providers, optimisation)
        used = session.get_providers()[0]
        if device == "cuda" and used != CUDA_PROVIDER:
            raise DeviceError(f"CUDA was requested but onnxruntime could not start its CUDA provider "
                              f"(it runs on {used}); check the CUDA / cuDNN libraries onnxruntime-gpu needs.")
        _check_graph_io(session, graph, *channels_of(card))
        import onnxruntime as ort

        info = RuntimeInfo("onnxruntime", "cuda" if used == CUDA_PROVIDER else "cpu", used,
                           f"onnxruntime {ort.__version__}, graph optimisations {optimisation}")
        predictor: Callable[[np.ndarray], np.ndarray] = OrtPredictor(session, activation)
    else:
        import torch

        from .inference import resolve_device

        dev = resolve_device(device)
        net, card = modelfile.load_model(card_file, task, dev)
        channels_last = card.architecture == "unet"   # NHWC: faster for the EfficientNet encoders in torch
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
        info = RuntimeInfo("torch", dev, dev, f"torch {torch.__version__}"
                           + (f", {precision} autocast" if precision != "float32" else ""))
        predictor = TorchPredictor(net, dev, activation, channels_last=channels_last, precision=precision)
    log(f"Runtime: {info.label} — {why}")
    return predictor, card, info

"""Helpers shared by the plugin's Processing algorithms.

Kept free of torch: the heavy imports (torch, safetensors, rasterio, the core's
inference module) happen inside :func:`import_inference`, called from
``processAlgorithm``, so the provider loads fast and even without PyTorch.
"""
from __future__ import annotations

import configparser
import contextlib
import functools
import html
import importlib.util
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProperty,
    QgsProviderRegistry,
    QgsRasterLayer,
)

from ..core import outputs as safe
from ..core.errors import CancelledError, OutputError, Sar2EoError
from ..core.tasks import TaskSpec

# Python packages the inference needs at run time (import name -> pip name): rasterio, plus a runtime
# (core.runtime: onnxruntime, or torch + safetensors, + segmentation-models-pytorch for the cloud U-Net).
RUNTIME_PACKAGES: Dict[str, str] = {"rasterio": "rasterio"}
TORCH_PACKAGES: Dict[str, str] = {"torch": "torch", "safetensors": "safetensors"}
CLOUD_PACKAGES: Dict[str, str] = {"segmentation_models_pytorch": "segmentation-models-pytorch"}

GEOTIFF_EXTENSIONS = (".tif", ".tiff")


# --------------------------------------------------------------------------- dependencies
def missing_packages(extra: Optional[Dict[str, str]] = None) -> List[str]:
    """pip names of the run-time packages that cannot be found (no import is done). With onnxruntime
    installed, torch and ``extra`` (torch-only packages) are not needed."""
    from ..core.runtime import installed

    wanted = dict(RUNTIME_PACKAGES)
    if not installed("onnxruntime"):
        wanted.update(TORCH_PACKAGES)
        wanted.update(extra or {})
    missing = []
    for module, pip_name in wanted.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(pip_name)
    return missing


def missing_packages_message(missing: Sequence[str]) -> str:
    return ("This algorithm needs Python packages that the Python used by QGIS cannot import: "
            f"{', '.join(missing)} (or onnxruntime instead of PyTorch). Install them into QGIS's Python (see the "
            "plugin's README, 'Install'), "
            f"e.g. `python3 -m pip install {' '.join(missing)}`, then restart QGIS.")


def keep_triton_out() -> None:
    """Make ``triton`` unimportable in this (QGIS) process, unless something already imported it.

    Importing segmentation-models-pytorch imports ``torch._dynamo``, which imports triton when it is
    installed (CUDA builds of torch ship it). libtriton.so carries its own LLVM, whose static
    initialisers segfault in a QGIS desktop process that has already loaded Mesa's libLLVM for
    OpenGL (seen here: QGIS 3.22 under Xvfb, llvmpipe, torch 2.14 -> "QGIS died on signal 11" in
    ``_GLOBAL__sub_I_PassBuilder.cpp`` of libtriton.so). The plugin runs networks eagerly and never
    compiles kernels, so torch without triton loses nothing here: it reports "no triton" and carries on.
    """
    if "triton" not in sys.modules:
        sys.modules["triton"] = None  # type: ignore[assignment]  # `import triton` -> ImportError


def import_inference(extra_packages: Optional[Dict[str, str]] = None):
    """Import and return ``core.inference`` (and so torch), or raise a clear QgsProcessingException."""
    missing = missing_packages(extra_packages)
    if missing:
        raise QgsProcessingException(missing_packages_message(missing))
    keep_triton_out()
    from ..core.runtime import installed

    try:
        if installed("onnxruntime"):
            import onnxruntime  # noqa: F401  (import here, not at plugin load)
        else:
            import torch  # noqa: F401

        from ..core import inference
    except ImportError as exc:  # installed but broken (ABI mismatch, missing shared library, ...)
        raise QgsProcessingException(f"ONNX Runtime, PyTorch or another run-time package failed to import: {exc}. "
                                     "Reinstall the packages listed in the plugin's README.") from exc
    return inference


def can_execute(extra_packages: Optional[Dict[str, str]] = None) -> Tuple[bool, str]:
    missing = missing_packages(extra_packages)
    if missing:
        return False, missing_packages_message(missing)
    return True, ""


# --------------------------------------------------------------------------- feedback
class FeedbackAdapter:
    """Carries the core's callbacks (progress 0..100, is_cancelled, log) into a QgsProcessingFeedback.

    ``start``/``end`` map the core's 0..100 into a slice of the algorithm's progress bar
    when the algorithm has further steps after inference (e.g. polygonising).
    """

    def __init__(self, feedback: Optional[QgsProcessingFeedback], start: float = 0.0, end: float = 100.0) -> None:
        self.feedback = feedback or QgsProcessingFeedback()
        self.start, self.end = float(start), float(end)
        self.lines: List[str] = []

    def progress(self, percent: float) -> None:
        self.feedback.setProgress(self.start + (self.end - self.start) * max(0.0, min(100.0, percent)) / 100.0)

    def is_cancelled(self) -> bool:
        return bool(self.feedback.isCanceled())

    def log(self, message: str) -> None:
        self.lines.append(message)
        self.feedback.pushInfo(message)


def check_cancelled(feedback: Optional[QgsProcessingFeedback]) -> None:
    if feedback is not None and feedback.isCanceled():
        raise CancelledError("Cancelled by the user; no output was written.")


class OutputGuard:
    """What ``core_errors`` knows about one path of its ``cleanup`` list at entry."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.identity = _identity(path)
        self.backup: Optional[str] = None
        if self.identity is not None:
            # An earlier file at this path: keep a hard link to it, so that a run that replaces it and
            # then fails (e.g. a later step of the algorithm) puts the earlier file back.
            backup = safe.temp_path(path)
            try:
                os.link(path, backup)
                self.backup = backup
            except OSError:
                self.backup = None

    def restore(self) -> None:
        now = _identity(self.path)
        if self.identity is None:
            if now is not None:
                remove_outputs([self.path])          # created by the failed run
        elif now != self.identity:
            if self.backup is not None:
                with contextlib.suppress(OSError):
                    os.replace(self.backup, self.path)   # the earlier file comes back
                    self.backup = None
            # without a backup, a replaced file is left as it is: never delete what we cannot restore
        self.discard()

    def discard(self) -> None:
        if self.backup is not None:
            safe.remove_quietly([self.backup])
            self.backup = None


def _identity(path: str):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@contextlib.contextmanager
def core_errors(cleanup: Sequence[str] = ()) -> Iterator[None]:
    """Turn the core's errors into QgsProcessingException with the same message.

    ``cleanup`` names files the block may write (e.g. outputs written by an earlier step of the
    algorithm). When anything goes wrong, a file the block created is removed and a file that was
    already there is left as it was before the block: if the block replaced it, the earlier file is
    put back from a hard link taken at entry; a file the block did not touch is never removed (a
    user's earlier good output must survive a failed or cancelled run). A failure of this cleanup
    never hides the error that caused it.
    """
    guards = [OutputGuard(p) for p in cleanup if p]
    try:
        yield
    except BaseException as exc:
        for guard in guards:
            try:
                guard.restore()
            except Exception:  # noqa: BLE001 - keep the original error
                pass
        if isinstance(exc, QgsProcessingException):
            raise
        if isinstance(exc, CancelledError):
            raise QgsProcessingException(str(exc) or "Cancelled by the user; no output was written.") from exc
        if isinstance(exc, Sar2EoError):
            raise QgsProcessingException(str(exc)) from exc
        if isinstance(exc, MemoryError):
            raise QgsProcessingException("Out of memory: lower TILE_SIZE and BATCH_SIZE (advanced parameters) "
                                         "and try again.") from exc
        if isinstance(exc, OSError) and exc.filename:
            raise QgsProcessingException(f"Cannot use '{exc.filename}': {safe.os_error_text(exc)}.") from exc
        raise
    else:
        for guard in guards:
            guard.discard()


def remove_outputs(paths: Sequence[str]) -> None:
    for path in paths:
        if not path:
            continue
        for candidate in (path, path + ".aux.xml"):
            with contextlib.suppress(OSError):
                os.remove(candidate)


@contextlib.contextmanager
def sigterm_cancels(feedback: Optional[QgsProcessingFeedback], raise_after: bool = True) -> Iterator[List[int]]:
    """While the block runs, SIGTERM cancels ``feedback`` (as the Cancel button does) instead of
    killing the process, so the engine stops at its next tile and removes its temporary files; the
    run then fails with a message saying it was terminated.

    Installed only where that is safe: on the main thread (qgis_process runs algorithms there; the
    desktop runs them on worker threads, where Python cannot install handlers) and only when
    SIGTERM has its default action (a handler someone else installed is left alone). The previous
    handler is restored when the block ends. With ``raise_after`` (default), a SIGTERM that came
    after the block's last cancellation check still makes the run fail once the block is done; the
    folder batch passes False and reports it in its summary instead.
    """
    received: List[int] = []
    installed = False
    old = None
    if feedback is not None and threading.current_thread() is threading.main_thread():
        try:
            old = signal.getsignal(signal.SIGTERM)
            if old == signal.SIG_DFL:
                def handler(signum, _frame):
                    received.append(signum)
                    feedback.cancel()

                signal.signal(signal.SIGTERM, handler)
                installed = True
        except (ValueError, OSError, AttributeError):
            installed = False
    try:
        yield received
    except QgsProcessingException as exc:
        if received:
            raise QgsProcessingException("Terminated (SIGTERM): the run was stopped like a cancel; no partial "
                                         "output was left and an earlier file at the output path is unchanged. "
                                         f"({exc})") from exc
        raise
    finally:
        if installed:
            with contextlib.suppress(ValueError, OSError):
                signal.signal(signal.SIGTERM, old)
    if received and raise_after:
        raise QgsProcessingException("Terminated (SIGTERM) after the run had finished writing; its outputs "
                                     "are complete.")


# --------------------------------------------------------------------------- parameters
def band_number(alg: QgsProcessingAlgorithm, parameters: Dict, name: str, context: QgsProcessingContext,
                label: str = "") -> Optional[int]:
    """A band-number parameter: None when not set, else an integer >= 1. ``0``, negative or
    non-numeric values are an error naming the parameter (they used to become band 1 silently)."""
    raw = parameters.get(name)
    if raw is None or raw == "":
        return None
    if isinstance(raw, QgsProperty):
        raw = alg.parameterAsInt(parameters, name, context)
    what = f"{name}{f' ({label})' if label else ''}"
    value: Optional[int] = None
    if isinstance(raw, bool):
        value = None
    elif isinstance(raw, int):
        value = raw
    elif isinstance(raw, float) and raw.is_integer():
        value = int(raw)
    elif isinstance(raw, str):
        text = raw.strip()
        if text.lstrip("+-").isdigit():
            value = int(text)
    if value is None:
        raise QgsProcessingException(f"{what} is {raw!r}: a band number must be a whole number (1 = the first band).")
    if value < 1:
        raise QgsProcessingException(f"{what} is {value}: band numbers start at 1 (the first band); "
                                     "leave it empty to use the default.")
    return value


def check_output_folder(path: str, what: str = "output") -> None:
    """Up-front check that the folder of output ``path`` can take a file (QgsProcessingException
    naming the folder and the cause: read-only file system, no permission, a parent that is a file)."""
    try:
        safe.check_output_folder(os.path.dirname(os.path.abspath(path)), what)
    except OutputError as exc:
        raise QgsProcessingException(str(exc)) from exc


def model_path(alg: QgsProcessingAlgorithm, parameters: Dict, context: QgsProcessingContext,
               name: str = "MODEL_FILE") -> Optional[str]:
    path = alg.parameterAsFile(parameters, name, context)
    if not path:
        return None
    if not os.path.isfile(path):
        raise QgsProcessingException(f"Model file not found: {path}")
    return path


# --------------------------------------------------------------------------- layers and outputs
def raster_source(alg: QgsProcessingAlgorithm, parameters: Dict, name: str,
                  context: QgsProcessingContext) -> Tuple[str, str, QgsRasterLayer]:
    """(GDAL-readable path, layer name, layer) of a raster parameter.

    The core reads rasters with rasterio, so the layer must be a file-based GDAL raster;
    WMS/XYZ, PostGIS rasters, virtual (calculated) layers etc. get a clear error.
    """
    layer = alg.parameterAsRasterLayer(parameters, name, context)
    if layer is None or not layer.isValid():
        raise QgsProcessingException(f"Could not load the input raster layer ({parameters.get(name)!r}).")
    layer_name = layer.name() or Path(layer.source()).name
    provider = layer.providerType()
    source = layer.source()
    if provider != "gdal":
        raise QgsProcessingException(
            f"Layer '{layer_name}' comes from the '{provider}' data provider, not from a raster file. "
            "This algorithm reads raster files (GeoTIFF and other GDAL formats): save the layer as a GeoTIFF "
            "first (right-click > Export > Save As…) and run it on that file.")
    decoded = QgsProviderRegistry.instance().decodeUri("gdal", source) or {}
    path = decoded.get("path") or source
    if not (os.path.isfile(path) or source.startswith("/vsi")):
        raise QgsProcessingException(
            f"Layer '{layer_name}' is not a file on disk (source '{source}'). Save it as a GeoTIFF first "
            "(right-click > Export > Save As…) and run the algorithm on that file.")
    if "|" in source and os.path.isfile(path) and not decoded.get("layerName"):
        source = path   # QGIS-only suffixes such as "|option:..." mean nothing to rasterio
    return source, layer_name, layer


def geotiff_destination(alg: QgsProcessingAlgorithm, parameters: Dict, name: str, context: QgsProcessingContext,
                        inputs: Sequence[str] = ()) -> str:
    """Path of a raster destination parameter, which must be a GeoTIFF and not overwrite an input."""
    path = alg.parameterAsOutputLayer(parameters, name, context)
    if not path:
        return ""
    if path.startswith(("memory:", "postgres", "ogr:")) or Path(path).suffix.lower() not in GEOTIFF_EXTENSIONS:
        raise QgsProcessingException(
            f"Output '{path}' ({name}): this algorithm writes GeoTIFF files only; choose a .tif file name.")
    for src in inputs:
        with contextlib.suppress(OSError):
            if os.path.exists(path) and os.path.samefile(path, src):
                raise QgsProcessingException(f"Output {name} would overwrite the input raster {src}; "
                                             "choose another file name.")
    check_output_folder(path, f"output {name}")
    return path


def set_post_processor(context: QgsProcessingContext, layer_id: str, make_post_processor: Callable) -> None:
    """Attach a new styling post-processor (from ``make_post_processor()``) to an output that will be
    loaded on completion (Toolbox, batch, modeler); nothing is created when it will not be loaded."""
    if layer_id and context.willLoadLayerOnCompletion(layer_id):
        context.layerToLoadOnCompletionDetails(layer_id).setPostProcessor(make_post_processor())


# --------------------------------------------------------------------------- help texts and icons
def icon_path(name: str) -> str:
    return str(Path(__file__).resolve().parent.parent / "icons" / name)


@functools.lru_cache(maxsize=1)
def help_url() -> str:
    """The plugin's homepage from its metadata.txt ('' when it cannot be read)."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(Path(__file__).resolve().parent.parent / "metadata.txt", encoding="utf-8")
        return parser.get("general", "homepage", fallback="") or parser.get("general", "repository", fallback="")
    except (configparser.Error, OSError, UnicodeDecodeError):
        return ""


def bundled_models_help(task: "TaskSpec") -> str:
    """An HTML paragraph listing the bundled models of ``task`` from their cards: training data,
    measured metrics, or that no weights are bundled yet. Reads JSON only (no torch)."""
    from ..core import modelfile

    items = []
    for name in task.bundled_models():
        card_file = Path(modelfile.BUNDLED_DIR) / f"{name}.json"
        if not card_file.is_file():
            items.append(f"<li><b>{name}</b>: no weights bundled in this build (use a model file, "
                         "or train and export one — see the README).</li>")
            continue
        try:
            card = modelfile.read_card(card_file)
        except Exception as exc:  # noqa: BLE001 - help must never fail
            items.append(f"<li><b>{name}</b>: card unreadable ({exc})</li>")
            continue
        data = card.training.get("data") or "see the model card"
        shown = ("psnr_db", "ssim", "iou", "f1", "pixel_accuracy", "threshold")
        metrics = ", ".join(f"{k} {card.metrics[k]:.3g}" for k in shown
                            if isinstance(card.metrics.get(k), (int, float)))
        held_out = card.metrics.get("held_out")
        where = f" ({held_out})" if isinstance(held_out, str) else ""
        labelled = card.metrics.get("hand_labelled", {}).get("sentinel2_north")
        if isinstance(labelled, dict):   # cloud models: the hand-labelled Sentinel-2 scene (README, Results)
            where = " (hand-labelled Sentinel-2 scene, beside 'all clear': cloud IoU 0)"
            metrics = ", ".join(f"{k.replace('_', ' ')} {labelled[k]:.3f}" for k in ("cloud_iou", "shadow_iou",
                                                                                   "three_class_accuracy")
                                if isinstance(labelled.get(k), (int, float)))
        items.append(f"<li><b>{name}</b>: trained on {html.escape(str(data))}"
                     + (f"; measured on held-out data{html.escape(where)}: {metrics}" if metrics else "")
                     + (f". {html.escape(card.notes)}" if card.notes else "") + "</li>")
    return ("<h3>Bundled models</h3><ul>" + "".join(items) + "</ul>"
            "<p>Each model's card (.json in the plugin's <i>models</i> folder) records its training data, "
            "normalisation and metrics.</p>")

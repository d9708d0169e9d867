"""SAR->EO translation end to end on raster files, and what every task shares: torch's devices,
sampling and tiling options. Cloud masking lives in :mod:`.cloud`; which runtime runs the network
(ONNX Runtime or torch) is decided in :mod:`.runtime`.

These functions are what the Processing algorithms, the dock and the benchmarks
call. They pick the model file, decide units/band layout, build the task's
``prepare``/``convert`` functions and hand everything to :func:`engine.run_tiled`.
No QGIS here: callbacks carry progress, cancellation and log lines out.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import normalisation as norm
from .bands import band_set, find_sar_bands
from .engine import OutputSpec, RunResult, TilingOptions, run_tiled
from .errors import DeviceError, InputError
from .modelfile import ModelCard, bundled_model_path, read_card

# PRECISIONS and TorchPredictor are defined in .runtime; imported here for the callers that know them from here.
from .runtime import DEFAULT_RUNTIME, PRECISIONS, RuntimeInfo, TorchPredictor, load_predictor  # noqa: F401
from .tasks import DEVICE_KEYS, TRANSLATE
from .validity import check_has_data

Log = Callable[[str], None]

DEVICES = DEVICE_KEYS


def describe_devices() -> str:
    """One line saying what torch can run on here (for dialogs and logs)."""
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed"
    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        return f"CUDA available: {names} (torch {torch.__version__})"
    built = torch.version.cuda or "no CUDA"
    return f"CPU only: torch {torch.__version__} ({built} build) sees no GPU"


def resolve_device(requested: str = "auto") -> str:
    """'auto' -> 'cuda' when torch sees a GPU, else 'cpu'. 'cuda' without a GPU is an error. Without torch,
    ONNX Runtime's providers decide (a CUDA provider is a GPU)."""
    from .runtime import CUDA_PROVIDER, installed, ort_providers_offered

    requested = (requested or "auto").lower()
    if requested not in DEVICES:
        raise DeviceError(f"Unknown device '{requested}' (use auto, cpu or cuda).")
    if requested == "cpu":
        return "cpu"
    if not installed("torch"):
        if CUDA_PROVIDER in ort_providers_offered():
            return "cuda"
        if requested == "cuda":
            raise DeviceError("CUDA was requested but neither PyTorch nor a CUDA build of onnxruntime is installed. "
                              "Choose 'auto' or 'cpu', or install onnxruntime-gpu.")
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if requested == "cuda":
        raise DeviceError(f"CUDA was requested but is not available ({describe_devices()}). "
                          "Choose 'auto' or 'cpu', or install a CUDA build of PyTorch.")
    return "cpu"


def tiling_from(card_tiling: Dict, tile_size: Optional[int], overlap: Optional[int], batch_size: Optional[int],
                 multiple: int) -> TilingOptions:
    return TilingOptions(tile_size=int(tile_size or card_tiling.get("tile_size", 256)),
                         overlap=int(card_tiling.get("overlap", 32) if overlap is None else overlap),
                         batch_size=int(batch_size or card_tiling.get("batch_size", 4)), multiple=multiple)


SAMPLE_WINDOWS = 4   # sample_bands: windows per side of a raster larger than the sample, without overviews


def sample_bands(src_path: str, bands: Sequence[int], size: int = 512) -> Tuple[np.ndarray, List[Optional[str]], str]:
    """A sample of the bands of at most ``size`` x ``size`` px (NaN where nodata), their descriptions and dtype.

    A raster up to ``size`` on a side is read whole; a larger one with overviews by a decimated read (GDAL takes
    the overviews); a larger one without, as ``SAMPLE_WINDOWS``² windows spread evenly over it. A decimated read
    of a raster without overviews decompresses every block of it: 1.4 s of a whole Sentinel-2 tile's cloud mask,
    before the network could start."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.windows import Window

    bands = list(bands)
    with rasterio.open(src_path) as src:
        h, w = min(src.height, size), min(src.width, size)
        if (h, w) == (src.height, src.width) or src.overviews(bands[0]):
            data = src.read(bands, out_shape=(len(bands), h, w), resampling=Resampling.nearest, out_dtype="float32")
        else:
            k = SAMPLE_WINDOWS
            wh, ww = max(1, h // k), max(1, w // k)
            bh, bw = src.block_shapes[bands[0] - 1]     # each window starts at a block's corner: one block apiece
            tops = [min(src.height - wh, y // bh * bh) for y in np.linspace(0, src.height - wh, k).astype(int)]
            lefts = [min(src.width - ww, x // bw * bw) for x in np.linspace(0, src.width - ww, k).astype(int)]
            data = np.concatenate([np.concatenate([src.read(bands, window=Window(x, y, ww, wh), out_dtype="float32")
                                                   for x in lefts], axis=2) for y in tops], axis=1)
        for i, b in enumerate(bands):
            nd = src.nodatavals[b - 1]
            if nd is not None:
                data[i][data[i] == np.float32(nd)] = np.nan
        return data, [src.descriptions[b - 1] for b in bands], src.dtypes[bands[0] - 1]


def _open_info(src_path: str, layer_name: str) -> Tuple[int, List[Optional[str]]]:
    import rasterio

    try:
        with rasterio.open(src_path) as src:
            return src.count, list(src.descriptions)
    except Exception as exc:
        raise InputError(f"Layer '{layer_name}': cannot read raster '{src_path}': {exc}") from exc


@dataclass
class TranslationRequest:
    src_path: str
    dst_path: str
    band_set: str = "rgb"
    vv_band: Optional[int] = None       # None = from the band descriptions, else band 1
    vh_band: Optional[int] = None       # None = from the band descriptions, else band 2
    units: str = "auto"
    device: str = "auto"
    tile_size: Optional[int] = None
    overlap: Optional[int] = None
    batch_size: Optional[int] = None
    model_path: Optional[str] = None    # a model card to use instead of the bundled one
    layer_name: str = ""
    runtime: str = DEFAULT_RUNTIME      # auto | onnxruntime | torch (core.runtime)


def _nodata_of(src_path: str, bands: Sequence[int]) -> List[Optional[float]]:
    import rasterio

    with rasterio.open(src_path) as src:
        return [src.nodatavals[b - 1] for b in bands]


def resolve_sar_bands(req: "TranslationRequest", count: int,
                      descriptions: Sequence[Optional[str]]) -> Tuple[Tuple[int, int], str]:
    """(VV, VH) band numbers: the user's when set, else what the band descriptions name, else 1 and 2.
    A band number the user set that contradicts the descriptions is an error naming both."""
    name = req.layer_name or Path(req.src_path).name
    for label, b in (("VV", req.vv_band), ("VH", req.vh_band)):
        if b is not None and not 1 <= b <= count:
            raise InputError(f"Layer '{name}' has {count} bands; the {label} band number {b} does not exist.")
    if req.vv_band is not None and req.vv_band == req.vh_band:
        raise InputError(f"Layer '{name}': VV and VH must be different bands (both are band {req.vv_band}).")
    named = find_sar_bands(descriptions)
    for label, b in (("VV", req.vv_band), ("VH", req.vh_band)):
        if b is None:
            continue
        other = "VH" if label == "VV" else "VV"
        if named.get(other) == b or (label in named and named[label] != b):
            desc = descriptions[b - 1] or "(no description)"
            also = f" and band {named[label]} as '{descriptions[named[label] - 1]}'" if label in named else ""
            raise InputError(f"Layer '{name}': {label}_BAND is {b}, but band {b} is described as '{desc}'" + also
                             + f". Set {label}_BAND to match the band descriptions, or leave VV_BAND and VH_BAND "
                             "empty to use them.")
    vv = req.vv_band or named.get("VV") or (1 if named.get("VH") != 1 else 2)
    vh = req.vh_band or named.get("VH") or (2 if vv != 2 else 1)
    if vv == vh:
        raise InputError(f"Layer '{name}': VV and VH must be different bands (both are band {vv}).")
    if req.vv_band and req.vh_band:
        how = "set by the user"
    elif named:
        how = "from the band descriptions: " + ", ".join(f"{k} = '{descriptions[v - 1]}'"
                                                         for k, v in sorted(named.items()))
    else:
        how = "no band descriptions name VV/VH: the default order VV, VH"
    return (vv, vh), how


@dataclass
class TaskResult:
    outputs: Dict[str, str]
    run: RunResult
    device: str
    messages: List[str] = field(default_factory=list)
    extra: Dict[str, float] = field(default_factory=dict)
    runtime: Optional[RuntimeInfo] = None


def translation_card(band_set_key: str, model_path: Optional[str] = None) -> Tuple[Path, ModelCard]:
    """(card path, card) of the translation model for ``band_set_key``: ``model_path``, else the bundled one.
    A card that writes other bands than the band set is an InputError (the single run and the batch's
    up-front check both ask here)."""
    bs = band_set(band_set_key)
    card_path = (Path(model_path) if model_path
                 else bundled_model_path(TRANSLATE.bundled_model(bs.key), f"band set {bs.label}"))
    card = read_card(card_path, TRANSLATE.card_task)
    if list(card.output.get("bands", [])) != list(bs.bands):
        raise InputError(f"Model {card_path} writes bands {card.output.get('bands')}, not {list(bs.bands)} "
                         f"(band set {bs.label}); choose the matching band set or model file.")
    return card_path, card


def translate_sar_to_eo(req: TranslationRequest, progress=None, is_cancelled=None,
                        log: Optional[Log] = None) -> TaskResult:
    """Sentinel-1 VV/VH raster -> Sentinel-2-like uint16 reflectance x 10,000 raster."""
    log = log or (lambda _m: None)
    name = req.layer_name or Path(req.src_path).name
    bs = band_set(req.band_set)
    count, descriptions = _open_info(req.src_path, name)
    if count < 2:
        raise InputError(f"Layer '{name}' has {count} band; Translate SAR to EO needs two bands, VV and VH "
                         "(stack them first, e.g. with Raster > Miscellaneous > Merge, 'separate bands').")
    bands, how = resolve_sar_bands(req, count, descriptions)
    log(f"Bands VV = {bands[0]}, VH = {bands[1]} ({how})")

    card_path, card = translation_card(bs.key, req.model_path)

    sample, sample_desc, dtype = sample_bands(req.src_path, bands)
    check_has_data(sample, name, bands, _nodata_of(req.src_path, bands))
    decision = norm.decide_sar_units(sample, sample_desc, dtype, req.units, name)
    log(f"Input units: {decision.units} — {decision.reason}")
    for warning in decision.warnings:
        log(f"Warning: {warning}")
    finite_vv, finite_vh = sample[0][np.isfinite(sample[0])], sample[1][np.isfinite(sample[1])]
    if finite_vv.size and finite_vh.size and float(np.median(finite_vh)) > float(np.median(finite_vv)):
        log(f"Warning: in layer '{name}' band {bands[1]} (used as VH) is brighter than band {bands[0]} (used as VV) "
            "for most pixels; cross-polarised backscatter is normally the darker one. Check VV_BAND / VH_BAND.")

    predictor, card, info = load_predictor(card_path, TRANSLATE.card_task, req.runtime, req.device, log=log)
    device = info.device
    log(f"Model: {card.name} ({card_path.name}), device: {device}")
    ranges = {k: tuple(v) for k, v in card.normalisation.get("sar_db_ranges", norm.SAR_DB_RANGES).items()}
    opt_range = tuple(card.normalisation.get("optical_range", norm.OPTICAL_RANGE))
    units = decision.units

    def prepare(raw: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        if units == "linear":
            db, valid = norm.linear_to_db(raw)
            valid = np.all(valid, axis=0)
        else:
            db, valid = raw, np.all(np.isfinite(raw), axis=0)
        return norm.normalise_sar_db(db, ("VV", "VH"), ranges), valid

    def convert(pred: np.ndarray, valid: np.ndarray) -> np.ndarray:
        dn = norm.reflectance_to_dn(norm.denormalise_optical(pred, opt_range))
        dn[:, ~valid] = 0
        return dn

    colorinterp = ("red", "green", "blue") + ("undefined",) * (bs.count - 3) if bs.count >= 3 else None
    spec = OutputSpec(path=req.dst_path, count=bs.count, dtype="uint16", nodata=0, convert=convert,
                      descriptions=bs.bands, colorinterp=colorinterp,
                      tags={"SAR2EO_MODEL": card.name, "SAR2EO_SCALE": "reflectance*10000",
                            "SAR2EO_SOURCE": Path(req.src_path).name})
    options = tiling_from(card.tiling, req.tile_size, req.overlap, req.batch_size, multiple=4)
    run = run_tiled(req.src_path, bands, prepare, predictor, bs.count, [spec],
                    options, progress, is_cancelled, log)
    return TaskResult(outputs={"OUTPUT": req.dst_path}, run=run, device=device,
                      messages=[f"Input units: {decision.units} ({decision.reason})"], runtime=info)

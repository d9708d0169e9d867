"""The two tasks end to end on raster files: SAR->EO translation and cloud masking.

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
from .bands import band_set, find_rgb_bands, find_sar_bands
from .engine import OutputSpec, RunResult, TilingOptions, run_tiled
from .errors import DeviceError, InputError
from .modelfile import bundled_model_path, read_card
from .validity import check_has_data

Log = Callable[[str], None]

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("float32", "bfloat16")


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
    """'auto' -> 'cuda' when torch sees a GPU, else 'cpu'. 'cuda' without a GPU is an error."""
    import torch

    requested = (requested or "auto").lower()
    if requested not in DEVICES:
        raise DeviceError(f"Unknown device '{requested}' (use auto, cpu or cuda).")
    if requested == "cpu":
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if requested == "cuda":
        raise DeviceError(f"CUDA was requested but is not available ({describe_devices()}). "
                          "Choose 'auto' or 'cpu', or install a CUDA build of PyTorch.")
    return "cpu"


class TorchPredictor:
    """numpy batch -> network -> numpy batch, on one device, without autograd.

    ``channels_last`` feeds the network NHWC tensors (about 25 % faster for the
    EfficientNet U-Net on CPU; the network must have been converted with
    ``net.to(memory_format=torch.channels_last)``). ``scale`` > 1 runs the network
    at a coarser resolution: each tile is average-pooled by ``scale`` before the
    network and its (activated) output is upsampled back bilinearly, so the
    engine still blends, masks nodata and writes at the input's own resolution.
    ``precision="bfloat16"`` runs the network under autocast to bfloat16 (about
    1.8x faster on CPUs with AVX512-BF16/AMX, e.g. this project's; slower where
    the CPU lacks them); outputs differ from float32 by ~1e-3 in probability.
    """

    def __init__(self, net, device: str, activation: Optional[str] = None, channels_last: bool = False,
                 scale: int = 1, precision: str = "float32") -> None:
        if precision not in PRECISIONS:
            raise InputError(f"Unknown precision '{precision}' (use {' or '.join(PRECISIONS)}).")
        self.net, self.device, self.activation = net, device, activation
        self.channels_last, self.scale, self.precision = channels_last, int(scale), precision

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
            if self.scale > 1:
                x = F.avg_pool2d(x, self.scale)
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
            if self.scale > 1:
                y = F.interpolate(y, scale_factor=self.scale, mode="bilinear", align_corners=False)
            return y.float().contiguous().cpu().numpy()


def _tiling_from(card_tiling: Dict, tile_size: Optional[int], overlap: Optional[int], batch_size: Optional[int],
                 multiple: int) -> TilingOptions:
    return TilingOptions(tile_size=int(tile_size or card_tiling.get("tile_size", 256)),
                         overlap=int(card_tiling.get("overlap", 32) if overlap is None else overlap),
                         batch_size=int(batch_size or card_tiling.get("batch_size", 4)), multiple=multiple)


def _sample(src_path: str, bands: Sequence[int], size: int = 512) -> Tuple[np.ndarray, List[Optional[str]], str]:
    """A decimated read of the bands (NaN where nodata), their descriptions and dtype."""
    import rasterio
    from rasterio.enums import Resampling

    with rasterio.open(src_path) as src:
        h, w = min(src.height, size), min(src.width, size)
        data = src.read(list(bands), out_shape=(len(bands), h, w), resampling=Resampling.nearest,
                        out_dtype="float32")
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
            raise InputError(f"Layer '{name}': {label}_BAND is {b}, but band {b} is described as '{desc}'"
                             + (f" and band {named[label]} as '{descriptions[named[label] - 1]}'" if label in named else "")
                             + f". Set {label}_BAND to match the band descriptions, or leave VV_BAND and VH_BAND "
                             "empty to use them.")
    vv = req.vv_band or named.get("VV") or (1 if named.get("VH") != 1 else 2)
    vh = req.vh_band or named.get("VH") or (2 if vv != 2 else 1)
    if vv == vh:
        raise InputError(f"Layer '{name}': VV and VH must be different bands (both are band {vv}).")
    if req.vv_band and req.vh_band:
        how = "set by the user"
    elif named:
        how = "from the band descriptions: " + ", ".join(f"{k} = '{descriptions[v - 1]}'" for k, v in sorted(named.items()))
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


def translate_sar_to_eo(req: TranslationRequest, progress=None, is_cancelled=None, log: Optional[Log] = None) -> TaskResult:
    """Sentinel-1 VV/VH raster -> Sentinel-2-like uint16 reflectance x 10,000 raster."""
    from .modelfile import load_model

    log = log or (lambda _m: None)
    name = req.layer_name or Path(req.src_path).name
    bs = band_set(req.band_set)
    count, descriptions = _open_info(req.src_path, name)
    if count < 2:
        raise InputError(f"Layer '{name}' has {count} band; Translate SAR to EO needs two bands, VV and VH "
                         "(stack them first, e.g. with Raster > Miscellaneous > Merge, 'separate bands').")
    bands, how = resolve_sar_bands(req, count, descriptions)
    log(f"Bands VV = {bands[0]}, VH = {bands[1]} ({how})")

    card_path = Path(req.model_path) if req.model_path else bundled_model_path(f"sar2eo_{bs.key}", f"band set {bs.label}")
    card = read_card(card_path, "sar2eo")
    if list(card.output.get("bands", [])) != list(bs.bands):
        raise InputError(f"Model {card_path} writes bands {card.output.get('bands')}, not {list(bs.bands)}.")

    sample, sample_desc, dtype = _sample(req.src_path, bands)
    check_has_data(sample, name, bands, _nodata_of(req.src_path, bands))
    decision = norm.decide_sar_units(sample, sample_desc, dtype, req.units, name)
    log(f"Input units: {decision.units} — {decision.reason}")
    for warning in decision.warnings:
        log(f"Warning: {warning}")
    finite_vv, finite_vh = sample[0][np.isfinite(sample[0])], sample[1][np.isfinite(sample[1])]
    if finite_vv.size and finite_vh.size and float(np.median(finite_vh)) > float(np.median(finite_vv)):
        log(f"Warning: in layer '{name}' band {bands[1]} (used as VH) is brighter than band {bands[0]} (used as VV) "
            "for most pixels; cross-polarised backscatter is normally the darker one. Check VV_BAND / VH_BAND.")

    device = resolve_device(req.device)
    net, card = load_model(card_path, "sar2eo", device)
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
    options = _tiling_from(card.tiling, req.tile_size, req.overlap, req.batch_size, multiple=4)
    run = run_tiled(req.src_path, bands, prepare, TorchPredictor(net, device), bs.count, [spec],
                    options, progress, is_cancelled, log)
    return TaskResult(outputs={"OUTPUT": req.dst_path}, run=run, device=device,
                      messages=[f"Input units: {decision.units} ({decision.reason})"])


@dataclass
class CloudMaskRequest:
    src_path: str
    dst_path: str
    red_band: Optional[int] = None      # None = detect from the layer's layout
    green_band: Optional[int] = None
    blue_band: Optional[int] = None
    threshold: Optional[float] = None   # None = the card's
    probability_path: Optional[str] = None
    device: str = "auto"
    tile_size: Optional[int] = None
    overlap: Optional[int] = None
    batch_size: Optional[int] = None
    model_path: Optional[str] = None
    layer_name: str = ""
    # Run the network at 1/scale of the input's resolution (2: a 10 m scene at 20 m); None = the card's
    # tiling["scale"] (1 when absent). Tile size and overlap stay in input pixels.
    scale: Optional[int] = None
    # "float32" (default, as the card's metrics were measured) or "bfloat16" (autocast; faster on CPUs with
    # bfloat16 instructions, probabilities within ~1e-2 of float32).
    precision: str = "float32"


MASK_NODATA = 255
PROB_NODATA = -1.0


def resolve_rgb_bands(req: CloudMaskRequest, count: int, descriptions: Sequence[Optional[str]]) -> Tuple[Tuple[int, int, int], str]:
    manual = (req.red_band, req.green_band, req.blue_band)
    name = req.layer_name or Path(req.src_path).name
    if any(b for b in manual):
        if not all(manual):
            raise InputError(f"Layer '{name}': set all three of red (B4), green (B3) and blue (B2) band numbers, "
                             "or none to detect them.")
        for label, b in zip(("red (B4)", "green (B3)", "blue (B2)"), manual):
            if not 1 <= b <= count:  # type: ignore[operator]
                raise InputError(f"Layer '{name}' has {count} bands; the {label} band number {b} does not exist.")
        return manual, f"set by the user: B4={manual[0]}, B3={manual[1]}, B2={manual[2]}"  # type: ignore[return-value]
    try:
        return find_rgb_bands(count, descriptions)
    except InputError as exc:
        raise InputError(f"Layer '{name}': {exc}") from None


def fast_cloud_preprocess(raw: np.ndarray, mean: Sequence[float] = norm.IMAGENET_MEAN,
                          std: Sequence[float] = norm.IMAGENET_STD, clip_dn: float = norm.CLOUD_CLIP_DN) -> np.ndarray:
    """:func:`normalisation.cloud_preprocess` (the training-time definition) in fewer passes over
    memory: clip(x, 0, clip_dn) * 1/(clip_dn*std) - mean/std per channel, NaN treated as 0.
    Same values to float32 rounding (tested against the reference); about 3x faster, which
    matters when the network runs at 1/scale and the engine still touches every input pixel."""
    out = np.empty(raw.shape, dtype=np.float32)
    for c in range(raw.shape[0]):
        oc = out[c]
        np.clip(raw[c], 0.0, clip_dn, out=oc)                  # +inf -> clip_dn, -inf -> 0, NaN stays NaN
        oc *= np.float32(1.0 / (clip_dn * std[c]))
        oc -= np.float32(mean[c] / std[c])
        np.copyto(oc, np.float32(-mean[c] / std[c]), where=np.isnan(oc))   # NaN -> the value of 0
    return out


def cloud_mask(req: CloudMaskRequest, progress=None, is_cancelled=None, log: Optional[Log] = None) -> TaskResult:
    """Sentinel-2 raster -> uint8 mask (0 clear, 1 cloud, 255 nodata) and optional float32 probability."""
    from .modelfile import load_model

    log = log or (lambda _m: None)
    name = req.layer_name or Path(req.src_path).name
    count, descriptions = _open_info(req.src_path, name)
    bands, how = resolve_rgb_bands(req, count, descriptions)
    log(f"Bands B4, B3, B2 = {bands[0]}, {bands[1]}, {bands[2]} ({how})")

    sample, _desc, dtype = _sample(req.src_path, bands)
    finite = sample[np.isfinite(sample)]
    if finite.size == 0 or not np.any(finite != 0):
        raise InputError(f"Layer '{name}': bands {list(bands)} hold only nodata.")
    q99 = float(np.percentile(finite, 99))
    if q99 <= 2.0:
        raise InputError(f"Layer '{name}': bands {list(bands)} look like reflectance in 0..1 (99th percentile "
                         f"{q99:.3g}); the cloud model expects Sentinel-2 digital numbers (reflectance x 10,000). "
                         "Multiply the layer by 10000 first (Raster Calculator).")

    card_path = Path(req.model_path) if req.model_path else bundled_model_path("cloudmask", "the cloud mask")
    device = resolve_device(req.device)
    net, card = load_model(card_path, "cloudmask", device)
    threshold = float(card.output.get("threshold", 0.5) if req.threshold is None else req.threshold)
    if not 0.0 < threshold < 1.0:
        raise InputError(f"Threshold {threshold} must lie strictly between 0 and 1.")
    log(f"Model: {card.name}, device: {device}, threshold {threshold:g}")
    nrm = card.normalisation
    mean, std = nrm.get("mean", norm.IMAGENET_MEAN), nrm.get("std", norm.IMAGENET_STD)
    clip_dn = float(nrm.get("clip_dn", norm.CLOUD_CLIP_DN))

    def prepare(raw: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        # Sentinel-2 products mark nodata as 0 in every band, even without a nodata tag.
        valid = np.all(np.isfinite(raw), axis=0) & np.any(raw != 0, axis=0)
        return fast_cloud_preprocess(raw, mean, std, clip_dn), valid

    cloud_pixels = 0

    def convert_mask(prob: np.ndarray, valid: np.ndarray) -> np.ndarray:
        nonlocal cloud_pixels
        mask = (prob[0] >= threshold).astype(np.uint8)
        mask[~valid] = MASK_NODATA
        cloud_pixels += int((mask == 1).sum())
        return mask[None]

    def convert_prob(prob: np.ndarray, valid: np.ndarray) -> np.ndarray:
        out = prob[:1].astype(np.float32).copy()
        out[0][~valid] = PROB_NODATA
        return out

    outputs = [OutputSpec(path=req.dst_path, count=1, dtype="uint8", nodata=MASK_NODATA, convert=convert_mask,
                          descriptions=("cloud mask (0 clear, 1 cloud)",),
                          tags={"SAR2EO_MODEL": card.name, "CLOUD_THRESHOLD": f"{threshold:g}"})]
    if req.probability_path:
        outputs.append(OutputSpec(path=req.probability_path, count=1, dtype="float32", nodata=PROB_NODATA,
                                  convert=convert_prob, descriptions=("cloud probability",),
                                  tags={"SAR2EO_MODEL": card.name}))
    scale = int(card.tiling.get("scale", 1) if req.scale is None else req.scale)
    if not 1 <= scale <= 8:
        raise InputError(f"Scale {scale} must be between 1 (the input's resolution) and 8.")
    # Card tile size/overlap are in network pixels: in input pixels they are `scale` times larger.
    card_tiling = dict(card.tiling)
    card_tiling["tile_size"] = int(card_tiling.get("tile_size", 512)) * scale
    card_tiling["overlap"] = int(card_tiling.get("overlap", 32)) * scale
    options = _tiling_from(card_tiling, req.tile_size, req.overlap, req.batch_size, multiple=32 * scale)
    if scale > 1:
        log(f"Running the network at 1/{scale} of the input resolution (tiles pooled {scale}x{scale}, "
            "probability upsampled bilinearly to the input grid)")
    import torch

    net = net.to(memory_format=torch.channels_last)  # NHWC: faster for the EfficientNet encoder
    predictor = TorchPredictor(net, device, "sigmoid", channels_last=True, scale=scale, precision=req.precision)
    if req.precision != "float32":
        log(f"Network precision: {req.precision} (autocast); the card's metrics were measured in float32")
    run = run_tiled(req.src_path, bands, prepare, predictor, 1, outputs,
                    options, progress, is_cancelled, log)
    fraction = cloud_pixels / run.valid_pixels if run.valid_pixels else 0.0
    log(f"Cloud fraction of valid pixels: {100 * fraction:.2f} % ({cloud_pixels} of {run.valid_pixels})")
    result_outputs = {"OUTPUT": req.dst_path}
    if req.probability_path:
        result_outputs["PROBABILITY"] = req.probability_path
    return TaskResult(outputs=result_outputs, run=run, device=device,
                      extra={"CLOUD_FRACTION": fraction, "CLOUD_PIXELS": float(cloud_pixels),
                             "VALID_PIXELS": float(run.valid_pixels), "THRESHOLD": threshold,
                             "SCALE": float(scale)})

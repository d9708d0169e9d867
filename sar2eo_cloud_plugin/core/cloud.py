"""Cloud and cloud-shadow masking of Sentinel-2 rasters, driven by the model card.

Everything that differs between cloud models — which Sentinel-2 bands, in which order, which units
(reflectance or digital numbers), which normalisation, at which ground resolution, which classes and
activation — is read from the card (``docs/model_cards.md``); there is no per-model code path. The
seed's RGB EfficientNet-B2 (binary, sigmoid) and the ukis-csmask EfficientNet-B4 U-Nets (clear /
cloud / shadow, softmax, 30 m) are cards like any other.

A run: decide the product level and the DN offset (``s2product``), pick a model (``select_model``),
find its bands in the layer (``bands.find_s2_bands``), check a sample of the values, then run the
tiled engine. A model at the layer's resolution runs on the layer's grid; a coarser one runs on its own
grid (``regrid``: the bands averaged onto it as the network goes, the blended class probabilities sampled back at
every input pixel), so the outputs are always on the input's grid, nodata kept. The class raster is the
argmax (softmax) or the thresholded probability (sigmoid). An optional buffer dilates cloud and shadow
afterwards. No QGIS here.
"""
from __future__ import annotations

import contextlib
import math
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import modelstore, s2product
from .bands import available_s2_bands, canonical_s2_band, describe_bands, find_s2_bands
from .engine import OutputSpec, RunResult, TilingOptions, run_tiled
from .errors import InputError, ModelFileError, NoBundledWeightsError
from .validity import check_has_data
from . import modelfile
from .modelfile import ModelCard, read_card
from .runtime import DEFAULT_RUNTIME, RuntimeInfo, load_predictor, model_runnable

Log = Callable[[str], None]

MASK_NODATA = 255
PROB_NODATA = -1.0
CLEAR, CLOUD, SHADOW = 0, 1, 2
CLASS_NAMES = {CLEAR: "clear", CLOUD: "cloud", SHADOW: "shadow"}
MODES = ("classes", "cloud_only")
NORMALISATIONS = ("mean_std", "clip_mean_std")

# What "auto" picks, best first, for the bands a layer has ({level} is the layer's product level).
# Measured on the hand-labelled Sentinel-2 half-scene (benchmarks/cloud_quality.py, README "Results"):
# the 4-band ukis-csmask model scores higher cloud and shadow IoU than the 6-band one on L1C, so the
# 4-band model is preferred even when SWIR bands are present. The RGB-only model is the last resort.
AUTO_PREFERENCE = ("ukis_csmask_4b_{level}", "ukis_csmask_6b_{level}", "cloudmask")


# ------------------------------------------------------------------------------------------ the card
@dataclass(frozen=True)
class CloudModelSpec:
    """What a cloud model card says about feeding the network and reading its output."""

    name: str
    card_path: Path
    bands: Tuple[str, ...]
    units: str                      # "reflectance" (DN/10,000) or "dn"
    level: str                      # "L1C", "L2A" or "any"
    resolution_m: Optional[float]   # None: the layer's own resolution
    method: str                     # normalisation, one of NORMALISATIONS
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    clip: Tuple[float, ...]         # only for clip_mean_std
    classes: Tuple[Tuple[int, str], ...]   # (value, name) per network channel (sigmoid: the positive class)
    activation: str                 # "softmax" or "sigmoid"
    threshold: float
    tiling: Dict = field(default_factory=dict)

    @property
    def class_values(self) -> Tuple[int, ...]:
        """Class codes written to the class raster, in probability-band order."""
        if self.activation == "sigmoid":
            return (CLEAR, self.classes[-1][0])
        return tuple(v for v, _n in self.classes)

    @property
    def label(self) -> str:
        names = "/".join(CLASS_NAMES.get(v, str(v)) for v in self.class_values)
        res = f"{self.resolution_m:g} m" if self.resolution_m else "native resolution"
        return f"{self.name} ({', '.join(self.bands)}; {self.level}; {res}; {names})"

    @classmethod
    def from_card(cls, card: ModelCard, card_path: Path) -> "CloudModelSpec":
        def bad(what: str) -> ModelFileError:
            return ModelFileError(f"Model card {card_path}: {what} (see docs/model_cards.md).")

        inp, nrm, out = card.input, card.normalisation, card.output
        bands = tuple(canonical_s2_band(str(b)) or "" for b in inp.get("bands", ()))
        if not bands or "" in bands:
            raise bad(f"input.bands {inp.get('bands')!r} must be Sentinel-2 band names such as B2, B8A")
        channels = int(card.architecture_args.get("in_channels", len(bands)))
        if channels != len(bands):
            raise bad(f"input.bands lists {len(bands)} bands but architecture_args.in_channels is {channels}")
        legacy = "method" not in nrm   # the seed's first card: clip_dn + ImageNet mean/std, DN input
        method = "clip_mean_std" if legacy else str(nrm["method"])
        if method not in NORMALISATIONS:
            raise bad(f"normalisation.method '{method}' is not one of {', '.join(NORMALISATIONS)}")
        units = "dn" if legacy else str(inp.get("units", ""))
        if units not in ("reflectance", "dn"):
            raise bad(f"input.units '{units}' must be 'reflectance' or 'dn'")

        def per_band(key: str, default=None) -> Tuple[float, ...]:
            value = nrm.get(key, default)
            if isinstance(value, (int, float)):
                value = [value] * len(bands)
            if not isinstance(value, (list, tuple)) or len(value) != len(bands):
                raise bad(f"normalisation.{key} must hold one number per input band ({len(bands)})")
            return tuple(float(v) for v in value)

        mean, std = per_band("mean"), per_band("std")
        if any(not s > 0 for s in std):
            raise bad("normalisation.std must be > 0 for every band")
        clip = per_band("clip", nrm.get("clip_dn")) if method == "clip_mean_std" else ()
        if clip and any(not c > 0 for c in clip):
            raise bad("normalisation.clip must be > 0 for every band")
        activation = str(out.get("activation", "sigmoid"))
        raw_classes = out.get("classes", [])
        if isinstance(raw_classes, dict):      # legacy {"0": "clear", "1": "cloud ..."}
            raw_classes = [{"value": int(k), "name": v} for k, v in raw_classes.items()]
        classes = tuple((int(c["value"]), str(c["name"])) for c in raw_classes)
        net_classes = int(card.architecture_args.get("classes", 1))
        if activation == "softmax":
            if len(classes) != net_classes or net_classes < 2:
                raise bad(f"a softmax model needs one output.classes entry per network class ({net_classes})")
        elif activation == "sigmoid":
            if net_classes != 1:
                raise bad("a sigmoid model has exactly one output channel (architecture_args.classes = 1)")
            classes = classes[-1:] if classes else ((CLOUD, "cloud"),)
        else:
            raise bad(f"output.activation '{activation}' must be 'softmax' or 'sigmoid'")
        if any(v not in CLASS_NAMES for v, _n in classes):
            raise bad(f"output.classes values must be among {sorted(CLASS_NAMES)} (clear, cloud, shadow)")
        threshold = float(out.get("threshold", 0.5))
        level = str(inp.get("level", "any"))
        if level not in ("L1C", "L2A", "any"):
            raise bad(f"input.level '{level}' must be L1C, L2A or any")
        res = inp.get("resolution_m")
        if res is not None and not (isinstance(res, (int, float)) and 0 < res <= 1000):
            raise bad(f"input.resolution_m {res!r} must be null or a number of metres in (0, 1000]")
        return cls(name=card.name, card_path=card_path, bands=bands, units=units, level=level,
                   resolution_m=float(res) if res else None, method=method, mean=mean, std=std, clip=clip,
                   classes=classes, activation=activation, threshold=threshold, tiling=dict(card.tiling))


def read_spec(card_path: Path) -> CloudModelSpec:
    return CloudModelSpec.from_card(read_card(card_path, "cloudmask"), Path(card_path))


def bundled_cloud_models(models_dir: Optional[Path] = None) -> List[str]:
    """Names of the cloud model cards in the plugin's models folder (cards only; weights may be absent)."""
    folder = Path(models_dir if models_dir is not None else modelfile.BUNDLED_DIR)
    names = []
    for card_file in sorted(folder.glob("*.json")):
        with contextlib.suppress(ModelFileError):
            if read_card(card_file).task == "cloudmask":
                names.append(card_file.stem)
    return names


def model_choices(models_dir: Optional[Path] = None) -> List[str]:
    """What a user can choose as the cloud model: "auto", then every bundled cloud card by name (the
    order of the Processing MODEL enum and the dock's list)."""
    return ["auto"] + bundled_cloud_models(models_dir)


def weights_present(name_or_card: "str | Path") -> bool:
    """Whether a cloud model can run here (a bundled name or a card path; no hashing): its ONNX graph is
    installed and onnxruntime is, or its weights are and torch is (:func:`runtime.model_runnable`)."""
    card_path: Optional[Path] = Path(name_or_card)
    if Path(name_or_card).suffix != ".json":
        card_path = modelstore.find_card(str(name_or_card))    # the store, then the bundled folder
    if card_path is None:
        return False
    with contextlib.suppress(ModelFileError, OSError):
        return model_runnable(card_path, read_card(card_path))
    return False


def select_model(available: Sequence[str], level: Optional[str], models_dir: Optional[Path] = None,
                 log: Optional[Log] = None) -> Tuple[Path, str]:
    """The bundled cloud model "auto" uses for a layer that has the Sentinel-2 bands ``available``.

    Returns (card path, why). Models whose weights are not installed are skipped, and the log says so.
    """
    folder = Path(models_dir if models_dir is not None else modelfile.BUNDLED_DIR)
    log = log or (lambda _m: None)
    levels = [level] if level else ["L1C", "L2A"]
    tried = []
    not_installed: List[str] = []
    for pattern in AUTO_PREFERENCE:
        for lv in levels if "{level}" in pattern else [None]:
            name = pattern.format(level=(lv or "").lower())
            card_path = folder / f"{name}.json" if models_dir is not None else modelstore.find_card(name)
            if card_path is None or not card_path.is_file():
                continue
            spec = read_spec(card_path)
            missing = [b for b in spec.bands if b not in available]
            if missing:
                tried.append(f"{name} needs {', '.join(missing)}")
                continue
            if not weights_present(card_path):
                log(f"Model {name} would fit but is not installed; skipped. {modelstore.how_to_get(name)}")
                tried.append(f"{name} is not installed")
                not_installed.append(name)
                continue
            why = f"the best bundled model for bands {', '.join(spec.bands)}"
            if not level and "{level}" in pattern:
                why += f" (level unknown: took the {lv} model; set the product level to choose)"
            if spec.activation == "sigmoid":
                why = ("the only bundled model these bands allow: an RGB-only cloud/clear model, WEAKER than the "
                       "multispectral cloud + shadow models (it finds no shadow and calls snow cloud); add B8 "
                       "(NIR) to the layer for a better mask")
            return card_path, why
    if not_installed:   # the layer is fine, the model is missing: say how to get the best one, nothing else
        raise NoBundledWeightsError(modelstore.how_to_get(not_installed[0]))
    raise InputError("No bundled cloud model fits this layer: " + ("; ".join(tried) or "no cloud model is "
                     "installed") + ". The layer needs at least B2, B3, B4 (and B8 for the cloud + shadow models).")


# ----------------------------------------------------------------------------------- preprocessing
def make_prepare(spec: CloudModelSpec, offset: float) -> Callable[[np.ndarray], Tuple[np.ndarray, np.ndarray]]:
    """raw DN (C, h, w) float32 with NaN for nodata -> (network input, valid) as the card says.

    Folded into one multiply-add per band: x' = (DN + offset) * a - b. Sentinel-2 products mark
    nodata as 0 in every band, even without a nodata tag, so an all-zero pixel is nodata too.
    """
    per_unit = 1.0 / 10000.0 if spec.units == "reflectance" else 1.0
    coeffs = []
    for c in range(len(spec.bands)):
        if spec.method == "mean_std":       # ((DN + o) * u - mean) / std
            a, b = per_unit / spec.std[c], spec.mean[c] / spec.std[c]
            lo, hi = -np.inf, np.inf
        else:                               # (clip((DN + o) * u, 0, clip) / clip - mean) / std
            a, b = per_unit / (spec.clip[c] * spec.std[c]), spec.mean[c] / spec.std[c]
            lo, hi = 0.0, spec.clip[c] / per_unit
        coeffs.append((np.float32(a), np.float32(b), lo, hi))

    def prepare(raw: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        valid = np.all(np.isfinite(raw), axis=0) & np.any(raw != 0, axis=0)
        out = np.empty(raw.shape, dtype=np.float32)
        for c, (a, b, lo, hi) in enumerate(coeffs):
            oc = out[c]
            np.add(raw[c], np.float32(offset), out=oc)
            if math.isfinite(lo) or math.isfinite(hi):
                np.clip(oc, lo, hi, out=oc)
            oc *= a
            oc -= b
            np.copyto(oc, -b, where=~valid)     # nodata -> the value of 0 (network sees a neutral pixel)
        return out, valid

    return prepare


def check_values(sample: np.ndarray, spec: CloudModelSpec, dtype: str, offset: float, name: str,
                 bands: Sequence[int]) -> None:
    """Refuse values a reflectance model must not be fed (8-bit renderings, 0-1 floats, all nodata)."""
    finite = sample[np.isfinite(sample)]
    finite = finite[finite != 0]
    listed = ", ".join(f"{b}={n}" for b, n in zip(spec.bands, bands))
    if finite.size == 0:
        raise InputError(f"Layer '{name}': bands {listed} hold only nodata (or 0) in a sample of the layer.")
    q99 = float(np.percentile(finite, 99))
    if dtype in ("uint8", "int8") or (dtype.startswith(("uint", "int")) and q99 <= 255 and sample.size > 100):
        raise InputError(f"Layer '{name}' is 8-bit imagery ({dtype}, 99th percentile {q99:.4g}), e.g. a true-colour "
                         f"rendering, not Sentinel-2 digital numbers (reflectance x 10,000). Bands seen: {listed}. "
                         "Run the cloud mask on the original L1C/L2A bands.")
    if q99 <= 2.0:
        raise InputError(f"Layer '{name}': bands {listed} look like reflectance in 0..1 (99th percentile "
                         f"{q99:.3g}); the cloud models expect Sentinel-2 digital numbers (reflectance x 10,000). "
                         "Multiply the layer by 10000 first (Raster Calculator).")
    if offset < 0 and float(np.percentile(finite, 1)) < -offset * 0.5:
        raise InputError(f"Layer '{name}': offset {offset:g} was chosen, but many values are below {-offset:g} "
                         f"(1st percentile {float(np.percentile(finite, 1)):.4g}), which a baseline 04.00 product "
                         "never stores. Set the Offset parameter to 'none'.")


# --------------------------------------------------------------------------------------- resolution
def pixel_size_m(src) -> float:
    """Ground size of one pixel in metres (geographic CRSs: measured at the raster's centre)."""
    xres, yres = abs(src.transform.a), abs(src.transform.e)
    crs = src.crs
    if crs is None:
        raise InputError(f"Raster '{src.name}' has no coordinate reference system.")
    if crs.is_geographic:
        lat = math.radians((src.bounds.top + src.bounds.bottom) / 2.0)
        # metres per degree on the WGS 84 ellipsoid at that latitude
        m_lat = 111132.92 - 559.82 * math.cos(2 * lat) + 1.175 * math.cos(4 * lat)
        m_lon = 111412.84 * math.cos(lat) - 93.5 * math.cos(3 * lat)
        return math.sqrt(xres * m_lon * yres * m_lat)
    factor = crs.linear_units_factor[1] if crs.linear_units_factor else 1.0
    return math.sqrt(xres * yres) * float(factor)


def network_scale(spec: CloudModelSpec, pixel_m: float, override_m: Optional[float] = None) -> float:
    """How many input pixels make one network pixel (3.0: 10 m input, 30 m model). Within 5 % of 1
    the network runs on the input pixels as they are."""
    target = override_m or spec.resolution_m
    if not target:
        return 1.0
    scale = target / pixel_m
    return 1.0 if abs(scale - 1.0) < 0.05 else scale


# ------------------------------------------------------------------------------------ class raster
class ClassCounter:
    """Pixels per class code, summed over the chunks the engine's writer thread converts. A class raster holds
    only the class codes and MASK_NODATA; counting those four is several times faster than a bincount."""

    CODES = (*CLASS_NAMES, MASK_NODATA)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts = np.zeros(256, dtype=np.int64)

    def add(self, mask: np.ndarray) -> None:
        counts = [np.count_nonzero(mask == code) for code in self.CODES]
        if sum(counts) != mask.size:
            raise RuntimeError(f"class raster holds codes other than {self.CODES}")
        with self._lock:
            self.counts[list(self.CODES)] += counts


def class_decider(spec: CloudModelSpec, threshold: float) -> Callable[[np.ndarray], np.ndarray]:
    """probabilities (C, h, w) -> index into ``spec.class_values`` (h, w): the most probable class (softmax) or
    the positive class at or above the threshold (sigmoid). Both give the class all of some probability vectors
    give to any convex combination of them, which the 10 m back-sampling relies on (``regrid.Decide``)."""
    if spec.activation == "sigmoid":
        return lambda prob: (prob[0] >= threshold).astype(np.uint8)
    return lambda prob: np.argmax(prob, axis=0).astype(np.uint8)


def class_converter(spec: CloudModelSpec, mode: str, threshold: float, counter: ClassCounter,
                    from_index: bool = False) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """convert(probabilities, valid) -> the uint8 class raster (counted in ``counter``); with ``from_index`` the
    converter is handed the decided class index (1, h, w) instead of the probabilities (``regrid.BackSampler``
    with ``decide``)."""
    values = np.asarray(spec.class_values, dtype=np.uint8)
    if mode == "cloud_only":
        values = np.where(values == CLOUD, CLOUD, CLEAR).astype(np.uint8)
    decide = class_decider(spec, threshold)

    def convert(data: np.ndarray, valid: np.ndarray) -> np.ndarray:
        mask = values[data[0] if from_index else decide(data)]
        mask[~valid] = MASK_NODATA
        counter.add(mask)
        return mask[None]

    return convert


def probability_converter(spec: CloudModelSpec) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    def convert(prob: np.ndarray, valid: np.ndarray) -> np.ndarray:
        out = np.concatenate([1.0 - prob[:1], prob[:1]]) if spec.activation == "sigmoid" else prob.copy()
        out = out.astype(np.float32, copy=False)
        out[:, ~valid] = PROB_NODATA
        return out

    return convert


# ------------------------------------------------------------------------------------------ buffer
def buffer_classes(src_path: str, dst_path: str, radius_px: float, rows: int = 1024,
                   is_cancelled: Optional[Callable[[], bool]] = None) -> None:
    """Dilate shadow, then cloud (cloud wins where both grow), by ``radius_px`` pixels (a disk), into
    ``dst_path``. Works strip by strip with a halo of the radius, so memory stays bounded; nodata is
    never overwritten. Written under a temporary name, checked complete (as the engine checks its
    outputs) and renamed only then: a failed or cancelled pass leaves an earlier file as it was."""
    import rasterio
    from rasterio.windows import Window
    from scipy import ndimage

    from . import outputs
    from .geotiff import commit_output, finish_output
    from .errors import CancelledError

    r = int(math.ceil(radius_px))
    tmp = outputs.temp_path(dst_path)
    try:
        with rasterio.open(src_path) as src:
            profile = src.profile.copy()
            H, W = src.height, src.width
            dst = rasterio.open(tmp, "w", **profile)
            try:
                dst.update_tags(**src.tags())
                dst.set_band_description(1, src.descriptions[0] or "")
                for y0 in range(0, H, rows):
                    if is_cancelled and is_cancelled():
                        raise CancelledError("Cancelled by the user; no output was written.")
                    n = min(rows, H - y0)
                    top, bottom = max(0, y0 - r), min(H, y0 + n + r)
                    block = src.read(1, window=Window(0, top, W, bottom - top))
                    out = block.copy()
                    for value in (SHADOW, CLOUD):
                        hit = block == value
                        if hit.any():
                            near = ndimage.distance_transform_edt(~hit) <= radius_px
                            out[near & (block != MASK_NODATA)] = value
                    dst.write(out[y0 - top:y0 - top + n][None], window=Window(0, y0, W, n))
            except BaseException:
                with contextlib.suppress(Exception):
                    dst.close()
                raise
        finish_output(dst_path, dst, tmp, W, H, 1, "uint8")
        commit_output(tmp, dst_path)
    finally:
        outputs.remove_quietly([tmp])


# ------------------------------------------------------------------------------------------- a run
@dataclass
class CloudMaskRequest:
    src_path: str
    dst_path: str
    model: str = "auto"                 # "auto" or a bundled model name
    model_path: Optional[str] = None    # a model card file (wins over ``model``)
    band_map: str = ""                  # "B2=1,B3=2,..."; empty = detect
    level: str = "auto"                 # auto | L1C | L2A
    offset: str = "auto"                # auto | none | -1000
    mode: str = "classes"               # classes (0 clear, 1 cloud, 2 shadow) | cloud_only (0/1)
    buffer_m: float = 0.0
    threshold: Optional[float] = None   # sigmoid models only; None = the card's
    probability_path: Optional[str] = None
    device: str = "auto"
    tile_size: Optional[int] = None     # network pixels; None = the card's
    overlap: Optional[int] = None       # network pixels
    batch_size: Optional[int] = None
    resolution_m: Optional[float] = None   # run the network at this resolution instead of the card's
    precision: str = "float32"
    layer_name: str = ""
    runtime: str = DEFAULT_RUNTIME      # auto | onnxruntime | torch (core.runtime)


@dataclass
class CloudMaskResult:
    outputs: Dict[str, str]
    run: RunResult
    device: str
    model: str
    level: Optional[str]
    offset: float
    scale: float
    threshold: float
    class_pixels: Dict[str, int]
    valid_pixels: int
    messages: List[str] = field(default_factory=list)
    runtime: Optional[RuntimeInfo] = None

    def fraction(self, name: str) -> float:
        return self.class_pixels.get(name, 0) / self.valid_pixels if self.valid_pixels else 0.0


def _read_meta(src_path: str, name: str):
    import rasterio

    try:
        with rasterio.open(src_path) as src:
            return (src.count, list(src.descriptions), dict(src.tags()),
                    [dict(src.tags(i)) for i in range(1, src.count + 1)], pixel_size_m(src),
                    (src.height, src.width))
    except InputError:
        raise
    except Exception as exc:  # rasterio raises several types; all mean "cannot read"
        raise InputError(f"Layer '{name}': cannot read raster '{src_path}': {exc}") from exc


def cloud_mask(req: CloudMaskRequest, progress=None, is_cancelled=None, log: Optional[Log] = None) -> CloudMaskResult:
    """Sentinel-2 raster -> uint8 class raster (0 clear, 1 cloud, 2 shadow, 255 nodata) and, if asked,
    float32 per-class probabilities. ``req.src_path`` may also be a Sentinel-2 product as downloaded
    (a .SAFE folder, its zip, its MTD_MSI*.xml or a SENTINEL2 subdataset): its 10 m and 20 m bands are
    stacked on the 10 m grid (:mod:`.safe`) and the product's metadata gives level, date and offset."""
    from .safe import product_stack

    log = log or (lambda _m: None)
    with tempfile.TemporaryDirectory(prefix="sar2eo_product_") as workdir:
        stack = product_stack(req.src_path, workdir, log=log)
        if stack is None:
            return _cloud_mask_raster(req, req.src_path, progress, is_cancelled, log)
        log(f"Sentinel-2 product {Path(req.src_path).name}: bands stacked on its 10 m grid")
        return _cloud_mask_raster(req, stack, progress, is_cancelled, log)


def _cloud_mask_raster(req: CloudMaskRequest, src_path: str, progress, is_cancelled, log: Log) -> CloudMaskResult:
    """:func:`cloud_mask` on a raster GDAL reads directly (``src_path``: the request's own file, or the
    stack built from a product)."""
    from .inference import sample_bands, tiling_from

    name = req.layer_name or Path(req.src_path).name
    if req.mode not in MODES:
        raise InputError(f"Unknown mode '{req.mode}' (use {' or '.join(MODES)}).")
    if not 0 <= req.buffer_m <= 10000:
        raise InputError(f"Buffer {req.buffer_m:g} m must be between 0 and 10,000 m.")
    count, descriptions, tags, band_tags, pixel_m, (height, width) = _read_meta(src_path, name)

    level = s2product.decide_level(req.level, count, descriptions, tags, req.src_path)
    log(f"Product level: {level.value or 'unknown'} ({level.reason})")
    from .bands import parse_band_map

    band_map = parse_band_map(req.band_map, count) if req.band_map.strip() else {}
    available, how_found = available_s2_bands(count, descriptions)
    available = {**available, **band_map}

    if req.model_path:
        card_path, why = Path(req.model_path), "the model file given"
    elif req.model and req.model != "auto":
        found = modelstore.find_card(req.model)
        if found is None:
            raise InputError(f"No bundled cloud model named '{req.model}' (bundled: "
                             f"{', '.join(bundled_cloud_models()) or 'none'}).")
        card_path, why = found, "chosen by the user"
    else:
        if not available:
            raise InputError(f"Layer '{name}': cannot tell which Sentinel-2 bands it holds ({how_found}; bands seen: "
                             f"{describe_bands(descriptions)}). Name them with the Band map parameter, e.g. "
                             "B2=1, B3=2, B4=3, B8=4.")
        card_path, why = select_model(list(available), level.value, log=log)
    spec = read_spec(card_path)
    log(f"Model: {spec.label} — {why}")
    if spec.level != "any" and level.value and spec.level != level.value:
        log(f"Warning: the layer is {level.value} but model {spec.name} was trained on {spec.level}; "
            "its figures do not apply as measured")
    bands, how = find_s2_bands(spec.bands, count, descriptions, band_map)
    log(f"Bands {how}")

    offset = s2product.decide_offset(req.offset, tags, band_tags, req.src_path)
    log(f"DN offset: {offset.value:g} ({offset.reason})")
    sample, _desc, dtype = sample_bands(src_path, bands)
    check_has_data(sample, name, bands)
    check_values(sample, spec, dtype, float(offset.value), name, bands)

    threshold = float(spec.threshold if req.threshold is None else req.threshold)
    if not 0.0 < threshold < 1.0:
        raise InputError(f"Threshold {threshold} must lie strictly between 0 and 1.")
    if req.threshold is not None and spec.activation == "softmax":
        log(f"Threshold {threshold:g} ignored: {spec.name} picks the most probable class (softmax)")
    if req.resolution_m is not None and not 0 < req.resolution_m <= 1000:
        raise InputError(f"Network resolution {req.resolution_m:g} m must be in (0, 1000].")
    scale = network_scale(spec, pixel_m, req.resolution_m)
    net_tile = int(req.tile_size or spec.tiling.get("tile_size", 512))
    if net_tile % 32:
        raise InputError(f"Tile size {net_tile} must be a multiple of 32 for this network.")
    if req.tile_size is None:   # a raster smaller than a tile: a tile just big enough, not padding
        net_tile = min(net_tile, max(32, 32 * math.ceil(max(height, width) / scale / 32)))
    net_overlap = int(spec.tiling.get("overlap", 32) if req.overlap is None else req.overlap)
    net_overlap = min(net_overlap, net_tile // 2)
    tiling = {"tile_size": net_tile, "overlap": net_overlap,
              "batch_size": int(req.batch_size or spec.tiling.get("batch_size", 2))}
    options: TilingOptions = tiling_from(tiling, None, None, None, multiple=32)
    log(f"Pixels are {pixel_m:.3g} m; the network runs at "
        + (f"{pixel_m * scale:.3g} m (the input averaged onto a grid 1/{scale:.3g} as fine, class probabilities "
           "blended there and sampled bilinearly back at every input pixel)" if scale != 1.0
           else "the input's own resolution"))

    loading = _PredictorLoading(log, card_path, req.runtime, req.device, spec.activation, req.precision)
    counter = ClassCounter()
    model_tags = {"SAR2EO_MODEL": spec.name, "CLOUD_LEVEL": str(level.value), "CLOUD_OFFSET": f"{offset.value:g}",
                  "CLOUD_SOURCE": Path(req.src_path).name}
    classes_written = sorted(set(np.where(np.asarray(spec.class_values) == CLOUD, CLOUD, CLEAR))
                             if req.mode == "cloud_only" else set(spec.class_values))
    legend = ", ".join(f"{v} {CLASS_NAMES[v]}" for v in classes_written) + f", {MASK_NODATA} nodata"
    buffered = req.buffer_m > 0
    mask_target = req.dst_path
    if buffered:   # the engine writes the unbuffered mask beside the output, the buffer pass the output
        from .outputs import temp_path

        mask_target = temp_path(req.dst_path)   # PID-tagged: a killed run's leftover is swept like any partial
    # On a coarser network grid, a class raster alone is decided at 10 m without interpolating most pixels
    # (regrid.BackSampler with decide); the probability raster needs every pixel interpolated.
    decide = class_decider(spec, threshold) if scale != 1.0 and not req.probability_path else None
    outputs = [OutputSpec(path=mask_target, count=1, dtype="uint8", nodata=MASK_NODATA,
                          convert=class_converter(spec, req.mode, threshold, counter, from_index=decide is not None),
                          descriptions=(f"cloud mask ({legend})",),
                          tags={**model_tags, "CLOUD_CLASSES": legend, "CLOUD_MODE": req.mode,
                                "CLOUD_BUFFER_M": f"{req.buffer_m:g}"})]
    if req.probability_path:
        outputs.append(OutputSpec(path=req.probability_path, count=len(spec.class_values), dtype="float32",
                                  nodata=PROB_NODATA, convert=probability_converter(spec),
                                  descriptions=tuple(f"probability of {CLASS_NAMES[v]}" for v in spec.class_values),
                                  tags=model_tags))
    channels = len(spec.class_values) if spec.activation == "softmax" else 1
    try:
        if scale == 1.0:
            run = run_tiled(src_path, bands, make_prepare(spec, float(offset.value)), loading.predictor(), channels,
                            outputs, options, progress, is_cancelled, log)
        else:
            run = _run_on_network_grid(src_path, bands, scale, spec, float(offset.value), loading.predictor,
                                       channels, outputs, options, progress, is_cancelled, log, decide)
        info = loading.info()
        counts = counter.counts.copy()
        if buffered:
            radius = req.buffer_m / pixel_m
            log(f"Buffer: cloud and shadow dilated by {req.buffer_m:g} m ({radius:.3g} px)")
            buffer_classes(mask_target, req.dst_path, radius, is_cancelled=is_cancelled)
            counts = _count_classes(req.dst_path)
    finally:
        loading.close()
        if buffered:
            from .outputs import remove_quietly

            remove_quietly([mask_target])
    class_pixels = {CLASS_NAMES[v]: int(counts[v]) for v in (CLEAR, CLOUD, SHADOW)}
    valid = int(sum(class_pixels.values()))
    result = CloudMaskResult(outputs={"OUTPUT": req.dst_path}, run=run, device=info.device, model=spec.name,
                             level=level.value, offset=float(offset.value), scale=scale,
                             threshold=threshold, class_pixels=class_pixels, valid_pixels=valid, runtime=info)
    if req.probability_path:
        result.outputs["PROBABILITY"] = req.probability_path
    log("Of the valid pixels: " + ", ".join(f"{k} {100 * result.fraction(k):.2f} %" for k in class_pixels)
        + f" ({valid} valid pixels)")
    return result


class _PredictorLoading:
    """``runtime.load_predictor`` on a thread of its own, started at once: ONNX Runtime builds its session (graph
    optimisation, about 0.5 s) while the input is averaged onto the network's grid instead of before. Its log
    lines are replayed on the caller's thread (a QGIS feedback is not thread-safe), where its error is raised."""

    def __init__(self, log: Log, card_path: Path, runtime: str, device: str, activation: str, precision: str) -> None:
        self._log, self._precision = log, precision
        self._lines: List[str] = []
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="sar2eo-load")
        self._job = self._pool.submit(load_predictor, card_path, "cloudmask", runtime, device, activation, precision,
                                      log=self._lines.append)
        self._loaded: Optional[Tuple[Callable[[np.ndarray], np.ndarray], RuntimeInfo]] = None

    def _result(self) -> Tuple[Callable[[np.ndarray], np.ndarray], RuntimeInfo]:
        """(predictor, info), waiting for them; the first call says what loading logged."""
        if self._loaded is None:
            try:
                predictor, _card, info = self._job.result()
            finally:
                lines, self._lines = self._lines, []
                for line in lines:
                    self._log(line)
            if self._precision != "float32":
                self._log(f"Network precision: {self._precision} (autocast); the card's metrics were measured "
                          "in float32")
            self._loaded = (predictor, info)
        return self._loaded

    def predictor(self) -> Callable[[np.ndarray], np.ndarray]:
        """The network (waits for it to load)."""
        return self._result()[0]

    def info(self) -> RuntimeInfo:
        """Which runtime and device run it."""
        return self._result()[1]

    def close(self) -> None:
        """Wait for the loading thread (a run that failed before it needed the network)."""
        self._pool.shutdown(wait=True)


def _run_on_network_grid(src_path: str, bands: Sequence[int], scale: float, spec: CloudModelSpec, offset: float,
                         predictor_of: Callable[[], Callable[[np.ndarray], np.ndarray]], channels: int,
                         outputs: Sequence[OutputSpec], options: TilingOptions, progress, is_cancelled, log: Log,
                         decide: Optional[Callable[[np.ndarray], np.ndarray]] = None) -> RunResult:
    """The engine on the input averaged onto the network's grid, then the probabilities back on the input
    grid (:mod:`.regrid`); the outputs are the same as the engine would write at the input's resolution.
    ``predictor_of()`` gives the network (it loads while the averaged grid starts filling);
    ``decide``: the outputs take the class index, not the probabilities (``regrid.BackSampler``)."""
    from . import regrid

    progress = progress or (lambda _f: None)
    with tempfile.TemporaryDirectory(prefix="sar2eo_network_grid_") as workdir, \
            regrid.AveragedGrid(src_path, bands, scale, workdir) as grid:
        predictor = predictor_of()      # ONNX Runtime's session is built while the grid fills
        log(f"Network grid: {grid.width} x {grid.height} px")
        # The probabilities go back to the input's grid while the network still runs (regrid.StreamingBackSampler
        # is fed the finished rows); nothing is written on the network's grid.
        sampler = regrid.StreamingBackSampler((channels, grid.height, grid.width), PROB_NODATA, src_path, bands[0],
                                              outputs, decide=decide)
        try:
            def keep(prob: np.ndarray, valid: np.ndarray) -> np.ndarray:
                sampler.feed(prob, valid)
                return prob

            spec_out = OutputSpec(path=None, count=channels, dtype="float32", nodata=PROB_NODATA, convert=keep)
            run = run_tiled(grid, list(range(1, len(bands) + 1)), make_prepare(spec, offset), predictor,
                            channels, [spec_out], options, lambda f: progress(0.95 * f), is_cancelled, log)
            sampler.finish()
            progress(100.0)
        finally:
            sampler.close()
    return run


def _count_classes(path: str) -> np.ndarray:
    import rasterio

    counts = np.zeros(256, dtype=np.int64)
    with rasterio.open(path) as src:
        for _ij, window in src.block_windows(1):
            counts += np.bincount(src.read(1, window=window).ravel(), minlength=256)
    return counts

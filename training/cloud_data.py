"""Cloud-mask data: real Sentinel-2 patches labelled by a real teacher, synthetic clouds with exact labels, and
CloudSEN12 for users who have it.

Every source ends up as the same items, ``(rgb_dn (3, H, W) B4, B3, B2 digital numbers, mask (H, W) uint8 0/1,
name)``; the network input is always ``core.normalisation.cloud_preprocess`` of the digital numbers, the function
the plugin runs (clip at 4,000 DN, scale to 0..1, ImageNet mean/std). Transforms (crops, mosaics, flips, synthetic
clouds) are separate from I/O: :class:`TeacherCloudSamples` and :class:`SyntheticClouds` take items in memory.

Teacher-labelled real patches (``data.kind: teacher``, the bundled model)
-------------------------------------------------------------------------
Sources, all REAL Sentinel-2 imagery from ``../shared/data`` (its README gives provenance and licences):

* ``bigearthnet-configilm/*.npz``: 46 BigEarthNet L2A patches, 120 x 120 px at 10 m, no georeference;
* ``bigearthnet-example/BigEarthNet-S2-Example/<patch>/<patch>_B0x.tif``: 5 BigEarthNet L2A patches, UTM;
* ``sen1floods11-sample/Spain_7370579_S2Hand.tif``: one 512 x 512 L1C image (13 bands, EPSG:4326), 2019-09-18.

``cloud-labelled/`` is never read here: it is the evaluation data.

Labels come from the ukis-csmask 1.0.0 U-Nets (DLR, Apache-2.0; Wieland et al. 2022) run through the plugin's own
engine (``core.cloud.cloud_mask``, the code path of the Processing algorithm): ``ukis_csmask_4b_l2a`` for the L2A
patches and ``ukis_csmask_4b_l1c`` for the L1C image, each the best of the four ukis models for its level on the
hand-labelled scene (benchmarks/cloud_quality.py). Each patch's B2, B3, B4, B8 are first averaged onto the 30 m
grid with the plugin's own ``core.regrid.network_grid`` (the very grid the student sees at run time, its card saying
30 m), and the teacher runs on that grid. Cloud (class 1) is the positive class; clear and shadow are negative.
Patches the plugin refuses are left out and listed (the 8-bit check refuses very dark water patches whose 99th
percentile is at most 255 DN: 3 of the 52 patches here).

Synthetic clouds and shadows (:class:`SyntheticClouds`): PyPI ``satellite-cloud-generator`` 0.4 (Apache-2.0,
Czerkawski et al., https://github.com/strath-ai/SatelliteCloudGenerator) composites Perlin-noise clouds and
shadows onto a real patch the teacher calls clear (cloud <= ``clear_max``); the label is exact: cloud where the
generated cloud opacity is >= ``opacity_label`` (0.3), shadow and the rest clear. ``synthetic_share`` of the
training samples are synthetic (0.6 in the bundled config: 60 %), the rest real patches with teacher labels; the
validation set is the real validation patches (teacher labels) plus ``val_synthetic`` fixed synthetic samples on
them (bundled: 10 real + 32 synthetic, 76 % synthetic).

Split by sensing date (``val_dates``): patches of one product are near-duplicates, so no product is on both sides.
The split and the products on each side are written to the run's log and to the model card. The bundled config
(``configs/bundled_cloudmask.yaml``) validates on 10 patches of 6 products: 20170617T113321 (3),
20171121T112351 (1), 20180515T094029 (3), 20180515T112109 (1), 20180525T94030 (1), 20180525T94031 (1); it trains
on 39 patches of 17 products: 20170613T101031 (2) and 20170613T101031_33UUP (21), 20170701T093031,
20170817T101019, 20170818T103021, 20170831T095029, 20170924T93020, 20170930T095019, 20171002T112112,
20180204T94161, 20180225T114351, 20180413T95032, 20180417T102019 (2), 20180502T093039, 20180511T100029,
20180521T100029 (1 each unless said) and the Sen1Floods11 L1C image of 20190918.

Cache layout (``data.cache_dir``, default ``data-cache/cloud_teacher_30m``; git-ignored)::

    <cache_dir>/index.json      {"resolution_m": 30, "teachers": {level: {"model", "sha256"}},
                                 "patches": [{"name", "date", "product", "level", "source", "teacher", "status",
                                              "reason", "shape", "cloud_fraction", "shadow_fraction"}]}
    <cache_dir>/<name>.npz      dn (4, h, w) uint16 B2, B3, B4, B8 averaged onto the 30 m grid;
                                classes (h, w) uint8 teacher classes 0 clear, 1 cloud, 2 shadow, 255 nodata

A cache made with other teacher weights (sha256) is rebuilt.

CloudSEN12 cache layout (``data.kind: cloudsen12``, ``data.cache_dir``)::

    <cache_dir>/index.json           {"source", "bands": ["B4","B3","B2"], "label_mapping", "samples": [ids]}
    <cache_dir>/images/<id>.npy      uint16 (3, H, W)  B4, B3, B2 Level-1C digital numbers (reflectance x 10,000)
    <cache_dir>/masks/<id>.npy       uint8  (H, W)     1 = thick (1) or thin (2) cloud, 0 = clear (0) or shadow (3)

``localise_cloudsen12`` fills it once from ``tacofoundation:cloudsen12-l1c``; later runs find it and reuse it.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from sar2eo_cloud_plugin.core import normalisation as norm
from sar2eo_cloud_plugin.core.bands import S2_L1C_ORDER, S2_L2A_ORDER

from . import common

Item = Tuple[np.ndarray, np.ndarray, str]

CLOUDSEN12_SOURCE = "tacofoundation:cloudsen12-l1c"
CLOUDSEN12_LABELS = {"0": "clear -> 0", "1": "thick cloud -> 1", "2": "thin cloud -> 1", "3": "cloud shadow -> 0"}


class CloudDataUnavailable(common.DataError):
    """No CloudSEN12 data can be found or fetched; the message says what to download (the CLI prints it, exit 2)."""


# ------------------------------------------------------------------------------------------------ CloudSEN12
def cache_status(cache_dir: Path) -> List[str]:
    idx = Path(cache_dir) / "index.json"
    if not idx.is_file():
        return []
    ids = json.loads(idx.read_text(encoding="utf-8")).get("samples", [])
    return [i for i in ids if (Path(cache_dir) / "images" / f"{i}.npy").is_file()
            and (Path(cache_dir) / "masks" / f"{i}.npy").is_file()]


def _offline_message(cache_dir: Path, n: int, have: int, source: str, exc: BaseException) -> str:
    return (f"CloudSEN12 is not available: the cache {cache_dir} holds {have} of the {n} samples asked for, and "
            f"tacoreader could not open '{source}' ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}).\n"
            f"Either run `python -m training cloudmask localise --config <config>` on a machine with internet access "
            f"(it downloads {n} samples of the CloudSEN12 L1C TACO dataset, https://huggingface.co/datasets/"
            f"tacofoundation/cloudsen12, and writes them to {cache_dir}), then copy that folder here; or download the "
            f"cloudsen12-l1c .tacozip parts yourself and set data.source to their local path(s). The cache layout is "
            f"index.json + images/<id>.npy (uint16 B4,B3,B2) + masks/<id>.npy (uint8 0/1).")


def localise_cloudsen12(cache_dir, n: int, source: str = CLOUDSEN12_SOURCE, seed: int = 0, log=print) -> List[str]:
    """Make sure ``cache_dir`` holds ``n`` CloudSEN12 samples; download only what is missing. Returns the ids."""
    cache_dir = Path(cache_dir)
    have = cache_status(cache_dir)
    if len(have) >= n:
        log(f"CloudSEN12 cache {cache_dir}: {len(have)} samples present, using {n} (nothing downloaded)")
        return have[:n]
    try:
        import rasterio

        ds = _open_taco(source)
        total = len(ds.data) if hasattr(ds, "data") else len(ds)
    except Exception as exc:  # noqa: BLE001 - no network, no package, unknown source: say what to do
        raise CloudDataUnavailable(_offline_message(cache_dir, n, len(have), source, exc)) from None
    (cache_dir / "images").mkdir(parents=True, exist_ok=True)
    (cache_dir / "masks").mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng(seed).permutation(total)
    ids = list(have)
    from tqdm import tqdm

    bar = tqdm(total=n, initial=len(ids), desc="localising CloudSEN12")
    for j in order:
        if len(ids) >= n:
            break
        sid = f"{int(j):06d}"
        if sid in ids:
            continue
        try:
            sample = ds.read(int(j))
            img_ref, lbl_ref = sample.read(0), sample.read(1)
            with rasterio.open(img_ref) as src:
                rgb = src.read([S2_L1C_ORDER.index(b) + 1 for b in ("B4", "B3", "B2")]).astype(np.uint16)
            with rasterio.open(lbl_ref) as src:
                lbl = src.read(1)
        except Exception as exc:  # noqa: BLE001 - skip a sample that fails, keep going
            log(f"CloudSEN12 sample {j} skipped: {exc}")
            continue
        mask = np.isin(lbl, (1, 2)).astype(np.uint8)
        np.save(cache_dir / "images" / f"{sid}.npy", rgb)
        np.save(cache_dir / "masks" / f"{sid}.npy", mask)
        ids.append(sid)
        bar.update(1)
        if len(ids) % 100 == 0:
            _write_index(cache_dir, ids, source)
    bar.close()
    _write_index(cache_dir, ids, source)
    return ids[:n]


def _open_taco(source: str):
    """Open a TACO dataset. ``tacofoundation:<name>`` (the seed's identifier) and ``.taco`` files are the TACO v1
    format, which tacoreader >= 2 reads only through ``tacoreader.v1`` (needs pandas); ``.tacozip`` files, folders
    and ``.tacocat`` URLs go to tacoreader's current ``load``."""
    if source.startswith("tacofoundation:") or source.endswith((".taco", ".tortilla")):
        try:
            import tacoreader.v1 as taco_v1
        except ImportError as exc:
            raise ImportError(f"reading '{source}' needs tacoreader's v1 reader, which needs pandas "
                              f"(pip install pandas): {exc}") from exc
        return taco_v1.load(source)
    import tacoreader

    return tacoreader.load(source)


def _write_index(cache_dir: Path, ids: Sequence[str], source: str) -> None:
    common.write_json(Path(cache_dir) / "index.json", {
        "source": source, "bands": ["B4", "B3", "B2"], "dtype": "uint16 L1C digital numbers",
        "label_mapping": CLOUDSEN12_LABELS, "samples": list(ids)})


def load_cloudsen12_items(cache_dir, n: Optional[int] = None) -> List[Item]:
    ids = cache_status(Path(cache_dir))
    if not ids:
        raise CloudDataUnavailable(f"No CloudSEN12 cache at {cache_dir} (index.json + images/ + masks/). Run "
                                   "`python -m training cloudmask localise --config <config>` first.")
    ids = ids[:n] if n else ids
    items = []
    for i in ids:
        rgb = np.load(Path(cache_dir) / "images" / f"{i}.npy", allow_pickle=False)
        mask = np.load(Path(cache_dir) / "masks" / f"{i}.npy", allow_pickle=False)
        items.append((rgb, mask.astype(np.uint8), i))
    return items


# ------------------------------------------------------------------------------------------------ pseudo-labels
RULE_TEXT = ("rule-based pseudo-label: cloud where the mean visible reflectance (B2, B3, B4) > {t}, the visible "
             "bands are flat ('whiteness' sum|Bi - mean| / mean < 0.7, after Zhu & Woodcock's Fmask) and the pixel is "
             "not snow (NDSI = (B3 - B11) / (B3 + B11) < 0.4); computed on L2A surface reflectance")


def pseudo_cloud_labels(dn: np.ndarray, order: Sequence[str] = S2_L2A_ORDER, threshold: float = 0.15) -> np.ndarray:
    """(bands, H, W) Sentinel-2 DN -> uint8 (H, W) pseudo cloud mask by the documented spectral rule (RULE_TEXT).

    This is NOT ground truth: it marks bright, white, non-snow pixels, which on clear-sky scenes are bright
    surfaces (bare soil, roofs), not clouds.
    """
    r = dn.astype(np.float64) / norm.OPTICAL_SCALE
    b2, b3, b4, b11 = (r[list(order).index(b)] for b in ("B2", "B3", "B4", "B11"))
    vis = (b2 + b3 + b4) / 3.0
    white = (np.abs(b2 - vis) + np.abs(b3 - vis) + np.abs(b4 - vis)) / np.maximum(vis, 1e-6)
    ndsi = (b3 - b11) / np.maximum(b3 + b11, 1e-6)
    return ((vis > threshold) & (white < 0.7) & (ndsi < 0.4)).astype(np.uint8)


def bigearthnet_pseudo_items(root, patches: Optional[Sequence[str]] = None, exclude: Sequence[str] = (),
                             threshold: float = 0.15) -> List[Item]:
    """The real BigEarthNet S2 stacks (``sample_data/s2/*_L2A12.tif``) with rule-based pseudo-labels."""
    import rasterio

    files = sorted(Path(root).glob("s2/*_L2A12.tif"))
    if patches:
        files = [f for f in files if any(p in f.name for p in patches)]
    files = [f for f in files if not any(e in f.name for e in exclude)]
    if not files:
        raise common.DataError(f"no s2/*_L2A12.tif stacks under {root} (patches {patches}, exclude {exclude})")
    items = []
    for f in files:
        with rasterio.open(f) as ds:
            dn = ds.read().astype(np.float32)
        rgb = dn[[S2_L2A_ORDER.index(b) for b in ("B4", "B3", "B2")]]
        items.append((rgb, pseudo_cloud_labels(dn, S2_L2A_ORDER, threshold), f.name.replace("_L2A12.tif", "")))
    return items


# ------------------------------------------------------------------------------------------------ teacher labels
STUDENT_RESOLUTION_M = 30.0       # the grid the teacher labels and the student learns (and runs) on
TEACHER_BANDS = ("B2", "B3", "B4", "B8")   # what the 4-band ukis teachers read; cached in this order
TEACHERS = {"L2A": "ukis_csmask_4b_l2a", "L1C": "ukis_csmask_4b_l1c"}
SHARED_DATA = common.REPO_ROOT.parent / "shared" / "data"
_DATE = re.compile(r"MSIL(?:1C|2A)_(\d{8})T(\d+)")


@dataclass(frozen=True)
class RealPatch:
    """One real Sentinel-2 patch of ``../shared/data`` (where it is and what it is; no pixels)."""

    name: str
    date: str        # sensing date YYYYMMDD: the split key
    product: str     # sensing date and time (+ tile where the name has it): one product
    level: str       # L1C or L2A
    source: str      # folder under shared/data
    path: Path


def find_real_s2(root: Path = SHARED_DATA) -> List[RealPatch]:
    """Every real Sentinel-2 patch under ``root`` except ``cloud-labelled/`` (the evaluation data)."""
    root = Path(root)
    out: List[RealPatch] = []
    for f in sorted((root / "bigearthnet-configilm").glob("*.npz")):
        m = _DATE.search(f.name)
        tile = re.search(r"_T(\d\d[A-Z]{3})_", f.name)
        out.append(RealPatch(f.stem, m.group(1), m.group(1) + "T" + m.group(2) + (f"_{tile.group(1)}" if tile else ""),
                             "L2A", "bigearthnet-configilm", f))
    for d in sorted((root / "bigearthnet-example" / "BigEarthNet-S2-Example").glob("S2*")):
        if d.is_dir():
            m = _DATE.search(d.name)
            out.append(RealPatch(d.name, m.group(1), m.group(1) + "T" + m.group(2), "L2A", "bigearthnet-example", d))
    s2 = root / "sen1floods11-sample" / "Spain_7370579_S2Hand.tif"
    if s2.is_file():  # the README gives the date: 2019-09-18, L1C, all 13 bands
        out.append(RealPatch("sen1floods11_Spain_7370579_S2", "20190918", "20190918_Spain_7370579", "L1C",
                             "sen1floods11-sample", s2))
    if not out:
        raise common.DataError(f"no real Sentinel-2 patches under {root} (bigearthnet-configilm/, "
                                "bigearthnet-example/, sen1floods11-sample/); see its README.md")
    return out


def write_patch_tif(patch: RealPatch, out_path: Path) -> Path:
    """The patch's B2, B3, B4, B8 as a uint16 GeoTIFF of digital numbers at its own 10 m sampling, band
    descriptions set. Patches without georeference get a PLACEHOLDER 10 m grid (tagged so): the plugin needs a
    grid to know the pixel size; no location is claimed."""
    import rasterio
    from rasterio.transform import from_origin

    crs, transform, tags = None, None, {}
    if patch.source == "bigearthnet-configilm":
        with np.load(patch.path, allow_pickle=False) as z:
            dn = np.stack([z[f"S2_B{b[1:].zfill(2)}"] for b in TEACHER_BANDS])
        crs, transform = "EPSG:32632", from_origin(500000, 0, 10.0, 10.0)
        tags = {"PLACEHOLDER_GEOREFERENCE": "yes: the BigEarthNet .npz patch has none; pixels only (10 m)"}
    elif patch.source == "bigearthnet-example":
        bands = []
        for b in TEACHER_BANDS:
            with rasterio.open(patch.path / f"{patch.name}_B{b[1:].zfill(2)}.tif") as src:
                bands.append(src.read(1))
                crs, transform = src.crs, src.transform
        dn = np.stack(bands)
    else:
        with rasterio.open(patch.path) as src:
            dn = src.read([S2_L1C_ORDER.index(b) + 1 for b in TEACHER_BANDS])
            crs, transform = src.crs, src.transform
    with rasterio.open(out_path, "w", driver="GTiff", width=dn.shape[2], height=dn.shape[1], count=len(dn),
                       dtype="uint16", crs=crs, transform=transform) as dst:
        dst.write(dn.astype(np.uint16))
        for i, b in enumerate(TEACHER_BANDS, start=1):
            dst.set_band_description(i, b)
        dst.update_tags(**tags)
    return out_path


def teacher_label(patch: RealPatch, workdir: Path, log=print) -> Tuple[np.ndarray, np.ndarray]:
    """(dn (4, h, w) uint16 on the 30 m grid, teacher classes (h, w) uint8) for one patch, through the plugin.

    Raises ``core.errors.InputError`` where the plugin refuses the patch (its message says why)."""
    import rasterio

    from sar2eo_cloud_plugin.core import cloud, regrid

    tif = write_patch_tif(patch, workdir / f"{patch.name}_10m.tif")
    with rasterio.open(tif) as src:
        scale = STUDENT_RESOLUTION_M / cloud.pixel_size_m(src)
    grid_path, _grid = regrid.network_grid(str(tif), [1, 2, 3, 4], scale, str(workdir))
    out = workdir / f"{patch.name}_classes.tif"
    req = cloud.CloudMaskRequest(grid_path, str(out), model=TEACHERS[patch.level], level=patch.level, offset="none",
                                 band_map=",".join(f"{b}={i}" for i, b in enumerate(TEACHER_BANDS, start=1)),
                                 device="cpu", layer_name=patch.name)
    cloud.cloud_mask(req, log=lambda m: None)
    with rasterio.open(grid_path) as src:
        dn = src.read()
    with rasterio.open(out) as src:
        classes = src.read(1)
    return dn.astype(np.uint16), classes.astype(np.uint8)


def _teacher_ids() -> Dict[str, Dict[str, str]]:
    from sar2eo_cloud_plugin.core import modelfile

    return {level: {"model": name, "sha256": modelfile.read_card(modelfile.BUNDLED_DIR / f"{name}.json")
                    .weights["sha256"]} for level, name in TEACHERS.items()}


def build_teacher_cache(cache_dir: Path, root: Path = SHARED_DATA, log=print) -> Dict[str, Any]:
    """Label every real patch with its teacher once; later calls read ``index.json`` (see the module doc)."""
    import tempfile

    from sar2eo_cloud_plugin.core.errors import InputError

    cache_dir = Path(cache_dir)
    idx_path = cache_dir / "index.json"
    teachers = _teacher_ids()
    patches = find_real_s2(root)
    if idx_path.is_file():
        idx = json.loads(idx_path.read_text(encoding="utf-8"))
        if idx.get("teachers") == teachers and idx.get("resolution_m") == STUDENT_RESOLUTION_M and \
                sorted(p["name"] for p in idx["patches"]) == sorted(p.name for p in patches):
            return idx
        log(f"teacher cache {cache_dir} is stale (other teacher weights or patches): relabelling")
    cache_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    with tempfile.TemporaryDirectory(prefix="cloud_teacher_") as tmp:
        for p in patches:
            entry: Dict[str, Any] = {"name": p.name, "date": p.date, "product": p.product, "level": p.level,
                                     "source": p.source, "teacher": TEACHERS[p.level]}
            try:
                dn, classes = teacher_label(p, Path(tmp), log)
            except InputError as exc:
                entry.update(status="refused", reason=str(exc))
                log(f"teacher: {p.name} refused by the plugin: {exc}")
            else:
                valid = classes != 255
                n = max(int(valid.sum()), 1)
                entry.update(status="ok", reason=None, shape=list(classes.shape),
                             cloud_fraction=round(float((classes == 1).sum()) / n, 4),
                             shadow_fraction=round(float((classes == 2).sum()) / n, 4))
                np.savez_compressed(cache_dir / f"{p.name}.npz", dn=dn, classes=classes)
                log(f"teacher {TEACHERS[p.level]}: {p.name} {classes.shape} cloud {entry['cloud_fraction']:.3f} "
                    f"shadow {entry['shadow_fraction']:.3f}")
            entries.append(entry)
    idx = {"resolution_m": STUDENT_RESOLUTION_M, "teachers": teachers, "bands": list(TEACHER_BANDS),
           "patches": entries}
    common.write_json(idx_path, idx)
    return idx


@dataclass
class TeacherItem:
    """A teacher-labelled patch on the 30 m grid, in memory."""

    rgb_dn: np.ndarray     # (3, h, w) float32 B4, B3, B2 digital numbers
    cloud: np.ndarray      # (h, w) uint8 1 = cloud (teacher class 1), 0 = clear or shadow
    name: str
    product: str
    cloud_fraction: float


def load_teacher_items(cache_dir: Path, idx: Dict[str, Any]) -> List[TeacherItem]:
    order = [TEACHER_BANDS.index(b) for b in ("B4", "B3", "B2")]
    items = []
    for e in idx["patches"]:
        if e["status"] != "ok":
            continue
        with np.load(Path(cache_dir) / f"{e['name']}.npz", allow_pickle=False) as z:
            dn, classes = z["dn"], z["classes"]
        items.append(TeacherItem(dn[order].astype(np.float32), (classes == 1).astype(np.uint8), e["name"],
                                 e["product"], float(e["cloud_fraction"])))
    return items


# ------------------------------------------------------------------------------------------------ transforms
class SyntheticClouds:
    """Clouds and shadows from ``satellite-cloud-generator`` composited onto a real patch, with exact labels.

    Works in reflectance (DN / 10,000). The cloud's top brightness is drawn per sample from ``brightness``
    (reflectance; clouds are 0.3-0.9 in the visible), its opacity field from Perlin noise; cloud label where
    the mean opacity over the bands is >= ``opacity_label``. Generated shadows darken the ground and stay clear.
    Randomness: Python's ``random`` and torch's generator, which the trainer seeds.
    """

    def __init__(self, opacity_label: float = 0.3, brightness: Tuple[float, float] = (0.3, 0.9),
                 clear_threshold: Tuple[float, float] = (0.0, 0.6), locality: Tuple[int, int] = (1, 3)) -> None:
        self.opacity_label = float(opacity_label)
        self.brightness = brightness
        self.clear_threshold = clear_threshold
        self.locality = locality

    def __call__(self, rgb_dn: np.ndarray, base_mask: np.ndarray, rng: np.random.Generator
                 ) -> Tuple[np.ndarray, np.ndarray]:
        import torch
        from satellite_cloud_generator import add_cloud_and_shadow

        refl = torch.from_numpy(np.ascontiguousarray(rgb_dn, dtype=np.float32) / norm.OPTICAL_SCALE)[None]
        mag = torch.full((1, 3, 1, 1), float(rng.uniform(*self.brightness)))
        lo = float(rng.uniform(*self.clear_threshold))
        out, cloud, _shadow = add_cloud_and_shadow(
            refl, max_lvl=(0.6, 1.0), min_lvl=(0.0, 0.05), channel_magnitude=mag, clear_threshold=lo,
            locality_degree=list(self.locality), decay_factor=[1.0, 2.0], return_cloud=True)
        label = (cloud[0].mean(0).numpy() >= self.opacity_label).astype(np.uint8)
        return (out[0].numpy() * norm.OPTICAL_SCALE).astype(np.float32), np.maximum(base_mask, label)


def _crop_or_mosaic(pool: Sequence[TeacherItem], size: int, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """A ``size`` x ``size`` sample: a random crop of a big enough patch, else a 2 x 2 mosaic of random patches
    (the 120 px BigEarthNet patches are 40 px at 30 m) cropped to size."""
    it = pool[int(rng.integers(len(pool)))]
    h, w = it.cloud.shape
    if min(h, w) < size:
        parts = [pool[int(j)] for j in rng.integers(len(pool), size=4)]
        s = min(min(p.cloud.shape) for p in parts)
        top = [np.concatenate([p.rgb_dn[:, :s, :s], q.rgb_dn[:, :s, :s]], axis=2) for p, q in (parts[:2], parts[2:])]
        msk = [np.concatenate([p.cloud[:s, :s], q.cloud[:s, :s]], axis=1) for p, q in (parts[:2], parts[2:])]
        rgb, mask = np.concatenate(top, axis=1), np.concatenate(msk, axis=0)
        if min(mask.shape) < size:   # patches smaller than half a sample: reflect-pad
            pad = size - min(mask.shape)
            rgb = np.pad(rgb, ((0, 0), (0, pad), (0, pad)), mode="reflect")
            mask = np.pad(mask, ((0, pad), (0, pad)), mode="reflect")
    else:
        rgb, mask = it.rgb_dn, it.cloud
    y = int(rng.integers(mask.shape[0] - size + 1))
    x = int(rng.integers(mask.shape[1] - size + 1))
    return rgb[:, y:y + size, x:x + size], mask[y:y + size, x:x + size]


# Added to B4, B3, B2 digital numbers at most by :func:`_photometric`: the order of the path radiance that
# separates top-of-atmosphere (L1C) from surface (L2A) reflectance in the visible, bluest in blue, so that a
# student trained mostly on L2A patches also sees L1C-like haze.
HAZE_DN = np.array([300.0, 450.0, 700.0], np.float32)[:, None, None]


def _photometric(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gain 0.9-1.1, then with probability 0.5 an L1C-like haze of 0-1 x ``HAZE_DN``."""
    out = rgb * np.float32(rng.uniform(0.9, 1.1))
    if rng.random() < 0.5:
        out = out + HAZE_DN * np.float32(rng.random())
    return out


def _flip_rot(rgb: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    k = int(rng.integers(4))
    rgb, mask = np.rot90(rgb, k, axes=(1, 2)), np.rot90(mask, k)
    if rng.random() < 0.5:
        rgb, mask = rgb[:, :, ::-1], mask[:, ::-1]
    return np.ascontiguousarray(rgb), np.ascontiguousarray(mask)


class TeacherCloudSamples:
    """Training samples: random ``crop`` x ``crop`` crops or mosaics of teacher-labelled real patches, a
    ``synthetic_share`` of them with synthetic clouds composited onto clear patches (teacher cloud fraction <=
    ``clear_max``), gain and L1C-like haze (:func:`_photometric`), flips and 90-degree turns, then the plugin's
    ``cloud_preprocess``.

    Returns {"image": float32 (3, crop, crop), "mask": float32 (1, crop, crop), "name"} like :class:`CloudArrays`.
    Each call draws from numpy's generator seeded by torch's, so the trainer's seed fixes the sequence.
    """

    def __init__(self, items: Sequence[TeacherItem], crop: int = 64, samples_per_epoch: int = 256,
                 synthetic_share: float = 0.6, clear_max: float = 0.01,
                 synthetic: Optional[SyntheticClouds] = None) -> None:
        if not items:
            raise common.DataError("no teacher-labelled training patches")
        self.items = list(items)
        self.clear = [it for it in self.items if it.cloud_fraction <= clear_max]
        if synthetic_share > 0 and not self.clear:
            raise common.DataError(f"no clear patch (teacher cloud fraction <= {clear_max}) to composite clouds onto")
        self.crop, self.samples_per_epoch, self.synthetic_share = int(crop), int(samples_per_epoch), synthetic_share
        self.synthetic = synthetic or SyntheticClouds()

    def __len__(self) -> int:
        return self.samples_per_epoch

    def sample(self, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray, str]:
        synthetic = rng.random() < self.synthetic_share
        rgb, mask = _crop_or_mosaic(self.clear if synthetic else self.items, self.crop, rng)
        if synthetic:
            rgb, mask = self.synthetic(rgb, mask, rng)
        rgb, mask = _flip_rot(_photometric(rgb, rng), mask, rng)
        return rgb, mask, "synthetic" if synthetic else "teacher"

    def __getitem__(self, i: int) -> Dict[str, object]:
        import torch

        rng = np.random.default_rng(int(torch.randint(0, 2 ** 31 - 1, (1,))))
        rgb, mask, kind = self.sample(rng)
        return {"image": torch.from_numpy(np.ascontiguousarray(norm.cloud_preprocess(rgb), dtype=np.float32)),
                "mask": torch.from_numpy(mask[None].astype(np.float32)), "name": kind}


def split_by_date(items: Sequence[TeacherItem], val_dates: Sequence[str]) -> Tuple[List[TeacherItem],
                                                                                   List[TeacherItem]]:
    """(training, validation): every patch sensed on a date (YYYYMMDD) in ``val_dates`` is validation."""
    return common.split_held_out(items, val_dates, lambda it: it.product[:8], "data.val_dates")


def synthetic_val_items(val: Sequence[TeacherItem], n: int, crop: int, seed: int, clear_max: float,
                        synthetic: SyntheticClouds) -> List[Item]:
    """``n`` fixed synthetic samples on the validation products' clear patches (seeded: the same every epoch)."""
    import random

    import torch

    clear = [it for it in val if it.cloud_fraction <= clear_max]
    if not clear or n <= 0:
        return []
    state = (random.getstate(), torch.get_rng_state())
    random.seed(seed)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    out = []
    try:
        for k in range(n):
            rgb, mask = _crop_or_mosaic(clear, crop, rng)
            rgb, mask = synthetic(rgb, mask, rng)
            out.append((rgb, mask, f"synthetic_val_{k}"))
    finally:
        random.setstate(state[0])
        torch.set_rng_state(state[1])
    return out


def describe_split(train: Sequence[TeacherItem], val: Sequence[TeacherItem]) -> Dict[str, Any]:
    def products(items):
        out: Dict[str, int] = {}
        for it in items:
            out[it.product] = out.get(it.product, 0) + 1
        return dict(sorted(out.items()))

    return {"train_patches": len(train), "val_patches": len(val), "train_products": products(train),
            "val_products": products(val)}


# ------------------------------------------------------------------------------------------------ dataset
def build_transform(train: bool, resize: Optional[int], crop: Optional[int], jitter: bool = True):
    """Albumentations pipeline on float32 HWC images in [0, 1] (DN / 4,000, clipped)."""
    import albumentations as A

    t = []
    if resize:
        t.append(A.Resize(resize, resize))
    if train:
        if crop:
            t.append(A.RandomCrop(crop, crop))
        t += [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5), A.RandomRotate90(p=0.5)]
        if jitter:
            t.append(A.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1, hue=0.02, p=0.5))
    return A.Compose(t)


class CloudArrays:
    """Augmented, normalised cloud-mask samples from in-memory items.

    ``samples_per_epoch`` lets a handful of big images give many random crops per epoch.
    Returns {"image": float32 (3, h, w) = cloud_preprocess(rgb DN), "mask": float32 (1, h, w), "name"}.
    """

    def __init__(self, items: Sequence[Item], train: bool, resize: Optional[int] = None, crop: Optional[int] = None,
                 samples_per_epoch: Optional[int] = None, jitter: bool = True, seed: int = 0) -> None:
        self.items = list(items)
        self.train = train
        self.transform = build_transform(train, resize, crop, jitter)
        self.samples_per_epoch = samples_per_epoch or len(self.items)
        self.seed = seed

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __getitem__(self, i: int) -> Dict[str, object]:
        import torch

        rgb, mask, name = self.items[i % len(self.items)]
        img = (np.clip(rgb.astype(np.float32), 0, norm.CLOUD_CLIP_DN) / norm.CLOUD_CLIP_DN).transpose(1, 2, 0)
        out = self.transform(image=np.ascontiguousarray(img), mask=np.ascontiguousarray(mask))
        img, m = out["image"], out["mask"]
        x = norm.cloud_preprocess(np.clip(img, 0, 1).transpose(2, 0, 1) * norm.CLOUD_CLIP_DN)
        return {"image": torch.from_numpy(np.ascontiguousarray(x)),
                "mask": torch.from_numpy(np.ascontiguousarray(m[None].astype(np.float32))), "name": name}


def split_items(items: Sequence[Item], val_fraction: float, seed: int) -> Tuple[List[Item], List[Item]]:
    """scikit-learn train/val split (by sample)."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(items))
    tr, va = train_test_split(idx, test_size=val_fraction, random_state=seed, shuffle=True)
    return [items[i] for i in sorted(tr)], [items[i] for i in sorted(va)]


def build_cloud_items(data_cfg: Dict, seed: int, log=print) -> Tuple[List[Item], List[Item], str]:
    """(train items, val items, description of the data) from a config's ``data`` section."""
    kind = data_cfg.get("kind", "cloudsen12")
    if kind == "cloudsen12":
        cache = common.resolve_path(data_cfg["cache_dir"])
        n = int(data_cfg.get("n_samples", 3000))
        if len(cache_status(cache)) < n and data_cfg.get("auto_localise", True):
            localise_cloudsen12(cache, n, data_cfg.get("source", CLOUDSEN12_SOURCE), seed, log)
        items = load_cloudsen12_items(cache, n)
        tr, va = split_items(items, float(data_cfg.get("val_fraction", 0.2)), seed)
        return tr, va, (f"CloudSEN12 L1C ({data_cfg.get('source', CLOUDSEN12_SOURCE)}), {len(items)} samples cached "
                        f"in {data_cfg['cache_dir']}, {len(tr)} train / {len(va)} val "
                        f"(scikit-learn split, seed {seed})")
    if kind == "bigearthnet_pseudo":
        root = common.resolve_path(data_cfg["root"])
        held = common.names(data_cfg.get("holdout"), "data.holdout")
        t = float(data_cfg.get("rule_threshold", 0.15))
        tr = bigearthnet_pseudo_items(root, exclude=held, threshold=t)
        va = bigearthnet_pseudo_items(root, patches=held, threshold=t) if held else []
        frac = {name: float(m.mean()) for _, m, name in tr + va}
        log("pseudo-label cloud fraction per patch: " + ", ".join(f"{k}: {v:.3f}" for k, v in frac.items()))
        return tr, va, (f"real BigEarthNet S2 L2A patches in {data_cfg['root']} with {RULE_TEXT.format(t=t)}; "
                        f"train {[n for _, _, n in tr]}, held out {held}")
    raise common.ConfigError(f"unknown data.kind '{kind}' (cloudsen12 or bigearthnet_pseudo; teacher data is read "
                             "by cloudmask.build_data)")

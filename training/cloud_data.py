"""Cloud-mask data: CloudSEN12 through tacoreader with a local .npy cache, and rule-labelled BigEarthNet patches.

Both end up as the same items, ``(rgb_dn (3, H, W) B4, B3, B2 digital numbers, mask (H, W) uint8 0/1, name)``,
fed through :class:`CloudArrays`, which augments and then applies ``core.normalisation.cloud_preprocess`` — the
function the plugin runs at inference (clip at 4,000 DN, scale to 0..255, ImageNet mean/std).

CloudSEN12 cache layout (``data.cache_dir``)::

    <cache_dir>/index.json           {"source", "bands": ["B4","B3","B2"], "label_mapping", "samples": [ids]}
    <cache_dir>/images/<id>.npy      uint16 (3, H, W)  B4, B3, B2 Level-1C digital numbers (reflectance x 10,000)
    <cache_dir>/masks/<id>.npy       uint8  (H, W)     1 = thick (1) or thin (2) cloud, 0 = clear (0) or shadow (3)

``localise_cloudsen12`` fills it once from ``tacofoundation:cloudsen12-l1c``; later runs find it and reuse it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from sar2eo_cloud_plugin.core import normalisation as norm
from sar2eo_cloud_plugin.core.bands import S2_L1C_ORDER, S2_L2A_ORDER

from . import common

Item = Tuple[np.ndarray, np.ndarray, str]

CLOUDSEN12_SOURCE = "tacofoundation:cloudsen12-l1c"
CLOUDSEN12_LABELS = {"0": "clear -> 0", "1": "thick cloud -> 1", "2": "thin cloud -> 1", "3": "cloud shadow -> 0"}


class CloudDataUnavailable(SystemExit):
    """Raised (as a clean exit with a message) when no CloudSEN12 data can be found or fetched."""


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
        raise FileNotFoundError(f"no s2/*_L2A12.tif stacks under {root} (patches {patches}, exclude {exclude})")
    items = []
    for f in files:
        with rasterio.open(f) as ds:
            dn = ds.read().astype(np.float32)
        rgb = dn[[S2_L2A_ORDER.index(b) for b in ("B4", "B3", "B2")]]
        items.append((rgb, pseudo_cloud_labels(dn, S2_L2A_ORDER, threshold), f.name.replace("_L2A12.tif", "")))
    return items


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
    raise ValueError(f"unknown data.kind '{kind}' (cloudsen12 or bigearthnet_pseudo)")

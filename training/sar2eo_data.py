"""Paired Sentinel-1 / Sentinel-2 datasets for the SAR -> EO CycleGAN.

Both datasets return the same items, so the trainer does not care where pairs come from::

    {"A": float32 tensor (2, h, w)  VV, VH in dB normalised to [-1, 1] by core.normalisation.normalise_sar_db,
     "B": float32 tensor (C, h, w)  the band set's reflectance normalised to [-1, 1] by normalise_optical,
     "name": pair id}

and both offer ``full_pair(i) -> (sar_norm (2,H,W), reflectance (C,H,W))`` for evaluation on whole patches.
Normalisation is the plugin's own (one definition in ``sar2eo_cloud_plugin.core.normalisation``), so a model
trained here sees at inference exactly what it saw in training.
"""
from __future__ import annotations

import json
import re
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from sar2eo_cloud_plugin.core import normalisation as norm
from sar2eo_cloud_plugin.core.bands import S2_L1C_ORDER, S2_L2A_ORDER, band_set

from . import common


def sar_to_network(db: np.ndarray) -> np.ndarray:
    """(2, H, W) VV, VH in dB -> [-1, 1] (NaN -> bottom of the range)."""
    return norm.normalise_sar_db(db.astype(np.float32), ("VV", "VH"))


def dn_to_reflectance(dn: np.ndarray) -> np.ndarray:
    """Sentinel-2 digital numbers (L1C TOA or L2A BOA, both x 10,000) -> reflectance, clipped to OPTICAL_RANGE."""
    lo, hi = norm.OPTICAL_RANGE
    return np.clip(dn.astype(np.float32) / norm.OPTICAL_SCALE, lo, hi)


def random_crop_flip(arrays: Sequence[np.ndarray], size: Optional[int], rng: np.random.Generator,
                     flip: bool = True) -> List[np.ndarray]:
    """Same random crop (and flips) for every (C, H, W) array in ``arrays``."""
    h, w = arrays[0].shape[-2:]
    if size and (size < h or size < w):
        y = int(rng.integers(0, h - size + 1)) if size < h else 0
        x = int(rng.integers(0, w - size + 1)) if size < w else 0
        arrays = [a[..., y:y + size, x:x + size] for a in arrays]
    if flip:
        if rng.random() < 0.5:
            arrays = [a[..., :, ::-1] for a in arrays]
        if rng.random() < 0.5:
            arrays = [a[..., ::-1, :] for a in arrays]
    return [np.ascontiguousarray(a) for a in arrays]


class _PairBase:
    """Common item logic; subclasses provide ``_read(i) -> (sar_db (2,H,W), dn (13 or 12, H, W))``."""

    s2_order: Tuple[str, ...] = S2_L1C_ORDER

    def __init__(self, band_set_key: str, crop_size: Optional[int], augment: bool, seed: int) -> None:
        self.band_set = band_set(band_set_key)
        self.crop_size = crop_size
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.bad: Dict[str, str] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def band_indices(self) -> List[int]:
        return [self.s2_order.index(b) for b in self.band_set.bands]

    def full_pair(self, i: int) -> Tuple[np.ndarray, np.ndarray]:
        db, dn = self._read(i)
        return sar_to_network(db), dn_to_reflectance(dn[self.band_indices()])

    def _item(self, i: int, pair_index: int, name: str) -> Dict[str, object]:
        import torch

        rng = np.random.default_rng([self.seed, self.epoch, i])
        db, dn = self._read(pair_index)
        sar = sar_to_network(db)
        opt = norm.normalise_optical(dn_to_reflectance(dn[self.band_indices()]))
        sar, opt = random_crop_flip([sar, opt], self.crop_size, rng, flip=self.augment)
        return {"A": torch.from_numpy(sar), "B": torch.from_numpy(opt), "name": name}


# ------------------------------------------------------------------------------------------------ SEN12MS
_SEN12MS_RE = re.compile(r"^(ROIs\d{4}_[a-z]+)_(s1|s2)_(\d+)_p(\d+)\.tif$")


@dataclass
class ScanReport:
    pairs: int = 0
    unpaired_s1: List[str] = field(default_factory=list)
    unpaired_s2: List[str] = field(default_factory=list)
    unreadable: Dict[str, str] = field(default_factory=dict)
    extracted: List[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{self.pairs} S1/S2 pairs"]
        if self.unpaired_s1:
            parts.append(f"{len(self.unpaired_s1)} S1 files without an S2 twin (e.g. {Path(self.unpaired_s1[0]).name})")
        if self.unpaired_s2:
            parts.append(f"{len(self.unpaired_s2)} S2 files without an S1 twin (e.g. {Path(self.unpaired_s2[0]).name})")
        if self.unreadable:
            k = next(iter(self.unreadable))
            parts.append(f"{len(self.unreadable)} unreadable files (e.g. {Path(k).name}: {self.unreadable[k]})")
        return "; ".join(parts)


def extract_archives(root: Path, extract_to: Optional[Path] = None, log=print) -> List[Path]:
    """Extract every ``*.tar.gz`` / ``*.tgz`` / ``*.tar`` under ``root`` once.

    Each archive goes to ``<extract_to>/<archive stem>/``; a ``.extracted`` marker written after success makes
    later runs skip it (a half-extracted folder without the marker is extracted again). Members that would
    land outside the target folder, links and devices are refused ('data' filter).
    """
    extract_to = Path(extract_to or root)
    done = []
    archives = sorted(p for pat in ("*.tar.gz", "*.tgz", "*.tar") for p in Path(root).glob(pat))
    for arc in archives:
        stem = arc.name
        for suffix in (".tar.gz", ".tgz", ".tar"):
            if stem.endswith(suffix):
                stem = stem[: -len(suffix)]
                break
        target = extract_to / stem
        marker = target / ".extracted"
        if marker.is_file():
            done.append(target)
            continue
        log(f"extracting {arc} -> {target} (once)")
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(arc) as tf:
            try:
                tf.extractall(target, filter="data")
            except TypeError:  # Python without extraction filters
                for m in tf.getmembers():
                    dest = (target / m.name).resolve()
                    if not str(dest).startswith(str(target.resolve())) or not (m.isfile() or m.isdir()):
                        raise RuntimeError(f"refusing unsafe archive member {m.name} in {arc}") from None
                tf.extractall(target)
        marker.write_text(arc.name + "\n", encoding="utf-8")
        done.append(target)
    return done


class SEN12MSPairs(_PairBase):
    """SEN12MS (Schmitt et al., 2019) S1/S2 pairs, e.g. the winter season used by the seed.

    On-disk layout (as distributed, one archive per season and sensor)::

        <root>/ROIs2017_winter_s1.tar.gz          (optional; extracted once to <extract_to>/ROIs2017_winter_s1/)
        <root>/ROIs2017_winter_s2.tar.gz
        <root or extract_to>/ROIs2017_winter_s1/ROIs2017_winter/s1_<n>/ROIs2017_winter_s1_<n>_p<k>.tif
        <root or extract_to>/ROIs2017_winter_s2/ROIs2017_winter/s2_<n>/ROIs2017_winter_s2_<n>_p<k>.tif

    (an already extracted ``ROIs2017_winter/s1_<n>/...`` tree anywhere under ``root`` works too: files are
    found recursively by name.) ``<n>`` is the scene, ``<k>`` the 256 x 256 patch. S1 files: 2 bands float32,
    VV and VH sigma0 in dB. S2 files: 13 bands uint16 Level-1C TOA digital numbers in the order
    B1, B2, B3, B4, B5, B6, B7, B8, B8A, B9, B10, B11, B12 (``core.bands.S2_L1C_ORDER``).

    A pair is ``(season, scene, patch)`` present for both sensors. Files without a twin are reported, not
    used; files rasterio cannot read are recorded in ``report.unreadable`` (checked up front with
    ``verify=True``, or when first read, in which case another pair is served instead).
    Splits are by scene so that a held-out scene shares no ground with training.
    """

    s2_order = S2_L1C_ORDER

    def __init__(self, root, band_set_key: str = "rgb", crop_size: Optional[int] = 256, augment: bool = True,
                 extract_to=None, fraction: float = 1.0, split: str = "train", val_fraction: float = 0.1,
                 seed: int = 0, verify: bool = False, log=print) -> None:
        super().__init__(band_set_key, crop_size, augment, seed)
        self.root = Path(root)
        if not self.root.exists():
            raise FileNotFoundError(
                f"SEN12MS folder {self.root} does not exist. Download ROIs2017_winter_s1.tar.gz and "
                "ROIs2017_winter_s2.tar.gz (https://mediatum.ub.tum.de/1474000) into it, or extract them there.")
        self.report = ScanReport()
        self.report.extracted = [str(p) for p in extract_archives(self.root, extract_to, log)]
        search_roots = {self.root} | ({Path(extract_to)} if extract_to else set())
        files: Dict[Tuple[str, str, int, int], Path] = {}
        for sr in search_roots:
            for p in sr.rglob("*.tif"):
                m = _SEN12MS_RE.match(p.name)
                if m:
                    files[(m.group(2), m.group(1), int(m.group(3)), int(m.group(4)))] = p
        s1 = {k[1:]: v for k, v in files.items() if k[0] == "s1"}
        s2 = {k[1:]: v for k, v in files.items() if k[0] == "s2"}
        keys = sorted(set(s1) & set(s2))
        self.report.unpaired_s1 = sorted(str(s1[k]) for k in set(s1) - set(s2))
        self.report.unpaired_s2 = sorted(str(s2[k]) for k in set(s2) - set(s1))
        # split by scene, deterministic
        scenes = sorted({(k[0], k[1]) for k in keys})
        order = np.random.default_rng(seed).permutation(len(scenes))
        n_val = int(round(len(scenes) * val_fraction)) if val_fraction > 0 else 0
        if val_fraction > 0 and len(scenes) > 1:
            n_val = max(1, min(n_val, len(scenes) - 1))
        val_scenes = {scenes[i] for i in order[:n_val]}
        if split == "train":
            keys = [k for k in keys if (k[0], k[1]) not in val_scenes]
        elif split in ("val", "test"):
            keys = [k for k in keys if (k[0], k[1]) in val_scenes]
        elif split != "all":
            raise ValueError(f"unknown split {split}")
        if fraction < 1.0 and keys:
            pick = np.random.default_rng(seed + 1).permutation(len(keys))[: max(1, int(len(keys) * fraction))]
            keys = [keys[i] for i in sorted(pick)]
        self.pairs = [(s1[k], s2[k], f"{k[0]}_{k[1]}_p{k[2]}") for k in keys]
        if verify:
            import rasterio

            good = []
            for a, b, name in self.pairs:
                try:
                    for p, bands in ((a, 2), (b, 13)):
                        with rasterio.open(p) as ds:
                            if ds.count != bands:
                                raise ValueError(f"{ds.count} bands, expected {bands}")
                    good.append((a, b, name))
                except Exception as exc:  # noqa: BLE001 - reported
                    self.report.unreadable[str(p)] = str(exc).splitlines()[0]
            self.pairs = good
        self.report.pairs = len(self.pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    def _read(self, i: int) -> Tuple[np.ndarray, np.ndarray]:
        import rasterio

        s1p, s2p, _ = self.pairs[i]
        with rasterio.open(s1p) as ds:
            db = ds.read([1, 2]).astype(np.float32)
        with rasterio.open(s2p) as ds:
            dn = ds.read().astype(np.float32)
        if dn.shape[0] != 13:
            raise ValueError(f"{s2p.name}: {dn.shape[0]} bands, expected 13 (L1C)")
        return db, dn

    def __getitem__(self, i: int):
        for attempt in range(len(self.pairs)):
            j = (i + attempt) % len(self.pairs)
            try:
                return self._item(i, j, self.pairs[j][2])
            except Exception as exc:  # noqa: BLE001 - bad file: record and serve the next pair
                name = self.pairs[j][2]
                msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                if name not in self.bad:  # printed too, because DataLoader workers' records stay in the worker
                    print(f"warning: unreadable SEN12MS pair {name} skipped: {msg}", file=sys.stderr, flush=True)
                self.bad[name] = msg
        raise RuntimeError("no readable SEN12MS pair left")

    def name(self, i: int) -> str:
        return self.pairs[i][2]


# ------------------------------------------------------------------------------------------------ BigEarthNet
def to_grid(arr: np.ndarray, size: int) -> np.ndarray:
    """A 20 m / 60 m band (h, w) brought onto the ``size`` x ``size`` 10 m grid by nearest-neighbour repetition.

    Repetition, not interpolation, so that no reflectance value is invented; it is the same rule for the
    GeoTIFF and the ``.npz`` readers, so both give identical stacks for the same patch."""
    if arr.shape[-1] == size and arr.shape[-2] == size:
        return arr
    rep = size // arr.shape[-1]
    if rep * arr.shape[-1] != size or arr.shape[-2] * rep != size:
        raise ValueError(f"band of shape {arr.shape} does not divide the {size} x {size} grid")
    return np.repeat(np.repeat(arr, rep, -2), rep, -1)


_PRODUCT_RE = re.compile(r"(S2[AB])_MSI(L1C|L2A)_(\d{8})T(\d{5,6})")


def product_of(name: str) -> str:
    """The Sentinel-2 product a patch comes from: ``<mission>_<date>T<hhmm>`` of its datatake.

    BigEarthNet v1 names carry no tile, so the datatake (mission, date, start time) stands for the product. The
    start time is cut to the minute because granules of one pass are stamped seconds apart (``T94030`` and
    ``T94031`` on 2018-05-25 are neighbours). Patches of one product are near-duplicates (same day, same
    atmosphere, often adjacent), so a split must never put one product on both sides."""
    m = _PRODUCT_RE.search(name)
    if not m:
        raise ValueError(f"'{name}' is not a Sentinel-2 patch name (S2A/S2B_MSIL2A_<date>T<time>...)")
    hhmmss = m.group(4).zfill(6)
    return f"{m.group(1)}_{m.group(3)}T{hhmmss[:4]}"


@dataclass(frozen=True)
class PairSource:
    """One real S1/S2 pair on disk: ``name`` is the Sentinel-2 patch name, ``kind`` 'npz' or 'geotiff'."""

    name: str
    kind: str
    s1: Path
    s2: Path

    @property
    def product(self) -> str:
        return product_of(self.name)


def discover_pairs(roots: Sequence[Path]) -> List[PairSource]:
    """Every S1/S2 pair under ``roots`` (any mix of the layouts :class:`BigEarthNetPairs` documents)."""
    out: Dict[str, PairSource] = {}
    for root in roots:
        root = Path(root)
        if not root.exists():
            raise FileNotFoundError(f"data folder {root} does not exist")
        for npz in sorted(root.glob("*.npz")):
            name = npz.stem.split("_", 1)[1] if npz.stem.startswith("benv") else npz.stem
            out[name] = PairSource(name, "npz", npz, npz)
        pj = root / "pairs.json"
        if pj.is_file():
            for s1, s2 in json.loads(pj.read_text(encoding="utf-8")).items():
                a, b = root / "s1" / f"{s1}_VVVH.tif", root / "s2" / f"{s2}_L2A12.tif"
                if a.is_file() and b.is_file():
                    out[s2] = PairSource(s2, "stack", a, b)
        s1_root = next(iter(sorted(root.glob("*S1*"))), None)
        s2_root = next(iter(sorted(root.glob("*S2*"))), None)
        if s1_root is not None and s2_root is not None and s1_root.is_dir() and s2_root.is_dir():
            for meta in sorted(s1_root.glob("*/*_labels_metadata.json")):
                info = json.loads(meta.read_text(encoding="utf-8"))
                s2name = info.get("corresponding_s2_patch")
                if s2name and (s2_root / s2name).is_dir():
                    out[s2name] = PairSource(s2name, "geotiff", meta.parent, s2_root / s2name)
    return [out[k] for k in sorted(out)]


def read_pair(src: PairSource) -> Tuple[np.ndarray, np.ndarray]:
    """(VV/VH dB (2, 120, 120) float32, 12-band L2A DN (12, 120, 120) float32 in ``S2_L2A_ORDER``)."""
    if src.kind == "npz":
        with np.load(src.s1, allow_pickle=False) as z:
            db = np.stack([z["S1_VV"], z["S1_VH"]]).astype(np.float32)
            size = db.shape[-1]
            dn = np.stack([to_grid(z["S2_B" + b[1:].zfill(2) if b != "B8A" else "S2_B8A"].astype(np.float32), size)
                           for b in S2_L2A_ORDER])
        return db, dn
    import rasterio

    if src.kind == "stack":
        with rasterio.open(src.s1) as ds:
            db = ds.read([1, 2]).astype(np.float32)
        with rasterio.open(src.s2) as ds:
            dn = ds.read().astype(np.float32)
        return db, dn
    a, b = src.s1, src.s2
    bands = []
    for pol in ("VV", "VH"):
        with rasterio.open(a / f"{a.name}_{pol}.tif") as ds:
            bands.append(ds.read(1).astype(np.float32))
    db = np.stack(bands)
    s2 = []
    for band in S2_L2A_ORDER:
        fname = "B" + band[1:].zfill(2) if band != "B8A" else "B8A"
        with rasterio.open(b / f"{b.name}_{fname}.tif") as ds:
            s2.append(to_grid(ds.read(1).astype(np.float32), db.shape[-1]))
    return db, np.stack(s2)


def split_by_product(pairs: Sequence[PairSource], val_products: Sequence[str]) -> Tuple[List[PairSource],
                                                                                         List[PairSource]]:
    """(training pairs, validation pairs): every pair of a product in ``val_products`` is validation."""
    return common.split_held_out(pairs, val_products, lambda p: p.product, "data.val_products")


def propose_val_products(pairs: Sequence[PairSource], n_pairs: int, seed: int = 0) -> List[str]:
    """A seeded choice of whole products holding about ``n_pairs`` pairs, never the largest product (it is most
    of the training data). Used once to write ``data.val_products`` into the configs, where it stays fixed."""
    counts: Dict[str, int] = {}
    for p in pairs:
        counts[p.product] = counts.get(p.product, 0) + 1
    biggest = max(counts, key=lambda k: counts[k])
    order = [sorted(counts)[i] for i in np.random.default_rng(seed).permutation(len(counts))]
    chosen, total = [], 0
    for prod in order:
        if prod != biggest and total + counts[prod] <= n_pairs:
            chosen.append(prod)
            total += counts[prod]
    return sorted(chosen)


class BigEarthNetPairs(_PairBase):
    """Real BigEarthNet S1/S2 pairs (Sumbul et al., 2021), 120 x 120 px at 10 m, S2 L2A surface reflectance.

    On-disk layouts read (any mix, given as ``data.roots``)::

        ../shared/data/bigearthnet-configilm/benv1_<S2 patch>.npz, benv2_<S2 patch>.npz   (46 pairs)
            keys S1_VV, S1_VH (float32 dB, 120 x 120), S2_B01..S2_B12, S2_B8A (uint16 L2A DN at native
            sampling: B02/03/04/08 120 x 120, B05-07/8A/11/12 60 x 60, B01/09 20 x 20); no georeference
        ../shared/data/bigearthnet-example/BigEarthNet-S1-Example/<S1 patch>/<S1 patch>_VV.tif, _VH.tif
        ../shared/data/bigearthnet-example/BigEarthNet-S2-Example/<S2 patch>/<S2 patch>_B01.tif ... _B12.tif
            (5 pairs; S1 metadata ``<S1 patch>_labels_metadata.json`` names ``corresponding_s2_patch``)
        sample_data/s1/<S1 patch>_VVVH.tif, s2/<S2 patch>_L2A12.tif, pairs.json   (the same 5, stacked)

    20 m and 60 m bands are brought to the 10 m grid by :func:`to_grid` (repetition). Pairs are keyed by the
    Sentinel-2 patch name, so a patch present in two layouts is read once.

    Split: by Sentinel-2 product (:func:`product_of`), never by patch. The bundled configs hold
    ``data.val_products`` (proposed once by :func:`propose_val_products` with seed 1 and 11 pairs; seed 0 gave
    11 one-pair products, leaving training only 11 products, seed 1 leaves it 15):

    * validation, 7 products / 11 pairs: S2A_20170617T1133 (36_85, 4_55 GeoTIFF + 48_5), S2A_20180413T0950,
      S2B_20170924T0930 (69_24 GeoTIFF), S2B_20170930T0950, S2B_20180417T1020 (2 pairs), S2B_20180521T1000,
      S2B_20180525T0940 (2 pairs);
    * training, the other 15 products / 40 pairs, 23 of them from S2A_20170613T1010 (tile 33UUP, incl. the
      cloud/shadow patches 38_58, 38_87, 70_40), and the three winter products
      (20171121, 20180225, 20180204).

    (Recomputed and checked by ``tests/training/test_data.py``.) With ``crop_size`` smaller than 120,
    ``samples_per_epoch`` random crops (and flips) are drawn per epoch. The optical side is L2A surface
    reflectance, not the L1C top-of-atmosphere reflectance of SEN12MS: cards of models trained on it say so.
    """

    s2_order = S2_L2A_ORDER

    def __init__(self, pairs: Sequence[PairSource], band_set_key: str = "rgb", crop_size: Optional[int] = 96,
                 augment: bool = True, samples_per_epoch: Optional[int] = None, seed: int = 0) -> None:
        super().__init__(band_set_key, crop_size, augment, seed)
        if not pairs:
            raise FileNotFoundError("no S1/S2 pairs selected")
        self.sources = list(pairs)
        self.names = [p.name for p in self.sources]
        self.samples_per_epoch = samples_per_epoch or len(self.names)
        self._cache = [read_pair(p) for p in self.sources]

    def __len__(self) -> int:
        return self.samples_per_epoch

    def _read(self, i: int) -> Tuple[np.ndarray, np.ndarray]:
        return self._cache[i]

    def __getitem__(self, i: int):
        j = i % len(self.names)
        return self._item(i, j, self.names[j])

    def name(self, i: int) -> str:
        return self.names[i]

    def product(self, i: int) -> str:
        return self.sources[i].product

    @property
    def n_pairs(self) -> int:
        return len(self.names)


# ------------------------------------------------------------------------------------------------ Sen1Floods11
SEN1FLOODS11_NOTE = (
    "Sen1Floods11 Spain_7370579 (512 x 512, EPSG:4326): its Sentinel-2 side is L1C top-of-atmosphere reflectance, "
    "not the L2A surface reflectance the models were trained on. It is scored apart, never averaged with the L2A "
    "validation pairs: B10 (cirrus, absent from L2A) is dropped to get the L2A band order, and the L1C DN / 10,000 "
    "is compared as is, so the scores also hold the atmosphere (TOA is brighter over dark land and water); read "
    "them as an out-of-distribution check, model against baseline, not as an absolute quality.")


def sen1floods11_pair(root: Path) -> Tuple[Path, np.ndarray]:
    """(path of the S1 GeoTIFF, its L1C S2 as 12-band DN in ``S2_L2A_ORDER``, B10 dropped).

    Layout: ``<root>/Spain_7370579_S1Hand.tif`` (VV, VH dB float32) and ``<root>/Spain_7370579_S2Hand.tif``
    (13 bands B1..B12 in L1C order with B10, DN = TOA reflectance x 10,000), both 512 x 512 in EPSG:4326."""
    import rasterio

    root = Path(root)
    s1 = root / "Spain_7370579_S1Hand.tif"
    with rasterio.open(root / "Spain_7370579_S2Hand.tif") as ds:
        dn = ds.read().astype(np.float32)
    if dn.shape[0] != len(S2_L1C_ORDER):
        raise ValueError(f"{root}: S2 has {dn.shape[0]} bands, expected 13 (L1C)")
    keep = [S2_L1C_ORDER.index(b) for b in S2_L2A_ORDER]
    return s1, dn[keep]


def build_sar2eo_dataset(data_cfg: Dict, band_set_key: str, split: str, seed: int, log=print):
    """Dataset from the ``data`` section of a config (``kind: sen12ms`` or ``kind: bigearthnet``)."""
    kind = data_cfg.get("kind", "sen12ms")
    root = common.resolve_path(data_cfg["root"])
    train = split == "train"
    if kind == "sen12ms":
        return SEN12MSPairs(root, band_set_key, crop_size=data_cfg.get("crop_size", 256) if train else None,
                            augment=train and data_cfg.get("flip", True),
                            extract_to=common.resolve_path(data_cfg.get("extract_to")),
                            fraction=data_cfg.get("fraction", 1.0) if train else 1.0,
                            split=split, val_fraction=data_cfg.get("val_fraction", 0.1), seed=seed,
                            verify=data_cfg.get("verify", False), log=log)
    if kind == "bigearthnet":
        roots = [common.resolve_path(r) for r in (data_cfg.get("roots") or [data_cfg["root"]])]
        train_pairs, val_pairs = split_by_product(discover_pairs(roots),
                                                  common.names(data_cfg.get("val_products"), "data.val_products"))
        if train:
            return BigEarthNetPairs(train_pairs, band_set_key, crop_size=data_cfg.get("crop_size", 96),
                                    augment=data_cfg.get("flip", True),
                                    samples_per_epoch=data_cfg.get("samples_per_epoch"), seed=seed)
        return BigEarthNetPairs(val_pairs, band_set_key, crop_size=None, augment=False, seed=seed)
    raise ValueError(f"unknown data.kind '{kind}' (sen12ms or bigearthnet)")

"""Value conventions between rasters and networks, shared by inference and training.

SAR side (network input): Sentinel-1 backscatter in dB, clipped per polarisation
to a fixed range and scaled linearly to [-1, 1]. Linear power is converted with
10*log10 first; zero or negative power has no dB value and becomes nodata.

Optical side (network output): Sentinel-2 surface reflectance (0..1, i.e. L2A
digital numbers / 10,000) clipped to ``OPTICAL_RANGE`` and scaled to [-1, 1] to
match the generator's tanh. Written back as uint16 reflectance x 10,000 with 0 as
nodata, the way Sentinel-2 L2A products store it.

Cloud mask input: RGB digital numbers clipped at 4,000, scaled to 0..255, then
the encoder's (ImageNet) mean/std normalisation, exactly as in training.

Every function is numpy in, numpy out, so the same code runs in the plugin and
in the training package's data pipeline.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from .errors import InputError

# dB clip ranges per polarisation (the seed's convention, as in SEN12MS-CR work).
SAR_DB_RANGES: Dict[str, Tuple[float, float]] = {"VV": (-25.0, 0.0), "VH": (-32.5, 0.0)}
# Reflectance range mapped to [-1, 1] on the optical side.
OPTICAL_RANGE: Tuple[float, float] = (0.0, 1.0)
OPTICAL_SCALE = 10000.0  # L2A digital number = reflectance * 10,000

CLOUD_CLIP_DN = 4000.0
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def scale_to_unit(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Clip x to [lo, hi] and map it linearly to [-1, 1]."""
    x = np.clip(x, lo, hi)
    return (2.0 * (x - lo) / (hi - lo) - 1.0).astype(np.float32)


def unscale_from_unit(y: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Inverse of :func:`scale_to_unit` (for values inside [-1, 1])."""
    return ((np.clip(y, -1.0, 1.0) + 1.0) * 0.5 * (hi - lo) + lo).astype(np.float32)


def linear_to_db(power: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """10*log10 of linear backscatter; returns (dB, valid) with zero/negative power invalid."""
    valid = np.isfinite(power) & (power > 0)
    db = np.full(power.shape, np.nan, dtype=np.float32)
    db[valid] = 10.0 * np.log10(power[valid])
    return db, valid


def normalise_sar_db(db: np.ndarray, polarisations: Sequence[str] = ("VV", "VH"),
                     ranges: Optional[Dict[str, Tuple[float, float]]] = None) -> np.ndarray:
    """(C, H, W) dB -> (C, H, W) float32 in [-1, 1]; NaNs become -1 (the caller masks them)."""
    ranges = ranges or SAR_DB_RANGES
    out = np.empty(db.shape, dtype=np.float32)
    for i, pol in enumerate(polarisations):
        lo, hi = ranges[pol]
        out[i] = scale_to_unit(np.nan_to_num(db[i], nan=lo), lo, hi)
    return out


def normalise_optical(reflectance: np.ndarray, rng: Tuple[float, float] = OPTICAL_RANGE) -> np.ndarray:
    """Reflectance (0..1) -> [-1, 1]."""
    return scale_to_unit(reflectance, *rng)


def denormalise_optical(y: np.ndarray, rng: Tuple[float, float] = OPTICAL_RANGE) -> np.ndarray:
    """Network output in [-1, 1] -> reflectance (0..1)."""
    return unscale_from_unit(y, *rng)


def reflectance_to_dn(reflectance: np.ndarray) -> np.ndarray:
    """Reflectance -> uint16 L2A digital numbers; 0 is reserved for nodata so valid pixels are >= 1."""
    dn = np.rint(reflectance * OPTICAL_SCALE)
    return np.clip(dn, 1, 65535).astype(np.uint16)


def cloud_preprocess(rgb_dn: np.ndarray, mean: Sequence[float] = IMAGENET_MEAN,
                     std: Sequence[float] = IMAGENET_STD, clip_dn: float = CLOUD_CLIP_DN) -> np.ndarray:
    """(3, H, W) B4,B3,B2 digital numbers -> encoder input, as in training:
    clip at 4,000, scale to 0..255, then (x/255 - mean) / std per channel."""
    x = np.clip(np.nan_to_num(rgb_dn.astype(np.float32), nan=0.0), 0.0, clip_dn) * (255.0 / clip_dn)
    m = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)
    return ((x / 255.0 - m) / s).astype(np.float32)


@dataclass
class UnitsDecision:
    units: str       # "dB" or "linear"
    reason: str      # sentence for the log
    warnings: Tuple[str, ...] = ()


def _says_db(descriptions: Sequence[Optional[str]]) -> bool:
    text = " ".join(d or "" for d in descriptions).lower()
    return "db" in text.replace("(", " ").replace(")", " ").replace("_", " ").split() or "decibel" in text


def not_linear_power(sample: np.ndarray) -> Optional[str]:
    """Why a non-negative 2-band (VV, VH) sample is not linear backscatter power, or None.

    What can be told from the values (thresholds from the real Sentinel-1 samples in sample_data/
    and sen1floods11: in linear power their VV medians are 0.06-0.16 and the VH/VV ratio of the
    medians 0.17-0.32, the two bands correlate with r <= 0.64):

    - amplitude (sqrt of power): medians about 0.1-0.5 and a VH/VV ratio of about 0.4-0.6
      (the square root of power's ratio);
    - 0-1 reflectance: both bands' medians within 0.01-0.5 and the two bands strongly correlated
      (r > 0.85; optical bands are, speckled radar is not).

    Dark (water-dominated) amplitude scenes and weakly correlated optical bands (NIR/red) are
    not recognised; the help says so.
    """
    vv, vh = sample[0], sample[1]
    ok = np.isfinite(vv) & np.isfinite(vh) & (vv > 0) & (vh > 0)
    if np.count_nonzero(ok) < 100:
        return None
    a, b = vv[ok].astype(np.float64), vh[ok].astype(np.float64)
    m_vv, m_vh = float(np.median(a)), float(np.median(b))
    ratio = m_vh / m_vv if m_vv > 0 else 0.0
    r = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else 0.0
    seen = f"medians VV {m_vv:.3g}, VH {m_vh:.3g}, VH/VV {ratio:.2f}, correlation {r:.2f}"
    if 0.01 <= m_vv <= 0.5 and 0.01 <= m_vh <= 0.5 and r > 0.85:
        return (f"the two bands are strongly correlated with values in 0.01-0.5 ({seen}), as 0-1 optical "
                "reflectance is; radar backscatter is not")
    if 0.12 <= m_vv <= 0.8 and 0.36 <= ratio <= 0.75:
        return (f"the values look like amplitude (the square root of power: {seen}; linear power has a VH/VV "
                "ratio of about 0.1-0.3). Square the values to get power, or convert to dB")
    return None


def decide_sar_units(sample: np.ndarray, descriptions: Sequence[Optional[str]], dtype: str,
                     requested: str = "auto", layer_name: str = "input") -> UnitsDecision:
    """Decide whether a 2-band sample is Sentinel-1 backscatter in dB or linear power.

    ``sample`` is (2, h, w) float with invalid pixels already set to NaN. Raises
    :class:`InputError` naming what was seen when the values cannot be
    backscatter (reflectance-like integers, amplitudes in the thousands, ...).
    The values win over band descriptions: linear power described as "(dB)" is linear.
    """
    finite = sample[np.isfinite(sample)]
    if finite.size == 0:
        raise InputError(f"Layer '{layer_name}': the VV/VH bands hold only nodata.")
    q01, q50, q99 = (float(v) for v in np.asarray(np.percentile(finite, [1, 50, 99])))
    seen = f"dtype {dtype}, 1st/50th/99th percentiles {q01:.4g}/{q50:.4g}/{q99:.4g}"
    looks_linear = q01 >= 0 and q50 < 1
    if requested in ("dB", "linear"):
        if requested == "dB" and (q01 < -80 or q99 > 60):
            raise InputError(f"Layer '{layer_name}' was declared to be in dB, but its values ({seen}) are not "
                             "backscatter in dB (expected roughly -40..+10).")
        if requested == "dB" and looks_linear:
            # Real backscatter in dB is mostly negative; all values >= 0 with a median below 1 is what
            # linear power looks like, and treating it as dB would silently give a meaningless result.
            raise InputError(f"Layer '{layer_name}' was declared to be in dB, but its values ({seen}) look like "
                             "linear power (non-negative, median below 1). Choose 'linear' or 'auto'.")
        if requested == "linear" and (q01 < 0 or q99 > 1000):
            raise InputError(f"Layer '{layer_name}' was declared linear power, but its values ({seen}) are not "
                             "linear backscatter (expected 0..~10).")
        warnings: Tuple[str, ...] = ()
        if requested == "linear":
            why = not_linear_power(sample)
            if why:
                warnings = (f"Layer '{layer_name}' was declared linear power, but {why}. Processing it as "
                            "declared.",)
        return UnitsDecision(requested, f"units set by the user: {requested} ({seen})", warnings)
    if requested != "auto":
        raise InputError(f"Unknown input units '{requested}' (use auto, dB or linear).")
    says_db = _says_db(descriptions)
    if dtype.startswith("uint") and q99 > 100:
        raise InputError(f"Layer '{layer_name}' does not look like Sentinel-1 backscatter ({seen}): integer values "
                         "in the hundreds or more look like optical reflectance or uncalibrated amplitude. "
                         "Calibrate to sigma0 (dB or linear) first.")
    if q50 < 0 and q01 > -80 and q99 < 60:
        return UnitsDecision("dB", f"values are mostly negative, as backscatter in dB is ({seen})")
    if q01 >= 0 and q99 <= 10:
        why = not_linear_power(sample)
        if why:
            raise InputError(f"Layer '{layer_name}' does not look like Sentinel-1 backscatter: {why}. If it is "
                             "linear power, set the input units to 'linear' by hand.")
        if says_db:
            return UnitsDecision("linear", f"values are small and non-negative, as linear power is ({seen}); the "
                                           "band descriptions say dB, but the values win: dB backscatter is "
                                           "mostly negative",
                                 (f"Layer '{layer_name}': the band descriptions say dB but the values are linear "
                                  "power; treating them as linear power.",))
        return UnitsDecision("linear", f"values are small and non-negative, as linear power is ({seen})")
    if says_db and q99 <= 60 and q01 >= -80:
        return UnitsDecision("dB", f"band descriptions say dB ({seen})")
    raise InputError(f"Layer '{layer_name}' does not look like Sentinel-1 VV/VH backscatter ({seen}). "
                     "Expected dB (about -40..+10) or linear power (about 0..1); set the units by hand if "
                     "you are sure.")

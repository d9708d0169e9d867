"""What a Sentinel-2 raster says about itself: product level and radiometric offset.

Two facts change how digital numbers (DN) become reflectance, and a wrong guess on either gives a
plausible-looking but wrong cloud mask:

* **Level.** L1C is top-of-atmosphere reflectance (13 bands, with the cirrus band B10); L2A is
  Sen2Cor's surface reflectance (no B10). Models are trained on one of them.
* **Offset.** Since processing baseline 04.00 (products from 2022-01-25 on) ESA stores
  ``DN = 10,000 * reflectance + 1,000``: the metadata carries ``RADIO_ADD_OFFSET`` (L1C) or
  ``BOA_ADD_OFFSET`` (L2A) = -1000, which must be added before dividing by 10,000.

Each decision comes with the sentence that says how it was made, for the log. No QGIS here.
"""
from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Mapping, Optional, Sequence, TypeVar

from .bands import canonical_s2_band
from .errors import InputError

LEVELS = ("L1C", "L2A")
LEVEL_CHOICES = ("auto",) + LEVELS
OFFSET_CHOICES = ("auto", "none", "-1000")
BASELINE_04_OFFSET = -1000.0
# First day of processing baseline 04.00 products (ESA, "Sentinel-2 L1C/L2A baseline 04.00", 2022-01-25).
BASELINE_04_START = _dt.date(2022, 1, 25)

_LEVEL_IN_NAME = re.compile(r"(?:MSI|_|^)(L1C|L2A)(?=[_\W]|\d|$)", re.IGNORECASE)
_BASELINE_IN_NAME = re.compile(r"_N(\d{2})(\d{2})_")
_DATE_IN_NAME = re.compile(r"(?<!\d)(20\d{2})(\d{2})(\d{2})T\d{4,6}")
_OFFSET_TAG = re.compile(r"(BOA|RADIO)_ADD_OFFSET", re.IGNORECASE)
_DATE_TAGS = ("PRODUCT_START_TIME", "DATATAKE_1_DATATAKE_SENSING_START", "SENSING_TIME", "DATETIME",
              "ACQUISITION_DATE", "TIFFTAG_DATETIME")


T = TypeVar("T")


@dataclass(frozen=True)
class Decision(Generic[T]):
    """A value the run decided (level, offset, date) and the reason, said in the log."""

    value: T
    reason: str


def decide_level(requested: str, count: int, descriptions: Sequence[Optional[str]],
                 tags: Mapping[str, str], file_name: str) -> Decision[Optional[str]]:
    """L1C or L2A, from the user's choice, the band layout, the metadata or the file name.

    Returns ``Decision(None, why)`` when nothing tells: the caller decides whether that is an error.
    """
    requested = (requested or "auto").upper() if requested and requested.lower() != "auto" else "auto"
    if requested != "auto":
        if requested not in LEVELS:
            raise InputError(f"Unknown product level '{requested}' (use auto, L1C or L2A).")
        return Decision(requested, f"set by the user: {requested}")
    named = [canonical_s2_band(d) for d in descriptions]
    if "B10" in named:
        return Decision("L1C", "a band is described as B10 (cirrus), which only L1C products carry")
    for key in ("PROCESSING_LEVEL", "PRODUCT_TYPE", "LEVEL"):
        value = str(tags.get(key, "")).upper()
        if "1C" in value:
            return Decision("L1C", f"metadata {key}={tags[key]}")
        if "2A" in value:
            return Decision("L2A", f"metadata {key}={tags[key]}")
    match = _LEVEL_IN_NAME.search(Path(file_name).name)
    if match:
        level = match.group(1).upper()
        return Decision(level, f"the file name says {level} ('{Path(file_name).name}')")
    if count == 13 and not any(named):
        return Decision("L1C", "13 bands without descriptions: the L1C layout, B1..B12 with B8A and B10")
    if any(named) and "B10" not in named and len([n for n in named if n]) >= 12:
        return Decision("L2A", "12 Sentinel-2 bands without B10: the L2A layout")
    return Decision(None, "neither the bands, the metadata nor the file name say L1C or L2A")


def acquisition_date(tags: Mapping[str, str], file_name: str) -> Optional[Decision[_dt.date]]:
    """The sensing date from the metadata or the file name, or None."""
    for key in _DATE_TAGS:
        value = str(tags.get(key, ""))
        match = re.search(r"(20\d{2})[-:]?(\d{2})[-:]?(\d{2})", value)
        if match:
            with_date = _safe_date(*match.groups())
            if with_date:
                return Decision(with_date, f"metadata {key}={value}")
    match = _DATE_IN_NAME.search(Path(file_name).name)
    if match:
        with_date = _safe_date(*match.groups())
        if with_date:
            return Decision(with_date, f"file name '{Path(file_name).name}'")
    return None


def _safe_date(y: str, m: str, d: str) -> Optional[_dt.date]:
    try:
        return _dt.date(int(y), int(m), int(d))
    except ValueError:
        return None


def decide_offset(requested: str, dataset_tags: Mapping[str, str], band_tags: Sequence[Mapping[str, str]],
                  file_name: str) -> Decision[float]:
    """The DN offset to add before dividing by 10,000: 0 or -1000 (value is a float).

    ``auto``: an ``*_ADD_OFFSET`` tag of the dataset or of a band wins; then the processing baseline
    in the file name (``_N0400_``); then the acquisition date (>= 2022-01-25 means baseline 04.00);
    with none of them, no offset (said so).
    """
    requested = (requested or "auto").lower()
    if requested not in OFFSET_CHOICES:
        raise InputError(f"Unknown offset '{requested}' (use auto, none or -1000).")
    if requested == "none":
        return Decision(0.0, "set by the user: none")
    if requested == "-1000":
        return Decision(BASELINE_04_OFFSET, "set by the user: -1000 (processing baseline 04.00 or later)")
    for where, tags in [("dataset", dataset_tags)] + [(f"band {i + 1}", t) for i, t in enumerate(band_tags)]:
        for key, value in tags.items():
            if _OFFSET_TAG.search(key):
                try:
                    offset = float(value)
                except ValueError:
                    raise InputError(f"The {where} metadata {key}={value!r} is not a number; set the offset "
                                     "by hand (parameter Offset).") from None
                return Decision(offset, f"{where} metadata {key}={value}")
    match = _BASELINE_IN_NAME.search(Path(file_name).name)
    if match:
        baseline = int(match.group(1)) + int(match.group(2)) / 100
        offset = BASELINE_04_OFFSET if baseline >= 4 else 0.0
        return Decision(offset, f"processing baseline {baseline:05.2f} in the file name")
    date = acquisition_date(dataset_tags, file_name)
    if date is not None:
        if date.value >= BASELINE_04_START:
            return Decision(BASELINE_04_OFFSET, f"acquired {date.value} ({date.reason}), on or after "
                            f"{BASELINE_04_START}: processing baseline 04.00 adds 1000 to every DN")
        return Decision(0.0, f"acquired {date.value} ({date.reason}), before {BASELINE_04_START}: no offset")
    return Decision(0.0, "no offset tag, baseline or date found: assuming no offset (set Offset to -1000 for "
                    "products processed with baseline 04.00 or later, i.e. most acquired since 2022-01-25)")

"""Band names and band sets shared by the plugin and the training package.

Sentinel-2 band names are written the way ESA writes them without zero padding
("B2", "B8A"); :func:`canonical_s2_band` accepts "B02", "b2", "B2 (blue)" etc.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from .errors import InputError

# Sentinel-2 L1C band order as stored in SEN12MS and CloudSEN12 (13 bands).
S2_L1C_ORDER: Tuple[str, ...] = (
    "B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12",
)
# Sentinel-2 L2A stacks have no B10 (cirrus band is dropped by Sen2Cor): 12 bands.
S2_L2A_ORDER: Tuple[str, ...] = tuple(b for b in S2_L1C_ORDER if b != "B10")

S1_BANDS: Tuple[str, ...] = ("VV", "VH")


@dataclass(frozen=True)
class BandSet:
    """One output band set of the SAR->EO translation."""

    key: str            # stable id used in files, parameters and cards
    label: str          # what the user reads
    bands: Tuple[str, ...]

    @property
    def count(self) -> int:
        return len(self.bands)


BAND_SETS: Dict[str, BandSet] = {
    "rgb": BandSet("rgb", "RGB (B4, B3, B2)", ("B4", "B3", "B2")),
    "nir_swir_re": BandSet("nir_swir_re", "NIR + SWIR + Red-Edge (B8, B11, B5)", ("B8", "B11", "B5")),
    "rgbn": BandSet("rgbn", "RGB + NIR (B4, B3, B2, B8)", ("B4", "B3", "B2", "B8")),
}
BAND_SET_KEYS: List[str] = list(BAND_SETS)


def band_set(key: str) -> BandSet:
    try:
        return BAND_SETS[key]
    except KeyError:
        raise InputError(
            f"Unknown band set '{key}'. Known band sets: {', '.join(BAND_SET_KEYS)}"
        ) from None


_S2_RE = re.compile(r"\bB0?(1[0-2]|[1-9]|8A)\b", re.IGNORECASE)
# Band names that other software writes into band descriptions, most specific first: "Red Edge 1"
# must not be read as "red" (B4), nor "NIR narrow" as B8.
_WORD_NAMES: Tuple[Tuple[str, Optional[str]], ...] = (
    (r"red[\s_-]*edge[\s_-]*1|vre1|re1\b", "B5"), (r"red[\s_-]*edge[\s_-]*2|vre2|re2\b", "B6"),
    (r"red[\s_-]*edge[\s_-]*3|vre3|re3\b", "B7"), (r"red[\s_-]*edge", None),
    (r"nir[\s_-]*(narrow|2)|narrow[\s_-]*nir|nir08", "B8A"),
    (r"swir[\s_-]*(1|16|1\.6)(?!\d)|swir16", "B11"), (r"swir[\s_-]*(2|22|2\.2)(?!\d)|swir22", "B12"),
    (r"swir", None), (r"coastal|aerosol", "B1"), (r"water[\s_-]*vapou?r", "B9"), (r"cirrus", "B10"),
    (r"\bred\b", "B4"), (r"\bgreen\b", "B3"), (r"\bblue\b", "B2"), (r"\bnir\b|near[\s_-]*infra", "B8"),
)


def canonical_s2_band(description: Optional[str]) -> Optional[str]:
    """Return the Sentinel-2 band named by a band description, or None.

    >>> canonical_s2_band("B04"), canonical_s2_band("b8a"), canonical_s2_band("Red")
    ('B4', 'B8A', 'B4')
    >>> canonical_s2_band("Red Edge 1"), canonical_s2_band("Red edge"), canonical_s2_band("SWIR 1.6")
    ('B5', None, 'B11')
    """
    if not description:
        return None
    text = description.strip()
    match = _S2_RE.search(text)
    if match:
        return "B" + match.group(1).upper()
    lowered = text.lower()
    for pattern, band in _WORD_NAMES:
        if re.search(pattern, lowered):
            return band
    return None


# Layouts a Sentinel-2 stack without band descriptions is taken to have, by band count. A 4-band
# raster without descriptions is NOT among them: B2,B3,B4,B8 and R,G,B,NIR orders are both common.
KNOWN_LAYOUTS: Dict[int, Tuple[str, Tuple[str, ...]]] = {
    13: ("13-band L1C stack (B1..B12 with B8A and B10)", S2_L1C_ORDER),
    12: ("12-band L2A stack (B1..B12 with B8A, no B10)", S2_L2A_ORDER),
}


def describe_bands(descriptions: Sequence[Optional[str]]) -> str:
    return ", ".join(f"{i + 1}:{d or '(no description)'}" for i, d in enumerate(descriptions))


def available_s2_bands(count: int, descriptions: Sequence[Optional[str]]) -> Tuple[Dict[str, int], str]:
    """Sentinel-2 band name -> 1-based band number for every band that can be identified, and how.

    Band descriptions win; a stack without any is read by its band count (:data:`KNOWN_LAYOUTS`);
    otherwise nothing is identified (an empty dict), never guessed.
    """
    named = [canonical_s2_band(d) for d in descriptions]
    if any(named):
        found: Dict[str, int] = {}
        for i, name in enumerate(named):
            if name and name not in found:
                found[name] = i + 1
        return found, "from the band descriptions"
    if count in KNOWN_LAYOUTS:
        label, order = KNOWN_LAYOUTS[count]
        return {b: i + 1 for i, b in enumerate(order)}, f"assumed {label}, the layer has no band descriptions"
    return {}, "the layer has no band descriptions and no known band count"


def parse_band_map(text: str, count: int) -> Dict[str, int]:
    """``"B2=1, B3=2, B4=3, B8=4"`` -> {"B2": 1, ...}; every name a Sentinel-2 band, every number a band."""
    mapping: Dict[str, int] = {}
    for item in filter(None, (part.strip() for part in re.split(r"[,;]", text or ""))):
        name, sep, number = item.partition("=")
        band = canonical_s2_band(name.strip()) if sep else None
        if band is None or not re.fullmatch(r"\d+", number.strip()):
            raise InputError(f"Band map item '{item}' is not of the form B2=1 (a Sentinel-2 band name, '=', a "
                             "band number of the layer).")
        value = int(number)
        if not 1 <= value <= count:
            raise InputError(f"Band map item '{item}': the layer has {count} band(s); band {value} does not exist.")
        mapping[band] = value
    return mapping


def find_s2_bands(wanted: Sequence[str], count: int, descriptions: Sequence[Optional[str]],
                  band_map: Optional[Dict[str, int]] = None) -> Tuple[Tuple[int, ...], str]:
    """1-based band numbers of the Sentinel-2 bands ``wanted`` (in that order), and how they were found.

    ``band_map`` (the user's) wins over descriptions and layouts. Raises :class:`InputError` that lists
    the bands seen and says which parameter fixes it when a wanted band cannot be identified.
    """
    found, how = available_s2_bands(count, descriptions)
    if band_map:
        found = {**found, **band_map}
        how = "set by the user" + (f", the rest {how}" if set(wanted) - set(band_map) else "")
    missing = [b for b in wanted if b not in found]
    if missing:
        raise InputError(
            f"Cannot tell which bands are {', '.join(missing)} in this {count}-band layer ({how}; bands seen: "
            f"{describe_bands(descriptions)}). Known without descriptions are the 13-band L1C and 12-band L2A "
            "stacks; otherwise name the bands with the Band map parameter, e.g. "
            + ", ".join(f"{b}={i + 1}" for i, b in enumerate(wanted)) + ".")
    numbers = tuple(found[b] for b in wanted)
    return numbers, how + ": " + ", ".join(f"{b}={n}" for b, n in zip(wanted, numbers))


_POL_RE = {pol: re.compile(rf"(?<![a-z0-9]){pol}(?![a-z0-9])", re.IGNORECASE) for pol in ("VV", "VH")}


def find_sar_bands(descriptions: Sequence[Optional[str]]) -> Dict[str, int]:
    """1-based band numbers of VV and VH named by band descriptions ("VV", "VH (dB)", "Sigma0_VV_db",
    ...). A polarisation is returned only when exactly one band names it and no other polarisation;
    the result may hold both, one or none of them."""
    found: Dict[str, List[int]] = {"VV": [], "VH": []}
    for i, d in enumerate(descriptions, start=1):
        if not d:
            continue
        hits = [pol for pol, rx in _POL_RE.items() if rx.search(d)]
        if len(hits) == 1:
            found[hits[0]].append(i)
    return {pol: nums[0] for pol, nums in found.items() if len(nums) == 1}

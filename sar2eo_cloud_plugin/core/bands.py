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
# The common 10 m stack.
S2_10M_ORDER: Tuple[str, ...] = ("B2", "B3", "B4", "B8")

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
_COLOUR_NAMES = {"red": "B4", "green": "B3", "blue": "B2", "nir": "B8"}


def canonical_s2_band(description: Optional[str]) -> Optional[str]:
    """Return the Sentinel-2 band named by a band description, or None.

    >>> canonical_s2_band("B04"), canonical_s2_band("b8a"), canonical_s2_band("Red")
    ('B4', 'B8A', 'B4')
    """
    if not description:
        return None
    text = description.strip()
    match = _S2_RE.search(text)
    if match:
        return "B" + match.group(1).upper()
    lowered = text.lower()
    for word, band in _COLOUR_NAMES.items():
        if re.search(rf"\b{word}\b", lowered):
            return band
    return None


def find_rgb_bands(count: int, descriptions: Sequence[Optional[str]]) -> Tuple[Tuple[int, int, int], str]:
    """Map a Sentinel-2 layer's bands to (B4, B3, B2) as 1-based band numbers.

    Returns the band numbers and a sentence saying how they were found. Raises
    :class:`InputError` that lists what was seen when the layout is ambiguous.
    """
    named = [canonical_s2_band(d) for d in descriptions]
    wanted = ("B4", "B3", "B2")
    if all(b in named for b in wanted):
        numbers = tuple(named.index(b) + 1 for b in wanted)
        return numbers, f"found from band descriptions: B4={numbers[0]}, B3={numbers[1]}, B2={numbers[2]}"  # type: ignore[return-value]
    layouts = {13: ("13-band L1C stack (B1..B12 with B8A, B10)", S2_L1C_ORDER),
               12: ("12-band L2A stack (B1..B12 with B8A, no B10)", S2_L2A_ORDER),
               4: ("4-band 10 m stack (B2, B3, B4, B8)", S2_10M_ORDER)}
    if count in layouts and not any(named):
        name, order = layouts[count]
        numbers = tuple(order.index(b) + 1 for b in wanted)
        return numbers, f"assumed {name}: B4={numbers[0]}, B3={numbers[1]}, B2={numbers[2]}"  # type: ignore[return-value]
    seen = ", ".join(f"{i + 1}:{d or '(no description)'}" for i, d in enumerate(descriptions))
    raise InputError(
        f"Cannot tell which bands are B4, B3, B2 in a {count}-band layer (bands seen: {seen}). "
        "Known layouts are 13-band L1C, 12-band L2A, 4-band B2,B3,B4,B8, or bands whose descriptions "
        "name B4/B3/B2 (or red/green/blue). Set the red, green and blue band numbers by hand."
    )


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

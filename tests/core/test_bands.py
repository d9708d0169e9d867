"""Sentinel-2 band names and the B4/B3/B2 detection of the cloud mask."""
from __future__ import annotations

import pytest
import rasterio

from sar2eo_cloud_plugin.core import bands
from sar2eo_cloud_plugin.core.errors import InputError


def test_band_sets():
    assert bands.BAND_SET_KEYS == ["rgb", "nir_swir_re", "rgbn"]
    assert bands.band_set("rgb").bands == ("B4", "B3", "B2")
    assert bands.band_set("nir_swir_re").bands == ("B8", "B11", "B5")
    assert bands.band_set("rgbn").bands == ("B4", "B3", "B2", "B8") and bands.band_set("rgbn").count == 4
    with pytest.raises(InputError, match="Unknown band set 'ir'"):
        bands.band_set("ir")
    assert len(bands.S2_L1C_ORDER) == 13 and len(bands.S2_L2A_ORDER) == 12 and "B10" not in bands.S2_L2A_ORDER


@pytest.mark.parametrize("text, band", [("B04", "B4"), ("b4", "B4"), ("B8A", "B8A"), ("b8a", "B8A"),
                                        ("B10", "B10"), ("B1", "B1"), ("B12 (SWIR)", "B12"), ("Red", "B4"),
                                        ("green", "B3"), ("Blue band", "B2"), ("NIR", "B8"),
                                        ("Band 1", None), ("", None), (None, None), ("B13", None)])
def test_canonical_s2_band(text, band):
    assert bands.canonical_s2_band(text) == band


@pytest.mark.parametrize("count, expected", [(13, (4, 3, 2)), (12, (4, 3, 2))])
def test_layouts_without_descriptions(count, expected):
    numbers, how = bands.find_s2_bands(["B4", "B3", "B2"], count, [None] * count)
    assert numbers == expected and "assumed" in how


def test_l1c_names_and_real_l2a_sample(s2_sample):
    assert bands.find_s2_bands(["B4", "B3", "B2"], 13, list(bands.S2_L1C_ORDER))[0] == (4, 3, 2)
    with rasterio.open(s2_sample) as src:   # real 12-band L2A stack, descriptions B1..B12
        numbers, how = bands.find_s2_bands(["B2", "B3", "B4", "B8", "B11", "B12"], src.count, list(src.descriptions))
    assert numbers == (2, 3, 4, 8, 11, 12) and "descriptions" in how


@pytest.mark.parametrize("desc, expected", [(("B4", "B3", "B2"), (1, 2, 3)), (("B2", "B3", "B4"), (3, 2, 1)),
                                            (("B02", "B03", "B04", "B08"), (3, 2, 1)),
                                            (("Red", "Green", "Blue"), (1, 2, 3)),
                                            (("blue", "green", "red"), (3, 2, 1))])
def test_descriptions_in_either_order(desc, expected):
    assert bands.find_s2_bands(["B4", "B3", "B2"], len(desc), list(desc))[0] == expected


@pytest.mark.parametrize("desc", [(None, None, None), ("a", "b", "c"), (None,) * 5, ("B8", "B4", "B3"),
                                  (None,) * 4, ("Red Edge 1", "Green", "Blue"),
                                  ("B4", "B3", None, None, None, None, None, None, None, None, None, None)])
def test_ambiguous_layouts_name_the_bands_seen(desc):
    with pytest.raises(InputError) as err:
        bands.find_s2_bands(["B4", "B3", "B2"], len(desc), list(desc))
    msg = str(err.value)
    assert f"{len(desc)}-band layer" in msg and "bands seen: 1:" in msg and "Band map" in msg
    for i, d in enumerate(desc, start=1):
        assert f"{i}:{d or '(no description)'}" in msg

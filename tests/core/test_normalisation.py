"""Value conventions: SAR dB -> [-1, 1], reflectance <-> [-1, 1] <-> uint16 DN, cloud-model input, units."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from sar2eo_cloud_plugin.core import normalisation as norm
from sar2eo_cloud_plugin.core.errors import InputError


def test_sar_db_ranges_map_to_unit_interval_exactly():
    assert norm.SAR_DB_RANGES == {"VV": (-25.0, 0.0), "VH": (-32.5, 0.0)}
    vv = np.array([-40.0, -25.0, -12.5, -6.25, 0.0, 5.0], dtype=np.float32)
    vh = np.array([-50.0, -32.5, -16.25, -8.125, 0.0, 3.0], dtype=np.float32)
    out = norm.normalise_sar_db(np.stack([vv, vh])[:, None, :])
    expected = np.array([-1.0, -1.0, 0.0, 0.5, 1.0, 1.0], dtype=np.float32)
    assert out.dtype == np.float32 and out.shape == (2, 1, 6)
    np.testing.assert_array_equal(out[0, 0], expected)
    np.testing.assert_array_equal(out[1, 0], expected)


def test_sar_nan_becomes_minus_one():
    out = norm.normalise_sar_db(np.full((2, 2, 2), np.nan, dtype=np.float32))
    np.testing.assert_array_equal(out, -1.0)


def test_linear_to_db_zero_and_negative_invalid():
    power = np.array([1.0, 0.1, 0.01, 10.0, 0.0, -0.5, np.nan, np.inf], dtype=np.float32)
    db, valid = norm.linear_to_db(power)
    np.testing.assert_array_equal(valid, [True, True, True, True, False, False, False, False])
    np.testing.assert_allclose(db[:4], [0.0, -10.0, -20.0, 10.0], atol=1e-5)
    assert np.isnan(db[4:]).all()


def test_optical_round_trip_and_exact_values():
    r = np.array([0.0, 0.25, 0.5, 1.0], dtype=np.float32)
    y = norm.normalise_optical(r)
    np.testing.assert_array_equal(y, [-1.0, -0.5, 0.0, 1.0])
    np.testing.assert_array_equal(norm.denormalise_optical(y), r)
    rng = np.random.default_rng(0)
    r = rng.uniform(0, 1, 1000).astype(np.float32)
    np.testing.assert_allclose(norm.denormalise_optical(norm.normalise_optical(r)), r, atol=1e-6)
    # tanh outputs beyond [-1, 1] cannot happen, but clipping keeps reflectance in range anyway
    np.testing.assert_array_equal(norm.denormalise_optical(np.array([-1.5, 1.5])), [0.0, 1.0])


def test_reflectance_to_dn_keeps_zero_for_nodata_only():
    r = np.array([0.0, 0.00004, 0.00005, 0.1234, 1.0, 6.5535, 9.0, -0.2], dtype=np.float32)
    dn = norm.reflectance_to_dn(r)
    assert dn.dtype == np.uint16
    np.testing.assert_array_equal(dn, [1, 1, 1, 1234, 10000, 65535, 65535, 1])
    assert (norm.reflectance_to_dn(np.linspace(-1, 10, 5000)) >= 1).all()


def test_cloud_preprocess_by_hand():
    # B4, B3, B2 digital numbers: 0, 2000 (half the clip), 4000 (the clip), 8000 (clipped), NaN (as 0)
    dn = np.array([0, 2000, 4000, 8000, np.nan], dtype=np.float32)
    x = norm.cloud_preprocess(np.stack([dn, dn, dn])[:, None, :])
    assert x.dtype == np.float32 and x.shape == (3, 1, 5)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    for c in range(3):
        expected = [(v - mean[c]) / std[c] for v in (0.0, 0.5, 1.0, 1.0, 0.0)]
        np.testing.assert_allclose(x[c, 0], expected, rtol=1e-6)
    # hand-computed for the red channel: (0 - .485)/.229, (.5 - .485)/.229, (1 - .485)/.229
    np.testing.assert_allclose(x[0, 0, :3], [-2.117904, 0.065502, 2.248908], atol=1e-6)


def _s1(path):
    with rasterio.open(path) as src:
        return src.read().astype(np.float32), list(src.descriptions), src.dtypes[0]


def test_decide_units_real_s1_sample_is_db(s1_samples):
    for path in s1_samples:
        data, desc, dtype = _s1(path)
        assert norm.decide_sar_units(data, desc, dtype).units == "dB"
        # without the band descriptions the values alone say dB
        assert norm.decide_sar_units(data, [None, None], dtype).units == "dB"


def test_decide_units_real_sample_converted_to_linear_is_linear(s1_samples):
    for path in s1_samples:
        data, _desc, dtype = _s1(path)
        linear = (10.0 ** (data / 10.0)).astype(np.float32)  # the real sample, converted (derived data)
        decision = norm.decide_sar_units(linear, ["VV", "VH"], dtype)
        assert decision.units == "linear"
        assert "percentiles" in decision.reason


def test_decide_units_uint16_s2_bands_named_in_error(s2_sample):
    with rasterio.open(s2_sample) as src:
        data = src.read([4, 3]).astype(np.float32)
        dtype = src.dtypes[3]
    with pytest.raises(InputError) as err:
        norm.decide_sar_units(data, ["B4", "B3"], dtype, layer_name="S2 L2A")
    msg = str(err.value)
    assert "S2 L2A" in msg and "uint16" in msg and "percentiles" in msg and "Sentinel-1" in msg


def test_declared_units_contradicted_by_values(s1_sample, s2_sample):
    data, _desc, dtype = _s1(s1_sample)
    with pytest.raises(InputError, match="declared linear power"):
        norm.decide_sar_units(data, [None, None], dtype, "linear")         # dB values declared linear
    with rasterio.open(s2_sample) as src:
        dn = src.read([4, 3]).astype(np.float32)
    with pytest.raises(InputError, match="declared to be in dB"):
        norm.decide_sar_units(dn, [None, None], "uint16", "dB")           # reflectance DN declared dB
    linear = (10.0 ** (data / 10.0)).astype(np.float32)
    with pytest.raises(InputError, match="declared to be in dB"):
        norm.decide_sar_units(linear, [None, None], dtype, "dB")          # linear power declared dB
    # declarations that agree with the values are accepted and said so
    assert norm.decide_sar_units(data, [None, None], dtype, "dB").reason.startswith("units set by the user")
    assert norm.decide_sar_units(linear, [None, None], dtype, "linear").units == "linear"


def test_decide_units_nodata_only_and_unknown_request():
    with pytest.raises(InputError, match="only nodata"):
        norm.decide_sar_units(np.full((2, 4, 4), np.nan, dtype=np.float32), [None, None], "float32")
    with pytest.raises(InputError, match="Unknown input units"):
        norm.decide_sar_units(np.full((2, 4, 4), -10, dtype=np.float32), [None, None], "float32", "amplitude")


def test_decide_units_amplitude_in_thousands_refused():
    """GENERATED values like uncalibrated float amplitude (hundreds to thousands)."""
    rng = np.random.default_rng(1)
    amp = rng.uniform(50, 3000, (2, 32, 32)).astype(np.float32)
    with pytest.raises(InputError, match="does not look like Sentinel-1"):
        norm.decide_sar_units(amp, [None, None], "float32")


def test_card_preprocessing_matches_the_training_definition(s2_sample):
    """The engine's fused preprocessing for the seed's card (clip_mean_std) equals
    normalisation.cloud_preprocess (the one training uses) on the real sample and on GENERATED edge values
    (negative, at and above the clip); NaN and inf are nodata and come out as the value of 0."""
    from sar2eo_cloud_plugin.core import cards, cloud

    def prepare(raw, mean=norm.IMAGENET_MEAN, std=norm.IMAGENET_STD, clip=norm.CLOUD_CLIP_DN):
        card = cards.cloudmask_card()
        card.normalisation.update(mean=list(mean), std=list(std), clip=[clip] * 3)
        return cloud.make_prepare(cloud.CloudModelSpec.from_card(card, Path("seed.json")), 0.0)(raw)

    with rasterio.open(s2_sample) as src:
        rgb = src.read([4, 3, 2]).astype(np.float32)
    np.testing.assert_allclose(prepare(rgb)[0], norm.cloud_preprocess(rgb), rtol=0, atol=2e-6)
    edge = np.array([np.nan, np.inf, -np.inf, -5, 0, 1, 3999.5, 4000, 4001, 65535], dtype=np.float32)
    edge = np.stack([edge, edge[::-1], edge])[:, None, :]
    x, valid = prepare(edge)
    finite = np.isfinite(edge).all(axis=0)
    assert (valid == (finite & np.any(edge != 0, axis=0))).all()
    np.testing.assert_allclose(x[:, valid], norm.cloud_preprocess(edge)[:, valid], rtol=0, atol=2e-6)
    np.testing.assert_allclose(x[:, ~finite], norm.cloud_preprocess(np.zeros_like(edge))[:, ~finite], atol=2e-6)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.6, 0.7)
    np.testing.assert_allclose(prepare(rgb, mean, std, 3000.0)[0],
                               norm.cloud_preprocess(rgb, mean, std, 3000.0), rtol=0, atol=2e-6)

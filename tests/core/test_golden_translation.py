"""Golden regression of the BUNDLED translation models on two REAL Sentinel-1 samples: per-band mean and
standard deviation of the uint16 output, re-measured with scripts/measure_golden_translation.py after the models
were retrained on the real BigEarthNet pairs (2026-12-07, CPU, float32).
A change beyond 1 % (or 2 DN) means the weights, the normalisation, the units decision or the engine changed
what a user gets; if that was intended, re-measure (that script rewrites GOLDEN). The models are marked
experimental: the figures pin behaviour, they say nothing about quality (README, Results)"""
from __future__ import annotations

import numpy as np
import pytest
import rasterio

from sar2eo_cloud_plugin.core import inference, modelfile

GOLDEN = {   # band set -> patch -> (per-band means, per-band standard deviations), DN = reflectance x 10,000
    "nir_swir_re": {"87_48": ([3410.2, 2225.6, 1441.8], [596.0, 323.7, 233.1]),
                    "36_85": ([3284.0, 2081.0, 1302.2], [621.0, 307.9, 211.2])},
    "rgb": {"87_48": ([619.5, 799.1, 487.3], [364.3, 269.7, 222.8]),
            "36_85": ([621.9, 806.3, 490.3], [453.1, 320.0, 287.1])},
    "rgbn": {"87_48": ([491.7, 750.5, 417.1, 3393.7], [132.9, 144.1, 119.2, 702.0]),
             "36_85": ([543.7, 824.1, 464.9, 3450.0], [148.1, 168.3, 132.0, 729.5])},
}


@pytest.mark.parametrize("band_set", sorted(GOLDEN))
def test_bundled_translation_matches_its_golden_figures(band_set, s1_samples, tmp_path):
    if not (modelfile.BUNDLED_DIR / f"sar2eo_{band_set}.json").is_file():
        pytest.fail(f"the bundled sar2eo_{band_set} model is missing")
    for patch, (means, stds) in GOLDEN[band_set].items():
        src = next(p for p in s1_samples if f"_{patch}_" in p.name)
        out = tmp_path / f"{band_set}_{patch}.tif"
        inference.translate_sar_to_eo(inference.TranslationRequest(str(src), str(out), band_set=band_set, device="cpu"))
        with rasterio.open(out) as ds:
            data = ds.read().astype(np.float64)
        got_means, got_stds = data.mean(axis=(1, 2)), data.std(axis=(1, 2))
        np.testing.assert_allclose(got_means, means, rtol=0.01, atol=2.0, err_msg=f"{band_set} {patch} means")
        np.testing.assert_allclose(got_stds, stds, rtol=0.01, atol=2.0, err_msg=f"{band_set} {patch} stds")

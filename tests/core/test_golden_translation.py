"""Golden regression of the BUNDLED translation models on two REAL Sentinel-1 samples: per-band mean and
standard deviation of the uint16 output, as measured when this test was written (2026-12-01, CPU, float32).
A change beyond 1 % (or 2 DN) means the weights, the normalisation, the units decision or the engine changed
what a user gets; if that was intended, re-measure and update the figures. These models are smoke-trained:
the figures pin behaviour, they say nothing about quality (README, Results)."""
from __future__ import annotations

import numpy as np
import pytest
import rasterio

from sar2eo_cloud_plugin.core import inference, modelfile

GOLDEN = {   # band set -> patch -> (per-band means, per-band standard deviations), DN = reflectance x 10,000
    "rgb": {"87_48": ([410.5, 567.3, 279.8], [308.8, 303.7, 171.7]),
            "36_85": ([279.9, 427.9, 185.9], [232.3, 267.1, 135.3])},
    "nir_swir_re": {"87_48": ([3525.3, 1404.3, 1385.8], [810.6, 536.3, 512.8]),
                    "36_85": ([3427.9, 1230.0, 1218.5], [840.1, 514.1, 491.1])},
    "rgbn": {"87_48": ([701.8, 687.2, 433.4, 3508.0], [365.6, 355.1, 239.7, 1201.7]),
             "36_85": ([564.0, 556.3, 329.3, 3381.7], [324.2, 319.9, 205.0, 1265.0])},
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

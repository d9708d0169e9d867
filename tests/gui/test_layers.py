"""Which layers get which layer-tree entries, and the parameters a run builds (GENERATED tiny rasters
where the real samples do not cover a case)."""
from __future__ import annotations

import numpy as np
import pytest
import rasterio
from qgis.core import QgsProject, QgsRasterLayer
from rasterio.transform import from_origin

from sar2eo_cloud_plugin.gui import layers


def write(path, count, descriptions=(), dtype="float32"):
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=count, dtype=dtype, crs="EPSG:32633",
                       transform=from_origin(500000, 5000000, 10, 10)) as dst:
        dst.write(np.ones((count, 8, 8), dtype=dtype))
        for i, d in enumerate(descriptions, 1):
            dst.set_band_description(i, d)
    return QgsRasterLayer(str(path), path.stem)


def test_real_samples(s1_sample, s2_sample):
    s1, s2 = QgsRasterLayer(str(s1_sample), "s1"), QgsRasterLayer(str(s2_sample), "s2")
    assert layers.band_descriptions(s1) == ["VV (dB)", "VH (dB)"]
    assert layers.looks_like_s1(s1) and not layers.looks_like_s2(s1)
    assert layers.looks_like_s2(s2) and not layers.looks_like_s1(s2)
    assert layers.suggested_task(s1) == "translate" and layers.suggested_task(s2) == "cloud_mask"


@pytest.mark.parametrize("count,descriptions,s1,s2,vv_vh", [
    (1, (), False, False, None),                        # one band: neither
    (2, ("VH", "VV"), True, False, (2, 1)),             # swapped polarisations are found by name
    (3, ("VV", "VH", "angle"), True, False, (1, 2)),    # VV/VH named in a 3-band stack: SAR, not optical
    (3, ("B4", "B3", "B2"), False, True, None),         # e.g. a translation output
    (2, ("B2", "B3"), True, False, None),               # two bands: treated as SAR
])
def test_heuristics_on_generated_rasters(tmp_path, count, descriptions, s1, s2, vv_vh):
    layer = write(tmp_path / "GENERATED_test.tif", count, descriptions)
    assert layer.isValid()
    assert layers.looks_like_s1(layer) is s1
    assert layers.looks_like_s2(layer) is s2
    assert layers.sar_bands(layer) == vv_vh


def test_parameters_follow_the_contract(tmp_path, qgis_new_project):
    layer = write(tmp_path / "GENERATED_vhvv.tif", 2, ("VH", "VV"))
    QgsProject.instance().addMapLayer(layer)
    p = layers.build_parameters("translate", layer, device="cuda", band_set="rgbn", tile_size=128, overlap=16,
                                model_file="/x/m.json", output=str(tmp_path / "o.tif"))
    assert p["INPUT"] == layer.id() and p["DEVICE"] == 2 and p["BAND_SET"] == 2
    assert (p["VV_BAND"], p["VH_BAND"]) == (2, 1)
    assert p["TILE_SIZE"] == 128 and p["OVERLAP"] == 16 and p["MODEL_FILE"] == "/x/m.json"
    assert p["OUTPUT"].sink.staticValue() == str(tmp_path / "o.tif")
    assert p["OUTPUT"].destinationName == "GENERATED_vhvv SAR2EO rgbn"
    c = layers.build_parameters("cloud_mask", layer)
    assert c["DEVICE"] == 0 and "BAND_SET" not in c and "MODEL_FILE" not in c
    assert (c["MODEL"], c["MODE"], c["BUFFER"]) == (0, 0, 0.0)
    c = layers.build_parameters("cloud_mask", layer, cloud_model=2, cloud_mode=1, buffer_m=30)
    assert (c["MODEL"], c["MODE"], c["BUFFER"]) == (2, 1, 30.0)
    assert c["OUTPUT"].sink.staticValue() == "TEMPORARY_OUTPUT"
    with pytest.raises(ValueError):
        layers.build_parameters("other", layer)


def test_unique_output_path(tmp_path, s1_sample):
    layer = QgsRasterLayer(str(s1_sample), "my layer/1")
    first = layers.unique_output_path(str(tmp_path), "translate", layer, "rgb")
    assert first == str(tmp_path / "my_layer_1_SAR2EO_rgb.tif")
    open(first, "w").close()
    assert layers.unique_output_path(str(tmp_path), "translate", layer, "rgb").endswith("_2.tif")

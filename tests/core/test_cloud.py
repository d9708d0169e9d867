"""core.cloud, core.s2product and the Sentinel-2 band lookup: card-driven cloud masking without QGIS.

Rasters built here from the real samples are GENERATED (subsets, shifted values, renamed copies) and say
so; models are the GENERATED random-weight files of ``tiny_models`` unless a test names a bundled one.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

from sar2eo_cloud_plugin.core import bands, cloud, modelfile, normalisation as norm, s2product
from sar2eo_cloud_plugin.core.errors import InputError, ModelFileError

REPO = Path(__file__).resolve().parents[2]
SEN1FLOODS_S2 = REPO.parent / "shared" / "data" / "sen1floods11-sample" / "Spain_7370579_S2Hand.tif"


# ------------------------------------------------------------------------------------- band names
@pytest.mark.parametrize("text, band", [
    ("Red Edge 1", "B5"), ("red-edge 3", "B7"), ("Red edge", None), ("Vegetation red edge", None),
    ("SWIR 1.6", "B11"), ("swir22", "B12"), ("SWIR", None), ("NIR narrow", "B8A"), ("Coastal aerosol", "B1"),
    ("Red", "B4"), ("nir", "B8"), ("B8A", "B8A"), ("Band 1", None)])
def test_band_names_are_not_guessed(text, band):
    assert bands.canonical_s2_band(text) == band


def test_four_bands_without_descriptions_are_not_guessed():
    with pytest.raises(InputError, match=r"Band map.*B2=1, B3=2, B4=3, B8=4"):
        bands.find_s2_bands(["B2", "B3", "B4", "B8"], 4, [None] * 4)
    numbers, how = bands.find_s2_bands(["B2", "B3", "B4", "B8"], 4, [None] * 4, {"B2": 4, "B3": 3, "B4": 2, "B8": 1})
    assert numbers == (4, 3, 2, 1) and "set by the user" in how


def test_red_edge_is_not_red():
    with pytest.raises(InputError, match=r"B4.*1:Red Edge 1"):
        bands.find_s2_bands(["B4", "B3", "B2"], 3, ["Red Edge 1", "Green", "Blue"])


def test_band_map_parsing():
    assert bands.parse_band_map("B2=1; b03 = 2, B4=3,B8=4", 4) == {"B2": 1, "B3": 2, "B4": 3, "B8": 4}
    with pytest.raises(InputError, match="B2=7.*band 7 does not exist"):
        bands.parse_band_map("B2=7", 4)
    with pytest.raises(InputError, match="not of the form"):
        bands.parse_band_map("blue:1", 4)


# ------------------------------------------------------------------------------------ level, offset
@pytest.mark.parametrize("count, desc, tags, name, level", [
    (13, [None] * 13, {}, "scene.tif", "L1C"),
    (12, list(bands.S2_L2A_ORDER), {}, "scene.tif", "L2A"),
    (13, list(bands.S2_L1C_ORDER), {}, "S2A_MSIL2A_x.tif", "L1C"),        # a B10 band outweighs the name
    (4, ["B2", "B3", "B4", "B8"], {}, "S2B_MSIL1C_20230102T1_N0509_R1.tif", "L1C"),
    (4, ["B2", "B3", "B4", "B8"], {"PROCESSING_LEVEL": "Level-2A"}, "x.tif", "L2A"),
    (4, ["B2", "B3", "B4", "B8"], {}, "north_L1C.tif", "L1C"),
    (4, ["B2", "B3", "B4", "B8"], {}, "x.tif", None)])
def test_level_detection(count, desc, tags, name, level):
    assert s2product.decide_level("auto", count, desc, tags, name).value == level


def test_level_set_by_the_user_and_unknown_value():
    assert s2product.decide_level("L2A", 13, [None] * 13, {}, "x.tif").value == "L2A"
    with pytest.raises(InputError, match="Unknown product level"):
        s2product.decide_level("L3", 4, [None] * 4, {}, "x.tif")


@pytest.mark.parametrize("tags, band_tags, name, offset, why", [
    ({"BOA_ADD_OFFSET": "-1000"}, [], "x.tif", -1000.0, "BOA_ADD_OFFSET"),
    ({}, [{"RADIO_ADD_OFFSET": "-1000"}], "x.tif", -1000.0, "band 1"),
    ({}, [], "S2B_MSIL1C_20210102T101_N0209_R022.tif", 0.0, "baseline 02.09"),
    ({}, [], "S2B_MSIL1C_20211102T101_N0400_R022.tif", -1000.0, "baseline 04.00"),
    ({}, [], "S2A_MSIL2A_20230613T101031.tif", -1000.0, "2022-01-25"),
    ({}, [], "S2A_MSIL2A_20170613T101031.tif", 0.0, "before"),
    ({"PRODUCT_START_TIME": "2024-05-01T10:00:00"}, [], "x.tif", -1000.0, "PRODUCT_START_TIME"),
    ({}, [], "x.tif", 0.0, "assuming no offset")])
def test_offset_decision(tags, band_tags, name, offset, why):
    decision = s2product.decide_offset("auto", tags, band_tags, name)
    assert decision.value == offset and why in decision.reason


def test_offset_set_by_the_user_wins():
    assert s2product.decide_offset("none", {"BOA_ADD_OFFSET": "-1000"}, [], "x.tif").value == 0.0
    assert s2product.decide_offset("-1000", {}, [], "S2A_MSIL2A_20170613T1.tif").value == -1000.0


# ------------------------------------------------------------------------------------------ cards
def spec_of(card: modelfile.ModelCard) -> cloud.CloudModelSpec:
    return cloud.CloudModelSpec.from_card(card, Path(card.name + ".json"))


def test_seed_and_legacy_cards_read_the_same():
    from sar2eo_cloud_plugin.core import cards

    new = spec_of(cards.cloudmask_card())
    legacy = cards.cloudmask_card()
    legacy.input = {"bands": ["B4", "B3", "B2"], "units": "Sentinel-2 digital numbers (reflectance x 10000)"}
    legacy.normalisation = {"clip_dn": 4000.0, "scale_to": 255, "mean": list(norm.IMAGENET_MEAN),
                            "std": list(norm.IMAGENET_STD)}
    legacy.output = {"classes": {"0": "clear", "1": "cloud (thin + thick)"}, "activation": "sigmoid", "threshold": 0.5}
    old = spec_of(legacy)
    assert (old.bands, old.method, old.clip, old.mean, old.units, old.class_values) == \
           (new.bands, new.method, new.clip, new.mean, new.units, new.class_values) == \
           (("B4", "B3", "B2"), "clip_mean_std", (4000.0,) * 3, norm.IMAGENET_MEAN, "dn", (0, 1))


@pytest.mark.parametrize("field, value, message", [
    (("input", "bands"), ["B2", "B3", "Red edge", "B8"], "Sentinel-2 band names"),
    (("input", "bands"), ["B2", "B3", "B4"], "in_channels is 4"),
    (("input", "units"), "percent", "input.units"),
    (("normalisation", "std"), [0.1, 0.0, 0.1, 0.1], "std must be > 0"),
    (("normalisation", "mean"), [0.1], "one number per input band"),
    (("output", "activation"), "relu", "output.activation"),
    (("input", "resolution_m"), -5, "resolution_m"),
    (("input", "level"), "L3", "input.level")])
def test_bad_cloud_cards_name_the_field(field, value, message):
    from tests.conftest import tiny_cloud_shadow_card

    card = tiny_cloud_shadow_card()
    getattr(card, field[0])[field[1]] = value
    with pytest.raises(ModelFileError, match=message):
        spec_of(card)


# ---------------------------------------------------------------------------------- preprocessing
def test_prepare_matches_the_training_definitions():
    """clip_mean_std is the seed's cloud_preprocess (training's definition); mean_std is (DN/10^4 - m)/s."""
    from sar2eo_cloud_plugin.core import cards
    from tests.conftest import tiny_cloud_shadow_card

    rng = np.random.default_rng(0)
    raw = rng.uniform(0, 9000, (3, 17, 23)).astype(np.float32)   # GENERATED digital numbers
    raw[:, 0, 0] = 0.0                                            # nodata pixel (0 in every band)
    x, valid = cloud.make_prepare(spec_of(cards.cloudmask_card()), 0.0)(raw)
    np.testing.assert_allclose(x[:, 1:], norm.cloud_preprocess(raw)[:, 1:], atol=2e-6)
    assert not valid[0, 0] and valid.sum() == 17 * 23 - 1

    spec = spec_of(tiny_cloud_shadow_card())
    raw4 = rng.uniform(1000, 9000, (4, 5, 6)).astype(np.float32)
    x, _valid = cloud.make_prepare(spec, -1000.0)(raw4)
    expected = ((raw4 - 1000.0) / 10000.0 - np.reshape(spec.mean, (4, 1, 1))) / np.reshape(spec.std, (4, 1, 1))
    np.testing.assert_allclose(x, expected, rtol=1e-5, atol=1e-5)


def test_values_a_reflectance_model_must_not_get():
    from tests.conftest import tiny_cloud_shadow_card

    spec = spec_of(tiny_cloud_shadow_card())
    with pytest.raises(InputError, match="8-bit imagery"):
        cloud.check_values(np.full((4, 20, 20), 120, np.float32), spec, "uint8", 0.0, "rgb.png", (1, 2, 3, 4))
    with pytest.raises(InputError, match="reflectance in 0..1"):
        cloud.check_values(np.full((4, 20, 20), 0.2, np.float32), spec, "float32", 0.0, "refl", (1, 2, 3, 4))
    with pytest.raises(InputError, match="only nodata"):
        cloud.check_values(np.zeros((4, 20, 20), np.float32), spec, "uint16", 0.0, "zeros", (1, 2, 3, 4))
    with pytest.raises(InputError, match="Offset parameter to 'none'"):
        cloud.check_values(np.full((4, 20, 20), 300, np.float32), spec, "uint16", -1000.0, "dark", (1, 2, 3, 4))


# ------------------------------------------------------------------------------------- resolution
def test_pixel_size_in_metres(s2_sample):
    with rasterio.open(s2_sample) as src:
        assert cloud.pixel_size_m(src) == pytest.approx(10.0)
    with rasterio.open(SEN1FLOODS_S2) as src:
        # the real EPSG:4326 scene: square pixels of 8.98e-5 degrees, ~10 m north-south and ~7.5 m east-west
        # at its latitude (Spain, ~41 deg N); the geometric mean of the two is the pixel's size
        lat = np.radians((src.bounds.top + src.bounds.bottom) / 2)
        expected = np.sqrt(src.res[0] * 111320 * np.cos(lat) * src.res[1] * 110950)
        assert cloud.pixel_size_m(src) == pytest.approx(expected, rel=0.01)
        assert 8.0 < cloud.pixel_size_m(src) < 9.5


def test_predictor_activations():
    import torch

    from sar2eo_cloud_plugin.core.inference import TorchPredictor

    batch = np.random.default_rng(0).normal(size=(2, 3, 8, 8)).astype(np.float32)   # GENERATED logits
    probs = TorchPredictor(torch.nn.Identity(), "cpu", activation="softmax")(batch)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(TorchPredictor(torch.nn.Identity(), "cpu", activation="sigmoid")(batch),
                               1 / (1 + np.exp(-batch)), rtol=1e-6)


def test_network_grid_averages_and_ignores_nodata(s2_sample, tmp_path):
    """The VRT on a grid twice as coarse holds the 2x2 means of the real sample's bands; 0 (Sentinel-2's
    nodata) is left out of a mean, and a block of zeros stays 0 (nodata)."""
    from sar2eo_cloud_plugin.core import regrid

    with rasterio.open(s2_sample) as src:
        data = src.read([2, 8]).astype(np.float64)
    holed = data.copy()
    holed[:, 0, 0] = 0                    # one zero in the first 2x2 block
    holed[:, 2:4, 2:4] = 0                # a whole block of zeros
    src_path = write_like(s2_sample, tmp_path / "holed.tif", holed.astype(np.uint16))
    vrt, grid = regrid.network_grid(str(src_path), [1, 2], 2.0, str(tmp_path))
    assert (grid.width, grid.height) == (60, 60)
    with rasterio.open(vrt) as ds:
        coarse = ds.read().astype(np.float64)
        assert ds.transform.a == pytest.approx(20.0) and ds.bounds == rasterio.open(s2_sample).bounds
    means = data.reshape(2, 60, 2, 60, 2).mean(axis=(2, 4))
    assert np.abs(coarse[:, 5:, 5:] - means[:, 5:, 5:]).max() <= 0.5          # rounding to uint16
    assert coarse[0, 0, 0] == pytest.approx(np.mean(data[0, :2, :2].ravel()[1:]), abs=0.5)
    assert (coarse[:, 1, 1] == 0).all()


def test_averaged_grid_is_read_while_it_fills(s2_sample, tmp_path, monkeypatch):
    """The engine's reader may ask for rows before they are averaged: it waits for them and gets what the finished
    grid holds; the engine run on the grid in memory writes what it writes from the grid written to a file."""
    from rasterio.windows import Window

    from sar2eo_cloud_plugin.core import regrid
    from sar2eo_cloud_plugin.core.engine import OutputSpec, TilingOptions, run_tiled

    path, _grid = regrid.network_grid(str(s2_sample), [2, 8], 2.0, str(tmp_path))
    with rasterio.open(path) as ds:
        whole = ds.read()
    real = regrid.AveragedGrid._average
    monkeypatch.setattr(regrid.AveragedGrid, "_average",
                        lambda self, r0, r1: (time.sleep(0.05), real(self, r0, r1))[1])   # slow strips
    with regrid.AveragedGrid(str(s2_sample), [2, 8], 2.0, str(tmp_path), rows=8) as grid:
        bottom = grid.read([2], Window(10, 50, 20, 10), out_dtype="uint16")         # waits for the last strips
        np.testing.assert_array_equal(bottom[0], whole[1, 50:60, 10:30])
    outs = {}
    for name, source in (("file", path), ("memory", None)):
        out = tmp_path / f"{name}.tif"
        spec = OutputSpec(path=str(out), count=2, dtype="float32", nodata=-1.0, convert=lambda d, v: d)
        with regrid.AveragedGrid(str(s2_sample), [2, 8], 2.0, str(tmp_path), rows=16) as grid:
            run_tiled(source or grid, [1, 2], lambda raw: (raw, np.ones(raw.shape[1:], bool)), lambda x: x, 2,
                      [spec], TilingOptions(tile_size=32, overlap=8, batch_size=2))
        with rasterio.open(out) as ds:
            outs[name] = ds.read()
    np.testing.assert_array_equal(outs["memory"], outs["file"])


def test_averaged_grid_hands_a_failure_to_its_reader_and_stops_when_closed(s2_sample, tmp_path, monkeypatch):
    """A strip that cannot be averaged is the reader's error (not a hang); a grid closed while it fills stops
    and a read after it is a cancel."""
    import threading

    from rasterio.windows import Window

    from sar2eo_cloud_plugin.core import regrid
    from sar2eo_cloud_plugin.core.errors import CancelledError

    def broken(self, r0, r1):
        raise OSError("read error in the layer")

    monkeypatch.setattr(regrid.AveragedGrid, "_average", broken)
    with regrid.AveragedGrid(str(s2_sample), [2, 8], 2.0, str(tmp_path), rows=8) as grid:
        with pytest.raises(OSError, match="read error"):
            grid.read([1], Window(0, 0, 5, 5))
    release = threading.Event()
    monkeypatch.setattr(regrid.AveragedGrid, "_average", lambda self, r0, r1: release.wait(5))
    grid = regrid.AveragedGrid(str(s2_sample), [2, 8], 2.0, str(tmp_path), rows=8)
    threading.Timer(0.2, release.set).start()     # the strips in flight end after close() has stopped the filling
    grid.close()
    with pytest.raises(CancelledError):
        grid.read([1], Window(0, 50, 5, 5))
    assert not grid._thread.is_alive()


# ------------------------------------------------------------------------------------------ buffer
def test_buffer_matches_a_whole_image_dilation(tmp_path):
    """Strip by strip (strips of 7 rows, radius 3.5 px) equals a dilation of the whole raster; cloud wins
    over shadow; nodata is never overwritten. The mask is GENERATED."""
    from rasterio.transform import from_origin
    from scipy import ndimage

    rng = np.random.default_rng(1)
    mask = np.zeros((40, 33), np.uint8)
    mask[rng.random(mask.shape) < 0.02] = cloud.CLOUD
    mask[rng.random(mask.shape) < 0.02] = cloud.SHADOW
    mask[30:, :5] = cloud.MASK_NODATA
    src, dst = tmp_path / "m.tif", tmp_path / "b.tif"
    with rasterio.open(src, "w", driver="GTiff", width=33, height=40, count=1, dtype="uint8", nodata=255,
                       crs="EPSG:32633", transform=from_origin(0, 0, 10, 10)) as ds:
        ds.write(mask[None])
    cloud.buffer_classes(str(src), str(dst), 3.5, rows=7)
    expected = mask.copy()
    for value in (cloud.SHADOW, cloud.CLOUD):
        near = ndimage.distance_transform_edt(mask != value) <= 3.5
        expected[near & (mask != cloud.MASK_NODATA)] = value
    with rasterio.open(dst) as ds:
        got = ds.read(1)
        assert ds.transform == from_origin(0, 0, 10, 10) and ds.nodata == 255
    np.testing.assert_array_equal(got, expected)
    assert [p.name for p in tmp_path.iterdir()] and not list(tmp_path.glob(".*partial*"))


# --------------------------------------------------------------------------------- model selection
@pytest.fixture
def models_dir(tiny_models, tmp_path):
    """GENERATED copies of the tiny models under the bundled names auto looks for."""
    folder = tmp_path / "models"
    folder.mkdir()
    for src, name in (("tiny_cloud_shadow", "ukis_csmask_4b_l2a"), ("cloudmask", "cloudmask")):
        card = json.loads((tiny_models / f"{src}.json").read_text())
        card["name"] = name
        card["weights"]["file"] = f"{name}.safetensors"
        (folder / f"{name}.json").write_text(json.dumps(card))
        shutil.copy(tiny_models / f"{src}.safetensors", folder / f"{name}.safetensors")
    return folder


def test_auto_picks_by_the_bands_present(models_dir):
    card, why = cloud.select_model(["B2", "B3", "B4", "B8"], "L2A", models_dir)
    assert card.name == "ukis_csmask_4b_l2a.json" and "best bundled model" in why
    card, why = cloud.select_model(["B2", "B3", "B4"], "L2A", models_dir)
    assert card.name == "cloudmask.json" and "WEAKER" in why
    with pytest.raises(InputError, match="No bundled cloud model fits"):
        cloud.select_model(["B8", "B11"], "L2A", models_dir)


def test_auto_skips_a_model_without_weights(models_dir):
    (models_dir / "ukis_csmask_4b_l2a.safetensors").unlink()
    lines = []
    card, _why = cloud.select_model(["B2", "B3", "B4", "B8"], "L2A", models_dir, log=lines.append)
    assert card.name == "cloudmask.json" and any("would fit but is not installed" in line for line in lines)


# ------------------------------------------------------------------------------------- whole runs
def test_offset_metadata_gives_the_same_mask(s2_sample, tmp_path):
    """The real L2A sample, and a GENERATED copy whose DNs are shifted by +1000 and declared so
    (BOA_ADD_OFFSET=-1000, as baseline 04.00 products are): the bundled default model gives the same mask."""
    shifted = tmp_path / "shifted.tif"
    with rasterio.open(s2_sample) as src:
        profile, data, desc = src.profile, src.read(), src.descriptions
    with rasterio.open(shifted, "w", **profile) as dst:
        dst.write(data + np.uint16(1000))
        dst.descriptions = desc
        dst.update_tags(BOA_ADD_OFFSET="-1000")
    masks = []
    for i, path in enumerate((s2_sample, shifted)):
        out = tmp_path / f"m{i}.tif"
        res = cloud.cloud_mask(cloud.CloudMaskRequest(str(path), str(out), level="L2A"))
        assert res.model.startswith("ukis_csmask_4b") and res.offset == (-1000.0 if i else 0.0)
        with rasterio.open(out) as ds:
            masks.append(ds.read(1))
    np.testing.assert_array_equal(masks[0], masks[1])


def test_geographic_l1c_scene_runs_at_the_model_resolution(tmp_path):
    """The real 13-band L1C scene in EPSG:4326: level L1C from B10, pixels of ~8.9 m measured at the scene,
    the network at 30 m (a factor of ~3.4), output on the input's grid."""
    lines = []
    out = tmp_path / "spain.tif"
    res = cloud.cloud_mask(cloud.CloudMaskRequest(str(SEN1FLOODS_S2), str(out)), log=lines.append)
    assert res.level == "L1C" and res.model == "ukis_csmask_4b_l1c" and 3.1 < res.scale < 3.7
    with rasterio.open(out) as ds, rasterio.open(SEN1FLOODS_S2) as src:
        assert (ds.width, ds.height, ds.crs, ds.transform) == (src.width, src.height, src.crs, src.transform)
        mask = ds.read(1)
    assert set(np.unique(mask)) <= {0, 1, 2, 255}
    assert res.fraction("cloud") < 0.02    # the README of the data: clear sky
    assert any("B10 (cirrus)" in line for line in lines)


# ----------------------------------------------------------------------- mechanics (random models)
def same_grid(a, b) -> bool:
    with rasterio.open(a) as x, rasterio.open(b) as y:
        return (x.width, x.height, x.crs, x.transform) == (y.width, y.height, y.crs, y.transform)


def write_like(src_path: Path, dst_path: Path, data: np.ndarray, **tags) -> Path:
    with rasterio.open(src_path) as src:
        profile, desc = src.profile | {"count": data.shape[0], "dtype": data.dtype.name}, src.descriptions
    with rasterio.open(dst_path, "w", **profile) as dst:
        dst.write(data)
        if len(desc) == data.shape[0]:
            dst.descriptions = desc
        dst.update_tags(**tags)
    return dst_path


def test_rgb_model_on_a_real_patch(tmp_path, s2_sample, tiny_models):
    dst, prob = tmp_path / "mask.tif", tmp_path / "prob.tif"
    logs = []
    res = cloud.cloud_mask(cloud.CloudMaskRequest(str(s2_sample), str(dst), probability_path=str(prob), device="cpu",
                                                  model_path=str(tiny_models / "cloudmask.json"), tile_size=64,
                                                  overlap=16), log=logs.append)
    assert res.outputs == {"OUTPUT": str(dst), "PROBABILITY": str(prob)}
    assert any("B4=4, B3=3, B2=2" in m for m in logs)
    with rasterio.open(dst) as m, rasterio.open(prob) as p:
        assert m.dtypes == ("uint8",) and m.nodata == 255 and p.dtypes == ("float32",) * 2 and p.nodata == -1
        assert p.descriptions == ("probability of clear", "probability of cloud")
        mask, pr = m.read(1), p.read()
    assert same_grid(dst, s2_sample) and same_grid(prob, s2_sample)
    assert set(np.unique(mask)) <= {0, 1}
    np.testing.assert_allclose(pr[0] + pr[1], 1.0, atol=1e-6)
    np.testing.assert_array_equal(mask, (pr[1] >= res.threshold).astype(np.uint8))
    assert res.fraction("cloud") == pytest.approx(mask.mean()) and res.valid_pixels == 120 * 120


def test_softmax_model_classes_and_probabilities(tmp_path, s2_sample, tiny_models):
    """The ukis-style card (B2, B3, B4, B8 reflectance, 30 m, softmax): class = argmax of the blended
    probabilities, one probability band per class, counts per class."""
    dst, prob = tmp_path / "mask.tif", tmp_path / "prob.tif"
    res = cloud.cloud_mask(cloud.CloudMaskRequest(str(s2_sample), str(dst), probability_path=str(prob),
                                                  model_path=str(tiny_models / "tiny_cloud_shadow.json")))
    assert res.scale == pytest.approx(3.0)
    with rasterio.open(dst) as m, rasterio.open(prob) as p:
        mask, pr = m.read(1), p.read()
        assert p.count == 3 and "2 shadow" in m.descriptions[0]
    np.testing.assert_allclose(pr.sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(mask, np.argmax(pr, axis=0))
    assert {k: int((mask == v).sum()) for k, v in (("clear", 0), ("cloud", 1), ("shadow", 2))} == res.class_pixels
    only = tmp_path / "only.tif"
    cloud.cloud_mask(cloud.CloudMaskRequest(str(s2_sample), str(only), mode="cloud_only",
                                            model_path=str(tiny_models / "tiny_cloud_shadow.json")))
    with rasterio.open(only) as m:
        np.testing.assert_array_equal(m.read(1), (mask == 1).astype(np.uint8))


def test_nodata_block_and_threshold(tmp_path, s2_sample, tiny_models):
    """The real sample with a GENERATED zero (nodata) block."""
    with rasterio.open(s2_sample) as s:
        data = s.read()
    data[:, :30, :] = 0
    src = write_like(s2_sample, tmp_path / "in.tif", data)
    res = cloud.cloud_mask(cloud.CloudMaskRequest(str(src), str(tmp_path / "m.tif"), threshold=0.3,
                                                  model_path=str(tiny_models / "cloudmask.json"), tile_size=128))
    with rasterio.open(tmp_path / "m.tif") as m:
        mask = m.read(1)
    assert (mask[:30] == 255).all() and set(np.unique(mask[30:])) <= {0, 1}
    assert res.threshold == 0.3 and res.valid_pixels == 90 * 120


def test_bad_requests_leave_nothing(tmp_path, s2_sample, s1_sample, tiny_models):
    model = str(tiny_models / "cloudmask.json")
    out = tmp_path / "m.tif"
    with pytest.raises(InputError, match="Threshold"):
        cloud.cloud_mask(cloud.CloudMaskRequest(str(s2_sample), str(out), threshold=1.5, model_path=model))
    with pytest.raises(InputError, match="bands seen"):
        cloud.cloud_mask(cloud.CloudMaskRequest(str(s1_sample), str(out), model_path=model))
    with pytest.raises(InputError, match="Unknown mode"):
        cloud.cloud_mask(cloud.CloudMaskRequest(str(s2_sample), str(out), model_path=model, mode="fog"))
    with pytest.raises(InputError, match="multiple of 32"):
        cloud.cloud_mask(cloud.CloudMaskRequest(str(s2_sample), str(out), model_path=model, tile_size=100))
    with pytest.raises(InputError, match="No bundled cloud model named 'fog'"):
        cloud.cloud_mask(cloud.CloudMaskRequest(str(s2_sample), str(out), model="fog"))
    with rasterio.open(s2_sample) as s:
        refl = (s.read([4, 3, 2]) / 10000.0).astype(np.float32)   # the real sample scaled to 0..1 (derived)
    src = tmp_path / "refl.tif"
    with rasterio.open(s2_sample) as s:
        profile = s.profile | {"count": 3, "dtype": "float32"}
    with rasterio.open(src, "w", **profile) as dst:
        dst.write(refl)
        dst.descriptions = ("B4", "B3", "B2")
    with pytest.raises(InputError, match="reflectance in 0..1"):
        cloud.cloud_mask(cloud.CloudMaskRequest(str(src), str(out), model_path=model))
    with pytest.raises(InputError, match="Unknown precision 'int8'"):
        cloud.cloud_mask(cloud.CloudMaskRequest(str(s2_sample), str(out), model_path=model, precision="int8"))
    assert not out.exists()


def test_band_map_on_an_undescribed_layer(tmp_path, s2_sample, tiny_models):
    """GENERATED 4-band subset of the real sample (B8, B4, B3, B2 order, no descriptions): refused without a
    band map, and with one the same mask as the full stack."""
    model = str(tiny_models / "tiny_cloud_shadow.json")
    with rasterio.open(s2_sample) as s:
        sub, profile = s.read([8, 4, 3, 2]), s.profile | {"count": 4}
    src = tmp_path / "s2_B8B4B3B2_nodesc.tif"
    with rasterio.open(src, "w", **profile) as dst:
        dst.write(sub)
    with pytest.raises(InputError, match="Band map"):
        cloud.cloud_mask(cloud.CloudMaskRequest(str(src), str(tmp_path / "x.tif"), model_path=model))
    ref, out = tmp_path / "ref.tif", tmp_path / "m.tif"
    cloud.cloud_mask(cloud.CloudMaskRequest(str(s2_sample), str(ref), model_path=model))
    cloud.cloud_mask(cloud.CloudMaskRequest(str(src), str(out), model_path=model, band_map="B8=1, B4=2, B3=3, B2=4"))
    with rasterio.open(ref) as a, rasterio.open(out) as b:
        np.testing.assert_array_equal(a.read(1), b.read(1))


def test_resolution_matches_a_manual_forward(tmp_path, s2_sample, tiny_models):
    """resolution_m=20 on the real 10 m sample: the probability equals 2x2 means of the bands -> preprocess ->
    reflect pad -> U-Net -> softmax -> bilinear sampling at the 10 m pixel centres, done by hand."""
    import torch
    import torch.nn.functional as F

    model = tiny_models / "tiny_cloud_shadow.json"
    prob = tmp_path / "p.tif"
    logs = []
    res = cloud.cloud_mask(cloud.CloudMaskRequest(str(s2_sample), str(tmp_path / "m.tif"), probability_path=str(prob),
                                                  model_path=str(model), resolution_m=20, tile_size=64, overlap=0),
                           log=logs.append)
    assert res.scale == 2 and any("the network runs at 20 m" in m for m in logs)
    spec = cloud.read_spec(model)
    with rasterio.open(s2_sample) as s, rasterio.open(prob) as p:
        dn = s.read([2, 3, 4, 8]).astype(np.float64)
        got = p.read()
        assert same_grid(prob, s2_sample)
    coarse_dn = np.rint(dn.reshape(4, 60, 2, 60, 2).mean(axis=(2, 4))).astype(np.float32)   # GDAL's average
    x, _valid = cloud.make_prepare(spec, 0.0)(coarse_dn)
    x = np.pad(x, ((0, 0), (0, 4), (0, 4)), mode="reflect")
    net, _card = modelfile.load_model(model, "cloudmask")
    with torch.inference_mode():
        y = torch.softmax(net(torch.from_numpy(x)[None]), dim=1)[:, :, :60, :60]
        y = F.interpolate(y, size=(120, 120), mode="bilinear", align_corners=False)[0].numpy()
    np.testing.assert_allclose(got, y, atol=2e-4)


def test_bfloat16_close_to_float32(tmp_path, s2_sample, tiny_models):
    model = str(tiny_models / "tiny_cloud_shadow.json")
    probs = {}
    for precision in ("float32", "bfloat16"):
        logs = []
        cloud.cloud_mask(cloud.CloudMaskRequest(str(s2_sample), str(tmp_path / f"m_{precision}.tif"),
                                                probability_path=str(tmp_path / f"p_{precision}.tif"),
                                                model_path=model, precision=precision), log=logs.append)
        with rasterio.open(tmp_path / f"p_{precision}.tif") as p:
            probs[precision] = p.read()
        assert any("precision: bfloat16" in m for m in logs) == (precision == "bfloat16")
    assert np.abs(probs["float32"] - probs["bfloat16"]).max() < 0.05
    assert (probs["float32"].argmax(0) == probs["bfloat16"].argmax(0)).mean() > 0.98


def test_failed_run_keeps_an_earlier_output(tmp_path, s2_sample, tiny_models):
    dst = tmp_path / "mask.tif"
    dst.write_bytes(b"an earlier result")
    model = tiny_models / "cloudmask.json"
    with pytest.raises(InputError):
        cloud.cloud_mask(cloud.CloudMaskRequest(str(s2_sample), str(dst), model_path=str(model),
                                                buffer_m=30, tile_size=100))
    from sar2eo_cloud_plugin.core.errors import CancelledError

    with pytest.raises(CancelledError):
        cloud.cloud_mask(cloud.CloudMaskRequest(str(s2_sample), str(dst), model_path=str(model),
                                                buffer_m=30, tile_size=32, overlap=0), is_cancelled=lambda: True)
    assert dst.read_bytes() == b"an earlier result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.tif"]


def test_default_model_does_not_call_bright_fields_cloud(tmp_path, s2_sample):
    """Regression for the seed's rule-trained model: on the real June 2017 patch 33UUP_87_48 (clear sky,
    bright bare fields) it marked 26 % of the pixels as cloud. The bundled default finds (almost) none."""
    res = cloud.cloud_mask(cloud.CloudMaskRequest(str(s2_sample), str(tmp_path / "m.tif")))
    assert res.model == "ukis_csmask_4b_l2a"
    assert res.fraction("cloud") < 0.01


def test_model_loads_beside_the_averaging_and_logs_on_the_callers_thread(tmp_path, s2_sample, monkeypatch):
    """The network loads on a thread of its own while the input is averaged onto the 30 m grid; what loading it
    logs reaches the caller's log on the caller's thread (QGIS feedback is not thread-safe), and its error is
    the run's error, with nothing written."""
    import threading

    from sar2eo_cloud_plugin.core import runtime

    threads, lines = set(), []

    def log(line):
        threads.add(threading.current_thread().name)
        lines.append(line)

    loaded_on = []
    real = runtime.load_predictor

    def spying(*args, **kwargs):
        loaded_on.append(threading.current_thread().name)
        kwargs["log"]("loading the network")
        return real(*args, **kwargs)

    monkeypatch.setattr(cloud, "load_predictor", spying)
    cloud.cloud_mask(cloud.CloudMaskRequest(str(s2_sample), str(tmp_path / "m.tif")), log=log)
    assert loaded_on[0].startswith("sar2eo-load")
    assert threads == {threading.current_thread().name}
    assert "loading the network" in lines

    def failing(*_args, **_kwargs):
        raise ModelFileError("the graph is damaged")

    monkeypatch.setattr(cloud, "load_predictor", failing)
    with pytest.raises(ModelFileError, match="damaged"):
        cloud.cloud_mask(cloud.CloudMaskRequest(str(s2_sample), str(tmp_path / "n.tif")))
    assert not (tmp_path / "n.tif").exists()


@pytest.mark.parametrize("mode", ["file", "stream"])
@pytest.mark.parametrize("fine_shape", [(60, 90), (50, 75)])      # factor 3 and 2.5
def test_probabilities_back_on_the_input_grid_strip_by_strip(tmp_path, fine_shape, mode):
    """regrid.to_input_grid in strips of a few rows (mode "file"), or StreamingBackSampler fed the coarse rows in
    bands and column chunks as the engine hands them over (mode "stream"), equals bilinear sampling of the whole
    coarse image (torch's grid_sample) with nodata neighbours left out of the weights; nodata of the input's band
    is nodata in the output. GENERATED rasters."""
    import torch
    import torch.nn.functional as F
    from rasterio.transform import from_bounds

    from sar2eo_cloud_plugin.core import regrid
    from sar2eo_cloud_plugin.core.engine import OutputSpec

    rng = np.random.default_rng(3)
    hc, wc, (h, w) = 20, 30, fine_shape
    coarse = rng.dirichlet(np.ones(3), size=(hc, wc)).transpose(2, 0, 1).astype(np.float32)
    coarse[:, 5:8, 10:14] = cloud.PROB_NODATA
    bounds = (0, 0, 900, 600)
    cpath, spath = tmp_path / "coarse.tif", tmp_path / "src.tif"
    with rasterio.open(cpath, "w", driver="GTiff", width=wc, height=hc, count=3, dtype="float32",
                       nodata=cloud.PROB_NODATA, crs="EPSG:32633", transform=from_bounds(*bounds, wc, hc)) as ds:
        ds.write(coarse)
    band = np.full((h, w), 500, np.uint16)
    band[-4:, :3] = 0                                              # input nodata at the fine resolution
    with rasterio.open(spath, "w", driver="GTiff", width=w, height=h, count=1, dtype="uint16",
                       crs="EPSG:32633", transform=from_bounds(*bounds, w, h)) as ds:
        ds.write(band[None])
    keep = lambda prob, valid: np.where(valid[None], prob, cloud.PROB_NODATA).astype(np.float32)  # noqa: E731
    out = tmp_path / "fine.tif"
    outputs = [OutputSpec(path=str(out), count=3, dtype="float32", nodata=cloud.PROB_NODATA, convert=keep)]
    if mode == "file":
        regrid.to_input_grid(str(cpath), cloud.PROB_NODATA, str(spath), 1, outputs, rows=7)
    else:
        sampler = regrid.StreamingBackSampler((3, hc, wc), cloud.PROB_NODATA, str(spath), 1, outputs, rows=7)
        try:
            for r0 in range(0, hc, 6):          # bands of 6 rows, chunks of 8 columns, top to bottom, left to right
                for c0 in range(0, wc, 8):
                    sampler.feed(coarse[:, r0:r0 + 6, c0:c0 + 8])
            sampler.finish()
        finally:
            sampler.close()
    known = (coarse[0] != cloud.PROB_NODATA).astype(np.float32)
    stack = torch.from_numpy(np.concatenate([np.where(known > 0, coarse, 0), known[None]]))[None]
    ys = (np.arange(h) + 0.5) * hc / h - 0.5
    xs = (np.arange(w) + 0.5) * wc / w - 0.5
    grid = torch.from_numpy(np.stack(np.meshgrid((2 * xs + 1) / wc - 1, (2 * ys + 1) / hc - 1), -1)[None]).float()
    ref = F.grid_sample(stack, grid, mode="bilinear", padding_mode="border", align_corners=False)[0].numpy()
    expected = ref[:3] / np.maximum(ref[3], 1e-6)
    valid = (ref[3] > 1e-6) & (band != 0)
    expected[:, ~valid] = cloud.PROB_NODATA
    with rasterio.open(out) as ds:
        got = ds.read()
        assert (ds.width, ds.height) == (w, h)
    np.testing.assert_allclose(got, expected, atol=2e-5)
    assert (got[:, -4:, :3] == cloud.PROB_NODATA).all()


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
@pytest.mark.parametrize("fine_shape", [(90, 120), (75, 100)])      # factor 3 and 2.5
def test_class_raster_decided_without_interpolating_equals_the_interpolated_one(tmp_path, fine_shape, activation):
    """BackSampler with ``decide`` (pixels between coarse pixels of one class take that class uninterpolated) writes
    the class raster that deciding the fully interpolated probabilities writes, nodata included. GENERATED
    probabilities: 4 x 5 px patches of one dominant class (so most pixels take the fast way), noise, a nodata hole
    and input nodata at the fine resolution."""
    from rasterio.transform import from_bounds

    from sar2eo_cloud_plugin.core import regrid
    from sar2eo_cloud_plugin.core.engine import OutputSpec

    rng = np.random.default_rng(7)
    hc, wc, (h, w) = 30, 40, fine_shape
    channels = 3 if activation == "softmax" else 1
    winner = np.kron(rng.integers(0, 3, size=(8, 8)), np.ones((4, 5), int))[:hc, :wc]
    coarse = rng.dirichlet(np.ones(3), size=(hc, wc)).transpose(2, 0, 1).astype(np.float32) * 0.3
    np.put_along_axis(coarse, winner[None], 0.7 + 0.3 * rng.random((1, hc, wc), dtype=np.float32), axis=0)
    coarse = coarse[:channels]
    coarse[:, 12:15, 20:26] = cloud.PROB_NODATA
    bounds = (0, 0, 1200, 900)
    spath = tmp_path / "src.tif"
    band = np.full((h, w), 500, np.uint16)
    band[-5:, :4] = 0
    with rasterio.open(spath, "w", driver="GTiff", width=w, height=h, count=1, dtype="uint16",
                       crs="EPSG:32633", transform=from_bounds(*bounds, w, h)) as ds:
        ds.write(band[None])
    spec = cloud.read_spec(modelfile.BUNDLED_DIR / ("ukis_csmask_4b_l2a.json" if activation == "softmax"
                                                    else "cloudmask.json"))
    masks, counts = {}, {}
    for way in ("interpolated", "decided"):
        counter = cloud.ClassCounter()
        decide = cloud.class_decider(spec, 0.5) if way == "decided" else None
        out = tmp_path / f"{way}.tif"
        outputs = [OutputSpec(path=str(out), count=1, dtype="uint8", nodata=cloud.MASK_NODATA,
                              convert=cloud.class_converter(spec, "classes", 0.5, counter, from_index=bool(decide)))]
        sampler = regrid.StreamingBackSampler((channels, hc, wc), cloud.PROB_NODATA, str(spath), 1, outputs, rows=11,
                                              decide=decide)
        try:
            for r0 in range(0, hc, 6):
                sampler.feed(coarse[:, r0:r0 + 6])
            sampler.finish()
        finally:
            sampler.close()
        with rasterio.open(out) as ds:
            masks[way] = ds.read(1)
        counts[way] = counter.counts.copy()
    assert set(np.unique(masks["interpolated"])) == set(spec.class_values) | {cloud.MASK_NODATA}
    np.testing.assert_array_equal(masks["decided"], masks["interpolated"])
    np.testing.assert_array_equal(counts["decided"], counts["interpolated"])


def test_class_raster_is_the_same_with_or_without_the_probabilities_on_a_real_patch(s2_samples, tmp_path):
    """On the REAL snow patch 57_38, half of which the RGB model calls cloud (class edges through the whole
    patch), the class raster written alone (decided without interpolating inside a class) is the one written
    beside the probability raster (every pixel interpolated)."""
    src = next(p for p in s2_samples if "57_38" in p.name)
    masks = {}
    for way, prob in (("alone", None), ("with_probabilities", str(tmp_path / "p.tif"))):
        res = cloud.cloud_mask(cloud.CloudMaskRequest(str(src), str(tmp_path / f"{way}.tif"), model="cloudmask",
                                                      probability_path=prob))
        with rasterio.open(tmp_path / f"{way}.tif") as ds:
            masks[way] = ds.read(1)
    assert res.scale == 3.0 and 0.2 < res.fraction("cloud") < 0.8
    np.testing.assert_array_equal(masks["alone"], masks["with_probabilities"])


def test_class_decision_skips_interpolation_inside_a_class():
    """Inside a patch of one class no pixel is interpolated; only those whose taps straddle its edge are."""
    from sar2eo_cloud_plugin.core import regrid

    hc, wc, h, w = 12, 12, 36, 36
    p = np.zeros((2, hc, wc), np.float32)
    p[0], p[1, 4:8, 4:8] = 1.0, 2.0                       # class 1 on coarse rows/columns 4..7
    sampler = object.__new__(regrid.BackSampler)
    sampler.W, sampler.Wc, sampler.prob_nodata = w, wc, -1.0
    decide = lambda prob: np.argmax(prob, axis=0).astype(np.uint8)  # noqa: E731
    sampler.col_taps, sampler.col_source = regrid._column_plan(regrid._sample_coords(w, wc), wc)
    interpolated = []
    real = regrid._bilinear_at
    try:
        regrid._bilinear_at = lambda q, *taps: (interpolated.append(len(taps[0])), real(q, *taps))[1]
        index, valid = sampler._classes(p, regrid._sample_coords(h, hc), decide)
    finally:
        regrid._bilinear_at = real
    expected = decide(regrid.sample_bilinear(p, regrid._sample_coords(h, hc), regrid._sample_coords(w, wc)))
    np.testing.assert_array_equal(index[0], expected)
    assert valid.all()
    # the patch's edge pixels: 2 input rows/columns on each side of each of its 4 edges, nothing else
    assert 0 < interpolated[0] <= 4 * 2 * 2 * 14


def test_streaming_back_sampler_refuses_rows_out_of_order_and_leaves_nothing(tmp_path):
    """A chunk that does not continue where the last one ended is an error, and no output is left. GENERATED."""
    from rasterio.transform import from_bounds

    from sar2eo_cloud_plugin.core import regrid
    from sar2eo_cloud_plugin.core.engine import OutputSpec

    spath = tmp_path / "src.tif"
    with rasterio.open(spath, "w", driver="GTiff", width=30, height=30, count=1, dtype="uint16", crs="EPSG:32633",
                       transform=from_bounds(0, 0, 300, 300, 30, 30)) as ds:
        ds.write(np.full((1, 30, 30), 500, np.uint16))
    out = tmp_path / "fine.tif"
    spec = OutputSpec(path=str(out), count=2, dtype="float32", nodata=-1.0, convert=lambda p, v: p)
    sampler = regrid.StreamingBackSampler((2, 10, 10), -1.0, str(spath), 1, [spec])
    try:
        sampler.feed(np.zeros((2, 4, 10), np.float32))
        with pytest.raises(RuntimeError, match="engine's order changed"):
            sampler.feed(np.zeros((2, 4, 12), np.float32))
    finally:
        sampler.close()
    assert not out.exists() and list(tmp_path.iterdir()) == [spath]

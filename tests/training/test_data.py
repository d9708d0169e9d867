"""Data pipelines on small on-disk fixtures in the real formats (see conftest.py for what they are built from)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sar2eo_cloud_plugin.core import normalisation as norm
from training import cloud_data, common, sar2eo_data as sd
from training.sar2eo_data import BigEarthNetPairs, SEN12MSPairs

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data" / "bigearthnet-example"
CONFIGILM = REPO.parent / "shared" / "data" / "bigearthnet-configilm"


def test_sen12ms_archives_extract_once_pair_and_report(sen12ms_root, tmp_path):
    logs = []
    ext = tmp_path / "extracted"
    ds = SEN12MSPairs(sen12ms_root, "rgbn", crop_size=64, extract_to=ext, split="all", verify=True, log=logs.append)
    assert (ext / "ROIs2017_winter_s1" / ".extracted").is_file()
    assert sum("extracting" in m for m in logs) == 2
    assert len(ds) == 5  # the 5 real pairs; the broken pair is reported, not used
    assert [Path(p).name for p in ds.report.unpaired_s1] == ["ROIs2017_winter_s1_1_p9.tif"]
    assert any("s2_4_p1" in k for k in ds.report.unreadable)
    assert "5 S1/S2 pairs" in ds.report.summary() and "unreadable" in ds.report.summary()
    logs.clear()
    SEN12MSPairs(sen12ms_root, "rgb", extract_to=ext, split="all", log=logs.append)
    assert not any("extracting" in m for m in logs)  # extracted once, reused

    item = ds[0]
    assert item["A"].shape == (2, 64, 64) and item["B"].shape == (4, 64, 64)
    assert item["A"].min() >= -1 and item["A"].max() <= 1 and item["B"].min() >= -1 and item["B"].max() <= 1
    # full pair == the plugin's normalisation applied to the raw files
    import rasterio

    sar, refl = ds.full_pair(0)
    s1p, s2p, _ = ds.pairs[0]
    with rasterio.open(s1p) as f:
        np.testing.assert_allclose(sar, norm.normalise_sar_db(f.read()), atol=1e-6)
    with rasterio.open(s2p) as f:
        dn = f.read()
    np.testing.assert_allclose(refl, np.clip(dn[[3, 2, 1, 7]] / 10000.0, 0, 1), atol=1e-6)  # B4,B3,B2,B8 in L1C order


def test_sen12ms_split_by_scene_and_unreadable_pairs_are_skipped(sen12ms_root, tmp_path):
    ext = tmp_path / "x"
    tr = SEN12MSPairs(sen12ms_root, "rgb", extract_to=ext, split="train", val_fraction=0.34, seed=0, log=lambda m: None)
    va = SEN12MSPairs(sen12ms_root, "rgb", extract_to=ext, split="val", val_fraction=0.34, seed=0, log=lambda m: None)
    scenes = lambda d: {n.rsplit("_p", 1)[0] for _, _, n in d.pairs}  # noqa: E731
    assert scenes(tr).isdisjoint(scenes(va)) and len(tr) + len(va) == 6
    broken = [i for i, (_, _, n) in enumerate(tr.pairs + va.pairs) if n.endswith("_4_p1")]
    assert broken  # without verify=True the broken pair is listed ...
    d = tr if any(n.endswith("_4_p1") for _, _, n in tr.pairs) else va
    i = [j for j, (_, _, n) in enumerate(d.pairs) if n.endswith("_4_p1")][0]
    item = d[i]  # ... and reading it serves another pair and records the failure
    assert item["name"] != d.pairs[i][2] and d.bad


def test_missing_sen12ms_folder_says_what_to_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="ROIs2017_winter_s1.tar.gz"):
        SEN12MSPairs(tmp_path / "nope")


def test_bigearthnet_layouts_agree_and_crops(s2_samples):
    """The stacked sample_data/ files, the per-band GeoTIFFs and the .npz reader give the same arrays."""
    stacked = {p.name: p for p in sd.discover_pairs([REPO / "sample_data"])}
    name = "S2A_MSIL2A_20170613T101031_87_48"
    a = BigEarthNetPairs([stacked[name]], "nir_swir_re", crop_size=None, augment=False)
    sar, refl = a.full_pair(0)
    assert sar.shape == (2, 120, 120) and refl.shape == (3, 120, 120)
    if SHARED.is_dir():
        tifs = {p.name: p for p in sd.discover_pairs([SHARED])}
        assert tifs[name].kind == "geotiff" and len(tifs) == 5
        sar2, refl2 = BigEarthNetPairs([tifs[name]], "nir_swir_re", crop_size=None, augment=False).full_pair(0)
        np.testing.assert_allclose(sar, sar2, atol=1e-6)
        np.testing.assert_allclose(refl, refl2, atol=1e-6)
    crops = BigEarthNetPairs(list(stacked.values()), "rgb", crop_size=64, samples_per_epoch=10)
    assert crops.n_pairs == 5 and len(crops) == 10 and crops[7]["B"].shape == (3, 64, 64)


def test_to_grid_repeats_coarse_bands():
    coarse = np.arange(4, dtype=np.float32).reshape(2, 2)
    fine = sd.to_grid(coarse, 6)
    assert fine.shape == (6, 6) and fine[0, :3].tolist() == [0, 0, 0] and fine[5, 5] == 3
    with pytest.raises(ValueError, match="does not divide"):
        sd.to_grid(np.zeros((7, 7)), 120)


def test_product_names():
    assert sd.product_of("S2B_MSIL2A_20180525T94030_55_30") == "S2B_20180525T0940"
    assert sd.product_of("S2B_MSIL2A_20180525T94031_23_83") == "S2B_20180525T0940"   # same pass, seconds apart
    assert sd.product_of("S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_26_57") == "S2A_20170613T1010"
    with pytest.raises(ValueError, match="not a Sentinel-2 patch name"):
        sd.product_of("Spain_7370579_S2Hand")


@pytest.mark.skipif(not CONFIGILM.is_dir(), reason="../shared/data not present")
def test_real_pairs_split_by_product_as_the_configs_and_docstring_say():
    import yaml

    pairs = sd.discover_pairs([CONFIGILM, SHARED])
    assert len(pairs) == 51 and len({p.name for p in pairs}) == 51
    npz = next(p for p in pairs if p.kind == "npz")
    db, dn = sd.read_pair(npz)
    assert db.shape == (2, 120, 120) and dn.shape == (12, 120, 120) and dn.dtype == np.float32
    cfgs = [yaml.safe_load(p.read_text()) for p in sorted((REPO / "configs").glob("bundled_sar2eo_*.yaml"))]
    val_products = cfgs[0]["data"]["val_products"]
    assert all(c["data"]["val_products"] == val_products for c in cfgs)   # every band set and the ablation
    assert sorted(val_products) == sd.propose_val_products(pairs, 11, seed=1)
    train, val = sd.split_by_product(pairs, val_products)
    assert (len(train), len(val)) == (40, 11)
    assert not {p.product for p in train} & {p.product for p in val}
    assert len({p.product for p in train}) == 15 and len({p.product for p in val}) == 7
    doc = sd.BigEarthNetPairs.__doc__
    assert all(prod in doc for prod in val_products)
    with pytest.raises(ValueError, match="match no pair"):
        sd.split_by_product(pairs, ["S2A_20990101T0000"])


@pytest.mark.skipif(not (SHARED.parent / "sen1floods11-sample").is_dir(), reason="../shared/data not present")
def test_sen1floods11_l1c_drops_b10():
    s1, dn = sd.sen1floods11_pair(SHARED.parent / "sen1floods11-sample")
    assert s1.is_file() and dn.shape == (12, 512, 512)
    import rasterio

    with rasterio.open(SHARED.parent / "sen1floods11-sample" / "Spain_7370579_S2Hand.tif") as ds:
        full = ds.read().astype(np.float32)
    np.testing.assert_array_equal(dn[10], full[11])   # B11 follows B9 once B10 is gone


def test_cloudsen12_cache_is_reused_and_offline_message(cloudsen12_cache, tmp_path, monkeypatch):
    ids = cloud_data.localise_cloudsen12(cloudsen12_cache, 3, log=lambda m: None)  # cache hit: no tacoreader
    assert len(ids) == 3
    items = cloud_data.load_cloudsen12_items(cloudsen12_cache)
    assert len(items) == 5 and items[0][0].dtype == np.uint16 and set(np.unique(items[0][1])) <= {0, 1}

    def offline(source):
        raise ConnectionError("no network")

    monkeypatch.setattr(cloud_data, "_open_taco", offline)
    with pytest.raises(common.DataError) as exc:
        cloud_data.localise_cloudsen12(tmp_path / "empty", 10, log=lambda m: None)
    msg = str(exc.value)
    assert "tacofoundation:cloudsen12-l1c" in msg and str(tmp_path / "empty") in msg and "localise" in msg


def test_cloud_dataset_uses_the_plugin_normalisation(cloudsen12_cache):
    items = cloud_data.load_cloudsen12_items(cloudsen12_cache)
    ds = cloud_data.CloudArrays(items, train=False)
    x = ds[0]["image"].numpy()
    np.testing.assert_allclose(x, norm.cloud_preprocess(items[0][0]), atol=1e-4)
    tr = cloud_data.CloudArrays(items, train=True, resize=64, samples_per_epoch=7)
    s = tr[3]
    assert len(tr) == 7 and s["image"].shape == (3, 64, 64) and s["mask"].shape == (1, 64, 64)
    a, b = cloud_data.split_items(items, 0.2, seed=0)
    assert len(a) == 4 and len(b) == 1


def test_pseudo_label_rule_by_hand():
    from sar2eo_cloud_plugin.core.bands import S2_L2A_ORDER

    dn = np.zeros((12, 1, 4), np.float32)
    def put(col, b2, b3, b4, b11):
        for b, v in zip(("B2", "B3", "B4", "B11"), (b2, b3, b4, b11)):
            dn[S2_L2A_ORDER.index(b), 0, col] = v
    put(0, 3000, 3000, 3000, 2500)   # bright, white, NDSI ~0.09 -> cloud by the rule
    put(1, 3000, 3000, 3000, 300)    # bright but NDSI 0.82 -> snow, not cloud
    put(2, 500, 600, 400, 2000)      # dark vegetation -> clear
    put(3, 1000, 2500, 4000, 3000)   # bright but not white (whiteness 0.8) -> clear
    assert cloud_data.pseudo_cloud_labels(dn).ravel().tolist() == [1, 0, 0, 0]


def test_unquoted_yaml_patch_names_are_refused():
    import yaml

    held = yaml.safe_load("holdout: [36_85]")["holdout"]  # YAML reads this as the integer 3685
    with pytest.raises(common.ConfigError, match="quote patch names"):
        cloud_data.build_cloud_items({"kind": "bigearthnet_pseudo", "root": str(REPO / "sample_data"),
                                      "holdout": held}, 0, log=lambda m: None)

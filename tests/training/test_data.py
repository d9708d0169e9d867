"""Data pipelines on small on-disk fixtures in the real formats (see conftest.py for what they are built from)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sar2eo_cloud_plugin.core import normalisation as norm
from training import cloud_data
from training.sar2eo_data import BigEarthNetPairs, SEN12MSPairs

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data" / "bigearthnet-example"


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


def test_bigearthnet_both_layouts_agree(s2_samples):
    a = BigEarthNetPairs(REPO / "sample_data", "nir_swir_re", patches=["87_48"], crop_size=None, augment=False)
    assert a.n_pairs == 1
    sar, refl = a.full_pair(0)
    assert sar.shape == (2, 120, 120) and refl.shape == (3, 120, 120)
    if SHARED.is_dir():
        b = BigEarthNetPairs(SHARED, "nir_swir_re", patches=["87_48"], crop_size=None, augment=False)
        sar2, refl2 = b.full_pair(0)
        np.testing.assert_allclose(sar, sar2, atol=1e-6)
        np.testing.assert_allclose(refl, refl2, atol=1e-6)
    held = BigEarthNetPairs(REPO / "sample_data", "rgb", exclude=["36_85"], crop_size=64, samples_per_epoch=10)
    assert held.n_pairs == 4 and len(held) == 10 and held[7]["B"].shape == (3, 64, 64)
    assert not any("36_85" in n for n in held.names)


def test_cloudsen12_cache_is_reused_and_offline_message(cloudsen12_cache, tmp_path, monkeypatch):
    ids = cloud_data.localise_cloudsen12(cloudsen12_cache, 3, log=lambda m: None)  # cache hit: no tacoreader
    assert len(ids) == 3
    items = cloud_data.load_cloudsen12_items(cloudsen12_cache)
    assert len(items) == 5 and items[0][0].dtype == np.uint16 and set(np.unique(items[0][1])) <= {0, 1}

    def offline(source):
        raise ConnectionError("no network")

    monkeypatch.setattr(cloud_data, "_open_taco", offline)
    with pytest.raises(SystemExit) as exc:
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
    with pytest.raises(SystemExit, match="quote patch names"):
        cloud_data.build_cloud_items({"kind": "bigearthnet_pseudo", "root": str(REPO / "sample_data"),
                                      "holdout": held}, 0, log=lambda m: None)

"""The cloud student's data (training/cloud_data.py) on the REAL patches of ../shared/data: discovery, the
teacher through the plugin, the date split, and the synthetic clouds' exact labels."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from sar2eo_cloud_plugin.core.errors import InputError
from training import cloud_data, common

SHARED = cloud_data.SHARED_DATA
pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/data (the real data)")


def _item(name: str, product: str, cloud_fraction: float, size: int = 40, seed: int = 0) -> cloud_data.TeacherItem:
    """A TeacherItem from the real patch 87_48 (B4, B3, B2 block-averaged to 40 x 40 like the 30 m grid)."""
    import rasterio

    from sar2eo_cloud_plugin.core.bands import S2_L2A_ORDER

    src = Path(__file__).resolve().parents[2] / "sample_data/s2/S2A_MSIL2A_20170613T101031_87_48_L2A12.tif"
    with rasterio.open(src) as ds:
        dn = ds.read([S2_L2A_ORDER.index(b) + 1 for b in ("B4", "B3", "B2")]).astype(np.float32)
    rgb = dn.reshape(3, 40, 3, 40, 3).mean(axis=(2, 4))[:, :size, :size]
    mask = np.zeros((size, size), np.uint8)
    mask[: int(round(cloud_fraction * size))] = 1
    return cloud_data.TeacherItem(rgb, mask, name, product, cloud_fraction)


def test_every_real_s2_patch_is_found_with_its_product():
    patches = cloud_data.find_real_s2()
    assert len(patches) == 52 and not any("cloud-labelled" in str(p.path) for p in patches)
    assert {p.level for p in patches} == {"L1C", "L2A"}
    assert [p.name for p in patches if p.level == "L1C"] == ["sen1floods11_Spain_7370579_S2"]
    p = next(p for p in patches if p.name.endswith("T33UUP_38_58"))
    assert (p.date, p.product) == ("20170613", "20170613T101031_33UUP")


def test_teacher_labels_through_the_plugin_and_refuses_dark_patches(tmp_path):
    patches = {p.name: p for p in cloud_data.find_real_s2()}
    dn, classes = cloud_data.teacher_label(patches["S2A_MSIL2A_20170613T101031_87_48"], tmp_path)
    assert dn.shape == (4, 40, 40) and dn.dtype == np.uint16 and classes.shape == (40, 40)   # 120 px at 10 m -> 30 m
    assert set(np.unique(classes)) <= {0, 1, 2}
    cloudy = cloud_data.teacher_label(patches["benv2_S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_38_58"], tmp_path)[1]
    assert (cloudy == 1).mean() > 0.3     # reBEN flags this patch as cloudy; the teacher agrees
    with pytest.raises(InputError, match="8-bit"):
        cloud_data.teacher_label(patches["benv1_S2A_MSIL2A_20180419T101031_63_45"], tmp_path)


def test_split_by_date_keeps_products_apart():
    items = [_item("a", "20170613T101031", 0.0), _item("b", "20170617T113321", 0.0),
             _item("c", "20170617T113321", 0.5)]
    train, val = cloud_data.split_by_date(items, ["20170617"])
    assert [i.name for i in train] == ["a"] and [i.name for i in val] == ["b", "c"]
    d = cloud_data.describe_split(train, val)
    assert d["val_products"] == {"20170617T113321": 2} and not set(d["train_products"]) & set(d["val_products"])


def test_synthetic_clouds_have_exact_labels():
    it = _item("a", "p", 0.0)
    random.seed(3)
    torch.manual_seed(3)
    out, label = cloud_data.SyntheticClouds(opacity_label=0.3, brightness=(0.6, 0.6))(
        it.rgb_dn, it.cloud, np.random.default_rng(3))
    assert out.shape == it.rgb_dn.shape and label.shape == it.cloud.shape and set(np.unique(label)) <= {0, 1}
    assert 0.0 < label.mean() < 1.0
    gain = (out - it.rgb_dn).mean(axis=0)
    assert gain[label == 1].mean() > 1000 > gain[label == 0].mean()   # labelled cloud is where it got bright
    base = it.cloud.copy()
    base[:5] = 1
    assert (cloud_data.SyntheticClouds()(it.rgb_dn, base, np.random.default_rng(0))[1][:5] == 1).all()


def test_teacher_samples_mosaic_crop_and_share():
    items = [_item(f"p{i}", f"2017061{i}", 0.0) for i in range(3)] + [_item("cloudy", "20170619", 0.5)]
    torch.manual_seed(0)
    ds = cloud_data.TeacherCloudSamples(items, crop=64, samples_per_epoch=6, synthetic_share=1.0)
    s = ds[0]
    assert len(ds) == 6 and s["image"].shape == (3, 64, 64) and s["mask"].shape == (1, 64, 64)
    assert s["name"] == "synthetic" and ds.clear == items[:3]     # clouds only on clear patches
    real = cloud_data.TeacherCloudSamples(items, crop=32, synthetic_share=0.0)
    assert {real[i]["name"] for i in range(4)} == {"teacher"}
    with pytest.raises(common.DataError, match="no clear patch"):
        cloud_data.TeacherCloudSamples(items[3:], synthetic_share=0.5)

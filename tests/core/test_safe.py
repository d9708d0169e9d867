"""Sentinel-2 products as downloaded (.SAFE folder, its zip, the MTD xml, a SENTINEL2 subdataset string) as
cloud-mask input, on the GENERATED miniature products of ``safe_fixture`` (real sample values, invented
product metadata: see that module's docstring)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import rasterio

from sar2eo_cloud_plugin.core import safe
from sar2eo_cloud_plugin.core.errors import InputError

import safe_fixture

CLOUD_PY = Path(safe.__file__).with_name("cloud.py")
HOOK_PRESENT = "product_stack" in CLOUD_PY.read_text(encoding="utf-8")
STACK = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")


@pytest.fixture(scope="module")
def products(tmp_path_factory):
    folder = tmp_path_factory.mktemp("s2products")
    return {level: safe_fixture.make_safe(folder, level) for level in ("L1C", "L2A")}


@pytest.fixture(scope="module")
def sample():
    with rasterio.open(safe_fixture.SAMPLE) as src:
        return {d: src.read(i + 1) for i, d in enumerate(src.descriptions)}, src.transform, src.crs


def expected(sample_bands, name: str, shift: int) -> np.ndarray:
    """The sample's band as the stack must hold it: 10 m as is, 20 m 2x2-averaged then repeated (nearest)."""
    band = sample_bands[name].astype(np.int64)
    if name not in safe.BANDS_10M:
        band = np.repeat(np.repeat(safe_fixture.block_mean(sample_bands[name], 2).astype(np.int64), 2, 0), 2, 1)
    return band + shift


def forms(safe_dir: Path, level: str, tmp_path: Path):
    mtd = safe_dir / f"MTD_MSI{level}.xml"
    return {"folder": str(safe_dir), "zip": str(safe_fixture.zip_safe(safe_dir, tmp_path / f"{safe_dir.stem}.zip")),
            "mtd": str(mtd), "subdataset": f"SENTINEL2_{level}:{mtd}:10m:EPSG_32633",
            "subdataset_20m": f"SENTINEL2_{level}:{mtd}:20m:EPSG_32633"}


@pytest.mark.parametrize("level", ["L1C", "L2A"])
def test_every_product_form_gives_the_10m_stack(products, sample, tmp_path, level):
    sample_bands, transform, crs = sample
    shift = 0 if level == "L1C" else 1000
    for form, path in forms(products[level], level, tmp_path).items():
        lines = []
        vrt = safe.product_stack(path, str(tmp_path / "work"), log=lines.append)
        assert vrt and Path(vrt).is_file() and Path(vrt).parent == tmp_path / "work", form
        with rasterio.open(vrt) as ds:
            assert ds.descriptions == STACK, form
            assert (ds.width, ds.height, ds.transform, ds.crs) == (120, 120, transform, crs), form
            assert set(ds.nodatavals) == {0.0} and set(ds.dtypes) == {"uint16"}, form
            tags, data = ds.tags(), ds.read()
        for i, name in enumerate(STACK):
            np.testing.assert_array_equal(data[i].astype(np.int64), expected(sample_bands, name, shift),
                                          err_msg=f"{form} {name}")
        assert tags["PROCESSING_LEVEL"] == level and tags["PRODUCT_START_TIME"].startswith("2017-06-13T10:10:31")
        if level == "L1C":
            assert tags["PROCESSING_BASELINE"] == "02.05" and not any("ADD_OFFSET" in k for k in tags)
        else:
            assert tags["PROCESSING_BASELINE"] == "04.00" and tags["BOA_ADD_OFFSET"] == "-1000"
        assert any("nearest" in line and level in line for line in lines), form


def test_the_stack_feeds_the_level_and_offset_decisions(products, tmp_path):
    from sar2eo_cloud_plugin.core import s2product

    for level, offset in (("L1C", 0.0), ("L2A", -1000.0)):
        vrt = safe.product_stack(str(products[level]), str(tmp_path))
        with rasterio.open(vrt) as ds:
            desc, tags = ds.descriptions, ds.tags()
        assert s2product.decide_level("auto", len(desc), desc, tags, vrt).value == level
        assert s2product.decide_offset("auto", tags, [], vrt).value == offset


def test_a_product_over_two_utm_zones_uses_the_named_or_the_first(tmp_path):
    two = safe_fixture.make_safe(tmp_path, "L1C", second_zone=True)
    mtd = two / "MTD_MSIL1C.xml"
    for path, epsg, why in ((str(two), 32633, "the first"),
                            (f"SENTINEL2_L1C:{mtd}:20m:EPSG_32634", 32634, "the one the subdataset names")):
        lines = []
        vrt = safe.product_stack(path, str(tmp_path / "work"), log=lines.append)
        with rasterio.open(vrt) as ds:
            assert ds.crs.to_epsg() == epsg and ds.descriptions == STACK and (ds.width, ds.height) == (120, 120)
        assert any("2 UTM zones" in line and f"using EPSG_{epsg}, {why}" in line for line in lines), lines


def test_a_relative_path_gives_a_stack_that_does_not_depend_on_the_cwd(products, tmp_path, monkeypatch):
    monkeypatch.chdir(products["L1C"].parent)
    vrt = safe.product_stack(products["L1C"].name, str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with rasterio.open(vrt) as ds:
        assert ds.read(1).any()


def test_ordinary_rasters_pass_through_without_gdal(monkeypatch, tmp_path):
    def no_gdal():
        raise AssertionError("an ordinary raster must not be opened")

    monkeypatch.setattr(safe, "_gdal", no_gdal)
    assert safe.product_stack(str(safe_fixture.SAMPLE), str(tmp_path)) is None
    (tmp_path / "other.xml").write_text("<a/>")
    (tmp_path / "folder").mkdir()
    assert safe.product_stack(str(tmp_path / "other.xml"), str(tmp_path)) is None
    assert safe.product_stack(str(tmp_path / "folder"), str(tmp_path)) is None
    assert list(tmp_path.glob("*.vrt")) == []


def test_a_corrupt_zip_is_an_input_error_naming_it(tmp_path):
    bad = tmp_path / "S2B_MSIL2A_20230823T095559_N0509_R122_T34UCF_20230823T124759.zip"
    bad.write_bytes(b"PK\x03\x04 cut short while downloading")
    with pytest.raises(InputError, match=re.escape(str(bad))):
        safe.product_stack(str(bad), str(tmp_path))


@pytest.mark.parametrize("exceptions", [False, True])
def test_a_product_gdal_cannot_read_is_an_input_error_naming_it(tmp_path, exceptions):
    """In either of GDAL's error modes, which product_stack leaves as it found it (QGIS shares it)."""
    from osgeo import gdal

    broken = tmp_path / "S2A_MSIL1C_broken.SAFE"
    broken.mkdir()
    (broken / "MTD_MSIL1C.xml").write_text("<not the metadata of a product")
    before = gdal.GetUseExceptions()
    (gdal.UseExceptions if exceptions else gdal.DontUseExceptions)()
    try:
        with pytest.raises(InputError, match=re.escape(str(broken))):
            safe.product_stack(str(broken), str(tmp_path))
        assert bool(gdal.GetUseExceptions()) == exceptions
    finally:
        (gdal.UseExceptions if before else gdal.DontUseExceptions)()


# ------------------------------------------------------------------------------ through the cloud core
def masks_of(path, out, **kw):
    from sar2eo_cloud_plugin.core import cloud

    res = cloud.cloud_mask(cloud.CloudMaskRequest(str(path), str(out), device="cpu", **kw))
    with rasterio.open(out) as ds:
        return res, ds.read(1), (ds.transform, ds.crs)


@pytest.fixture(scope="module")
def sample_mask(tmp_path_factory):
    """The cloud core's mask of the L2A GeoTIFF sample the products are made from (computed once)."""
    return masks_of(safe_fixture.SAMPLE, tmp_path_factory.mktemp("sample_mask") / "sample.tif")


def test_the_l2a_stack_gives_the_mask_of_the_l2a_sample(products, sample_mask, tmp_path):
    """The VRT as the cloud core reads it (no hook needed): L2A, offset -1000 from BOA_ADD_OFFSET, and the
    mask of the GeoTIFF sample the product was made from (its DNs + 1000 - 1000 are the sample's)."""
    vrt = safe.product_stack(str(products["L2A"]), str(tmp_path))
    res, mask, _grid = masks_of(vrt, tmp_path / "stack.tif")
    ref, ref_mask, _ = sample_mask
    assert res.level == "L2A" and res.offset == -1000.0 and ref.offset == 0.0 and res.model == ref.model
    np.testing.assert_array_equal(mask, ref_mask)


@pytest.mark.skipif(not HOOK_PRESENT, reason="core/cloud.py does not call safe.product_stack yet (the lead adds "
                    "the hook: src = safe.product_stack(req.src_path, tmpdir) or req.src_path)")
def test_cloud_mask_takes_the_products_themselves(products, sample, sample_mask, tmp_path):
    _bands, transform, crs = sample
    res, mask, grid = masks_of(products["L1C"], tmp_path / "l1c.tif")
    assert res.level == "L1C" and mask.dtype == np.uint8 and mask.shape == (120, 120)
    assert grid == (transform, crs)
    assert set(np.unique(mask)) <= {0, 1, 2, 255}
    res2, mask2, _ = masks_of(products["L2A"], tmp_path / "l2a.tif")
    _ref, ref_mask, _ = sample_mask
    assert res2.level == "L2A" and res2.offset == -1000.0
    np.testing.assert_array_equal(mask2, ref_mask)

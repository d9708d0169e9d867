"""Processing: ``sar2eo_cloud:cloud_mask`` on the REAL Sentinel-2 samples (12-band L2A stacks, 10 m grid).

Layers derived from the real samples in fixtures are GENERATED (band subsets with descriptions
removed, a copy with a nodata block) and say so. Model: the GENERATED random-weight U-Net from
``tiny_models`` (tests only) via MODEL_FILE; the bundled model (once exported) in
``test_cloud_mask_bundled_model``. A random network says nothing about clouds: these tests check the
plumbing (band layout, nodata, georeferencing, polygons = mask), not detection quality.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from qgis.core import (
    QgsApplication,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputLayerDefinition,
    QgsProcessingParameterDefinition,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)

from sar2eo_cloud_plugin.core import modelfile
from tests.qgis_versions import handle_algorithm_results

ALG = "sar2eo_cloud:cloud_mask"
BUNDLED_CLOUD = modelfile.BUNDLED_DIR / "cloudmask.json"
L2A_B2_B3_B4_B8 = (2, 3, 4, 8)   # 1-based band numbers of B2, B3, B4, B8 in the 12-band L2A stack


@pytest.fixture
def model(tiny_models):
    """The GENERATED random RGB (sigmoid, cloud / clear) model."""
    return str(tiny_models / "cloudmask.json")


@pytest.fixture
def shadow_model(tiny_models):
    """The GENERATED random B2, B3, B4, B8 softmax model (clear / cloud / shadow, 30 m), ukis-csmask's form."""
    return str(tiny_models / "tiny_cloud_shadow.json")


FAST_TILE = 128   # the 120 px patches fit one 128 px tile; the default 512 px tile costs ~16x more CPU


@pytest.fixture
def run(run_alg):
    """Runs the algorithm; tile size 128 unless the test sets one (the default is exercised by
    ``test_cloud_mask_real_l2a_stacks`` and the bundled-model test)."""

    def _run(params, feedback=None, default_tile=False):
        if not default_tile:
            params = {"TILE_SIZE": FAST_TILE, **params}
        return run_alg(ALG, params, feedback)

    return _run


def read(path):
    with rasterio.open(path) as ds:
        return ds.read(1), ds.profile, ds.nodata


def subset(src_path: Path, dst_path: Path, bands, descriptions=None) -> Path:
    with rasterio.open(src_path) as src:
        profile = src.profile | {"count": len(bands)}
        with rasterio.open(dst_path, "w", **profile) as dst:
            dst.write(src.read(list(bands)))
            for i, d in enumerate(descriptions or [], start=1):
                dst.set_band_description(i, d)
    return dst_path


@pytest.fixture
def s2_4band(s2_sample, tmp_path):
    """GENERATED from the real L2A sample: bands B2, B3, B4, B8 with their descriptions removed,
    so the 4-band 10 m layout must be recognised from the band count alone."""
    path = subset(s2_sample, tmp_path / "s2_B2B3B4B8_nodesc.tif", L2A_B2_B3_B4_B8)
    with rasterio.open(path) as ds:
        assert ds.descriptions == (None,) * 4
    return path


@pytest.fixture
def s2_5band(s2_sample, tmp_path):
    """GENERATED from the real sample: bands 1-5 without descriptions (an ambiguous layout)."""
    return subset(s2_sample, tmp_path / "s2_5band_nodesc.tif", (1, 2, 3, 4, 5))


@pytest.fixture
def s2_nodata_block(s2_sample, tmp_path):
    """GENERATED copy of the real sample with a 30 x 50 px block set to nodata (0, tagged as nodata)."""
    path = tmp_path / "s2_nodata_block.tif"
    with rasterio.open(s2_sample) as src:
        data = src.read()
        profile = src.profile | {"nodata": 0}
        descriptions = src.descriptions
    data[:, 10:40, 20:70] = 0
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for i, d in enumerate(descriptions, start=1):
            dst.set_band_description(i, d)
    return path


# ---------------------------------------------------------------------------------------- contract
PARAMETERS = ["INPUT", "MODEL", "BAND_MAP", "LEVEL", "MODE", "BUFFER", "DEVICE", "RUNTIME", "OFFSET", "THRESHOLD",
              "RESOLUTION", "TILE_SIZE", "OVERLAP", "BATCH_SIZE", "MODEL_FILE", "PRECISION", "MIN_AREA", "OUTPUT",
              "OUTPUT_PROBABILITY", "OUTPUT_POLYGONS"]


def test_cloud_mask_parameters_follow_the_contract(provider):
    alg = QgsApplication.processingRegistry().algorithmById(ALG)
    assert [p.name() for p in alg.parameterDefinitions()] == PARAMETERS
    adv = {p.name() for p in alg.parameterDefinitions() if p.flags() & QgsProcessingParameterDefinition.FlagAdvanced}
    assert adv == {"RUNTIME", "OFFSET", "THRESHOLD", "RESOLUTION", "TILE_SIZE", "OVERLAP", "BATCH_SIZE", "MODEL_FILE",
                   "PRECISION", "MIN_AREA"}
    optional = {p.name() for p in alg.parameterDefinitions()
                if p.flags() & QgsProcessingParameterDefinition.FlagOptional}
    assert {"BAND_MAP", "THRESHOLD", "RESOLUTION", "TILE_SIZE", "OVERLAP", "BATCH_SIZE", "MODEL_FILE",
            "OUTPUT_PROBABILITY", "OUTPUT_POLYGONS"} <= optional
    missing_help = [p.name() for p in alg.parameterDefinitions() if not p.help()]
    assert missing_help == []
    p = alg.parameterDefinition
    assert p("MODEL").options()[0].startswith("Auto") and "ukis_csmask_4b_l1c" in p("MODEL").options()
    assert (p("MODEL").defaultValue(), p("LEVEL").defaultValue(), p("OFFSET").defaultValue(),
            p("MODE").defaultValue(), p("BUFFER").defaultValue(), p("PRECISION").defaultValue()) == (0, 0, 0, 0, 0, 0)
    assert {o.name() for o in alg.outputDefinitions()} >= {
        "OUTPUT", "OUTPUT_PROBABILITY", "OUTPUT_POLYGONS", "CLOUD_FRACTION", "SHADOW_FRACTION", "CLOUD_PIXELS",
        "SHADOW_PIXELS", "VALID_PIXELS", "DEVICE_USED", "RUNTIME_USED", "MODEL_USED", "LEVEL_USED", "OFFSET_USED"}


# ---------------------------------------------------------------------------------------- real runs
def check_mask(mask_path: Path, src_path: Path, values=(0, 1, 2, 255)) -> np.ndarray:
    layer, source = QgsRasterLayer(str(mask_path), "m", "gdal"), QgsRasterLayer(str(src_path), "s", "gdal")
    assert layer.isValid() and layer.bandCount() == 1
    assert layer.crs() == source.crs() and layer.extent() == source.extent()
    assert (layer.width(), layer.height()) == (source.width(), source.height())
    with rasterio.open(mask_path) as ds, rasterio.open(src_path) as s:
        assert ds.dtypes == ("uint8",) and ds.nodata == 255
        assert ds.transform == s.transform and ds.crs == s.crs
        mask = ds.read(1)
    assert set(np.unique(mask)) <= set(values)
    return mask


def test_cloud_mask_real_l2a_stacks(run, s2_samples, model, tmp_path, log_feedback):
    for i, s2 in enumerate(s2_samples[:2]):
        out, prob = tmp_path / f"mask{i}.tif", tmp_path / f"prob{i}.tif"
        feedback = log_feedback()
        res = run({"INPUT": str(s2), "MODEL_FILE": model, "OUTPUT": str(out), "OUTPUT_PROBABILITY": str(prob)},
                  feedback, default_tile=(i == 0))
        mask = check_mask(out, s2, (0, 1))
        assert res["OUTPUT"] == str(out) and res["OUTPUT_PROBABILITY"] == str(prob)
        assert res["VALID_PIXELS"] == mask.size == 120 * 120           # real patches: no nodata
        assert res["CLOUD_PIXELS"] == int((mask == 1).sum()) and res["SHADOW_PIXELS"] == 0
        assert res["CLOUD_FRACTION"] == pytest.approx((mask == 1).sum() / (mask != 255).sum())
        assert res["THRESHOLD_USED"] == 0.5 and res["DEVICE_USED"] == "cpu" and res["LEVEL_USED"] == "L2A"
        assert res["MODEL_USED"] == "cloudmask" and res["OFFSET_USED"] == 0
        assert any(line.startswith("CLOUD_FRACTION") for line in feedback.lines)
        assert any("from the band descriptions" in line for line in feedback.lines)
        assert any("Product level: L2A" in line for line in feedback.lines)
        p, profile, nodata = read(prob)
        assert profile["dtype"] == "float32" and profile["count"] == 2 and nodata == -1
        with rasterio.open(prob) as ds:
            cloud_p = ds.read(2)
        np.testing.assert_array_equal(mask == 1, cloud_p >= 0.5)    # the mask is the thresholded probability


def test_undescribed_four_bands_need_a_band_map(run, s2_sample, s2_4band, model, tmp_path, log_feedback):
    """A 4-band raster without descriptions is not silently taken as B2, B3, B4, B8: refused naming the
    bands and the parameter; with BAND_MAP the same pixels give the same mask as the full stack."""
    out = tmp_path / "mask4.tif"
    with pytest.raises(QgsProcessingException, match=r"4-band layer.*1:\(no description\).*Band map"):
        run({"INPUT": str(s2_4band), "MODEL_FILE": model, "OUTPUT": str(out)})
    assert not out.exists()
    ref = tmp_path / "ref.tif"
    run({"INPUT": str(s2_sample), "MODEL_FILE": model, "OUTPUT": str(ref)})
    feedback = log_feedback()
    run({"INPUT": str(s2_4band), "MODEL_FILE": model, "BAND_MAP": "B2=1, B3=2, B4=3, B8=4", "OUTPUT": str(out)},
        feedback)
    assert any("set by the user" in line and "B4=3, B3=2, B2=1" in line for line in feedback.lines)
    np.testing.assert_array_equal(check_mask(out, s2_4band), read(ref)[0])


def test_ambiguous_layout_is_refused_naming_the_bands(run, s2_5band, model, tmp_path):
    out = tmp_path / "m.tif"
    with pytest.raises(QgsProcessingException, match=r"5-band layer .*bands seen: 1:\(no description\)"):
        run({"INPUT": str(s2_5band), "MODEL_FILE": model, "OUTPUT": str(out)})
    assert not out.exists()


def test_red_edge_and_eight_bit_layers_are_refused(run, s2_sample, model, tmp_path, leftovers):
    """GENERATED from the real sample: bands described 'Red Edge 1', 'Green', 'Blue' (B5, B3, B2) are not
    taken for B4, B3, B2; an 8-bit rendering of B4, B3, B2 is not fed to the model."""
    edge = subset(s2_sample, tmp_path / "edge.tif", (5, 3, 2), ["Red Edge 1", "Green", "Blue"])
    with pytest.raises(QgsProcessingException, match=r"B4.*1:Red Edge 1"):
        run({"INPUT": str(edge), "MODEL_FILE": model, "OUTPUT": str(tmp_path / "a.tif")})
    with rasterio.open(s2_sample) as src:
        rgb8 = np.clip(src.read([4, 3, 2]) / 16, 0, 255).astype(np.uint8)
        profile = src.profile | {"count": 3, "dtype": "uint8"}
    with rasterio.open(tmp_path / "rgb8.tif", "w", **profile) as dst:
        dst.write(rgb8)
        dst.descriptions = ("B4", "B3", "B2")
    with pytest.raises(QgsProcessingException, match="8-bit imagery"):
        run({"INPUT": str(tmp_path / "rgb8.tif"), "MODEL_FILE": model, "OUTPUT": str(tmp_path / "b.tif")})
    assert leftovers(tmp_path) == ["edge.tif", "rgb8.tif"]


def test_wrong_band_map_is_refused(run, s2_sample, model, tmp_path, leftovers):
    with pytest.raises(QgsProcessingException, match=r"band 20 does not exist"):
        run({"INPUT": str(s2_sample), "BAND_MAP": "B4=20", "MODEL_FILE": model, "OUTPUT": str(tmp_path / "a.tif")})
    with pytest.raises(QgsProcessingException, match=r"not of the form B2=1"):
        run({"INPUT": str(s2_sample), "BAND_MAP": "red 4", "MODEL_FILE": model, "OUTPUT": str(tmp_path / "b.tif")})
    assert leftovers(tmp_path) == []


def test_one_band_layer_is_refused(run, s2_sample, model, tmp_path):
    one = subset(s2_sample, tmp_path / "s2_one_band.tif", (4,))   # GENERATED: the real B4 alone
    with pytest.raises(QgsProcessingException, match=r"1-band layer"):
        run({"INPUT": str(one), "MODEL_FILE": model, "OUTPUT": str(tmp_path / "m.tif")})
    assert not (tmp_path / "m.tif").exists()


def test_nodata_is_kept(run, s2_nodata_block, model, tmp_path):
    out, prob = tmp_path / "m.tif", tmp_path / "p.tif"
    res = run({"INPUT": str(s2_nodata_block), "MODEL_FILE": model, "OUTPUT": str(out),
               "OUTPUT_PROBABILITY": str(prob)})
    mask = check_mask(out, s2_nodata_block)
    block = np.zeros(mask.shape, bool)
    block[10:40, 20:70] = True
    assert (mask[block] == 255).all()
    assert (mask[~block] != 255).all()
    assert (read(prob)[0][block] == -1).all()
    assert res["VALID_PIXELS"] == 120 * 120 - 30 * 50
    assert res["CLOUD_FRACTION"] == pytest.approx((mask == 1).sum() / (~block).sum())


def test_level_and_buffer_parameters(run, s2_sample, shadow_model, tmp_path):
    """LEVEL=L1C overrides the file name; BUFFER grows cloud and shadow by that many metres (checked against
    a dilation of the unbuffered mask, cloud winning); MODE=1 writes cloud only."""
    from scipy import ndimage

    base, buffered, only = tmp_path / "m.tif", tmp_path / "b.tif", tmp_path / "o.tif"
    res = run({"INPUT": str(s2_sample), "MODEL_FILE": shadow_model, "LEVEL": 1, "OUTPUT": str(base)})
    assert res["LEVEL_USED"] == "L1C"
    res_b = run({"INPUT": str(s2_sample), "MODEL_FILE": shadow_model, "BUFFER": 25, "OUTPUT": str(buffered)})
    mask, grown = check_mask(base, s2_sample), check_mask(buffered, s2_sample)
    expected = mask.copy()
    for value in (2, 1):
        expected[ndimage.distance_transform_edt(mask != value) <= 2.5] = value   # 25 m at 10 m pixels
    np.testing.assert_array_equal(grown, expected)
    assert res_b["CLOUD_PIXELS"] == int((grown == 1).sum()) and res_b["SHADOW_PIXELS"] == int((grown == 2).sum())
    run({"INPUT": str(s2_sample), "MODEL_FILE": shadow_model, "MODE": 1, "OUTPUT": str(only)})
    np.testing.assert_array_equal(check_mask(only, s2_sample, (0, 1)), (mask == 1).astype(np.uint8))


# ---------------------------------------------------------------------------------------- polygons
def rasterize_like(vector_path: Path, like: Path) -> np.ndarray:
    from osgeo import gdal

    ref = gdal.Open(str(like))
    mem = gdal.GetDriverByName("MEM").Create("", ref.RasterXSize, ref.RasterYSize, 1, gdal.GDT_Byte)
    mem.SetGeoTransform(ref.GetGeoTransform())
    mem.SetProjection(ref.GetProjection())
    vec = gdal.OpenEx(str(vector_path))
    assert gdal.RasterizeLayer(mem, [1], vec.GetLayer(0), burn_values=[1]) == 0
    return mem.GetRasterBand(1).ReadAsArray()


@pytest.fixture
def half_cloud_threshold(run, s2_nodata_block, model, tmp_path_factory):
    """A threshold that makes about half the valid pixels cloud with the random test model, so the
    polygons have many parts and holes (the card's 0.5 says nothing for random weights)."""
    d = tmp_path_factory.mktemp("prob")
    run({"INPUT": str(s2_nodata_block), "MODEL_FILE": model, "OUTPUT": str(d / "m.tif"),
         "OUTPUT_PROBABILITY": str(d / "p.tif")})
    with rasterio.open(d / "p.tif") as ds:
        p = ds.read(2)                       # band 2: the cloud probability (band 1 is clear)
    return float(np.median(p[p >= 0]))


def test_polygons_overlay_the_mask(run, s2_nodata_block, model, half_cloud_threshold, tmp_path, log_feedback):
    out, polys = tmp_path / "m.tif", tmp_path / "clouds.gpkg"
    feedback = log_feedback()
    res = run({"INPUT": str(s2_nodata_block), "MODEL_FILE": model, "THRESHOLD": half_cloud_threshold,
               "MIN_AREA": 0, "OUTPUT": str(out), "OUTPUT_POLYGONS": str(polys)}, feedback)
    mask = check_mask(out, s2_nodata_block)
    cloud = mask == 1
    assert 0.2 < cloud.sum() / (mask != 255).sum() < 0.8
    assert res["OUTPUT_POLYGONS"] == str(polys)

    layer = QgsVectorLayer(str(polys), "clouds", "ogr")
    assert layer.isValid() and layer.featureCount() == 1            # dissolved: one multipolygon
    assert layer.crs() == QgsRasterLayer(str(s2_nodata_block), "s", "gdal").crs()
    feature = next(layer.getFeatures())
    geom = feature.geometry()
    assert geom.isGeosValid()
    pixel_area = 10.0 * 10.0
    assert geom.area() == pytest.approx(cloud.sum() * pixel_area, rel=1e-9)
    assert feature["area"] == pytest.approx(geom.area())
    assert feature["parts"] == len(geom.asGeometryCollection()) > 1
    assert feature["class"] == "cloud" and feature["value"] == 1
    # the polygons cover exactly the cloud pixels (pixel centres inside <=> mask == 1)
    np.testing.assert_array_equal(rasterize_like(polys, out) == 1, cloud)


def test_min_area_drops_small_parts(run, s2_nodata_block, model, half_cloud_threshold, tmp_path, log_feedback):
    min_area = 1000.0   # m² (UTM): parts of fewer than 10 pixels of 10 m go
    out, polys = tmp_path / "m.tif", tmp_path / "clouds_big.gpkg"
    feedback = log_feedback()
    run({"INPUT": str(s2_nodata_block), "MODEL_FILE": model, "THRESHOLD": half_cloud_threshold,
         "MIN_AREA": min_area, "OUTPUT": str(out), "OUTPUT_POLYGONS": str(polys)}, feedback)
    layer = QgsVectorLayer(str(polys), "clouds", "ogr")
    feats = list(layer.getFeatures())
    assert len(feats) <= 1
    parts = feats[0].geometry().asGeometryCollection() if feats else []
    assert all(p.area() >= min_area for p in parts)
    dropped = [line for line in feedback.lines if line.startswith("Cloud polygons:")]
    assert dropped and "dropped" in dropped[0]
    # all big parts are kept: the kept area equals the area of cloud components >= min_area pixels
    from scipy import ndimage

    labels, n = ndimage.label(check_mask(out, s2_nodata_block) == 1)     # 4-connected, as GDAL polygonises
    sizes = ndimage.sum(np.ones_like(labels), labels, index=np.arange(1, n + 1)) * 100.0
    assert sum(p.area() for p in parts) == pytest.approx(sizes[sizes >= min_area].sum(), rel=1e-9)


def test_polygons_per_class(run, s2_sample, shadow_model, tmp_path):
    """Cloud + shadow model: one dissolved multipolygon per class, each covering exactly its pixels."""
    out, polys = tmp_path / "m.tif", tmp_path / "classes.gpkg"
    res = run({"INPUT": str(s2_sample), "MODEL_FILE": shadow_model, "OUTPUT": str(out),
               "OUTPUT_POLYGONS": str(polys)})
    mask = check_mask(out, s2_sample)
    assert (mask == 1).any() and (mask == 2).any()        # the random model gives both classes here
    layer = QgsVectorLayer(str(polys), "classes", "ogr")
    features = {f["class"]: f for f in layer.getFeatures()}
    assert sorted(features) == ["cloud", "shadow"] and res["OUTPUT_POLYGONS"] == str(polys)
    for name, value in (("cloud", 1), ("shadow", 2)):
        f = features[name]
        assert f["value"] == value and f.geometry().isGeosValid()
        assert f["area"] == pytest.approx((mask == value).sum() * 100.0, rel=1e-9)
        single = tmp_path / f"{name}.gpkg"
        from osgeo import gdal

        gdal.VectorTranslate(str(single), str(polys), where=f"value = {value}")
        np.testing.assert_array_equal(rasterize_like(single, out) == 1, mask == value)


def test_no_cloud_gives_an_empty_polygon_layer(run, s2_sample, model, tmp_path):
    polys = tmp_path / "none.gpkg"
    res = run({"INPUT": str(s2_sample), "MODEL_FILE": model, "THRESHOLD": 0.999999, "OUTPUT": str(tmp_path / "m.tif"),
               "OUTPUT_POLYGONS": str(polys)})
    assert res["CLOUD_PIXELS"] == 0          # the random model's probabilities stay below 0.999999 here
    layer = QgsVectorLayer(str(polys), "clouds", "ogr")
    assert layer.isValid() and layer.featureCount() == 0


# ---------------------------------------------------------------------------------------- errors
def test_tampered_weights_are_refused(run, s2_sample, tiny_models, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    for suffix in (".json", ".safetensors"):
        (models / f"cloudmask{suffix}").write_bytes((tiny_models / f"cloudmask{suffix}").read_bytes())
    weights = models / "cloudmask.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-100] ^= 0x80
    weights.write_bytes(bytes(blob))
    out = tmp_path / "m.tif"
    with pytest.raises(QgsProcessingException, match="sha256"):
        run({"INPUT": str(s2_sample), "MODEL_FILE": str(models / "cloudmask.json"), "OUTPUT": str(out)})
    assert not out.exists()


def test_translation_model_is_refused(run, s2_sample, tiny_models, tmp_path):
    with pytest.raises(QgsProcessingException, match="not a 'cloudmask' model"):
        run({"INPUT": str(s2_sample), "MODEL_FILE": str(tiny_models / "sar2eo_rgb.json"),
             "OUTPUT": str(tmp_path / "m.tif")})


def test_missing_bundled_weights_are_refused(run, s2_sample, tmp_path, monkeypatch):
    empty = tmp_path / "no_models"
    empty.mkdir()
    monkeypatch.setattr(modelfile, "BUNDLED_DIR", empty)
    out = tmp_path / "m.tif"
    with pytest.raises(QgsProcessingException, match="No bundled cloud model fits this layer: no cloud model"):
        run({"INPUT": str(s2_sample), "OUTPUT": str(out)})
    assert not out.exists()


def test_cancelled_run_leaves_no_output(run, s2_sample, model, tmp_path, log_feedback, leftovers):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    feedback = log_feedback(cancel_on_progress=True)
    with pytest.raises(QgsProcessingException, match="[Cc]ancel"):
        run({"INPUT": str(s2_sample), "MODEL_FILE": model, "TILE_SIZE": 32, "OVERLAP": 0, "BATCH_SIZE": 1,
             "OUTPUT": str(out_dir / "m.tif"), "OUTPUT_PROBABILITY": str(out_dir / "p.tif"),
             "OUTPUT_POLYGONS": str(out_dir / "c.gpkg")}, feedback)
    assert feedback.isCanceled()
    assert leftovers(out_dir) == []


def test_cancel_while_polygonising_removes_the_rasters(run, s2_sample, model, tmp_path, monkeypatch, leftovers):
    """Cancelling after inference (during the polygon step) leaves no new output and keeps earlier ones."""
    from sar2eo_cloud_plugin.processing import cloudmask_algorithm as cm

    real = cm.class_polygons

    def cancel_then_polygonise(mask_path, min_area, feedback, *args):
        feedback.cancel()
        return real(mask_path, min_area, feedback, *args)

    monkeypatch.setattr(cm, "class_polygons", cancel_then_polygonise)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(QgsProcessingException, match="[Cc]ancel"):
        run({"INPUT": str(s2_sample), "MODEL_FILE": model, "THRESHOLD": 0.3, "OUTPUT": str(out_dir / "m.tif"),
             "OUTPUT_PROBABILITY": str(out_dir / "p.tif"), "OUTPUT_POLYGONS": str(out_dir / "c.gpkg")})
    assert leftovers(out_dir) == []
    (out_dir / "m.tif").write_bytes(b"an earlier mask")
    with pytest.raises(QgsProcessingException, match="[Cc]ancel"):
        run({"INPUT": str(s2_sample), "MODEL_FILE": model, "OUTPUT": str(out_dir / "m.tif"),
             "OUTPUT_POLYGONS": str(out_dir / "c.gpkg")})
    assert leftovers(out_dir) == ["m.tif"] and (out_dir / "m.tif").read_bytes() == b"an earlier mask"


# ---------------------------------------------------------------------------------------- bundled, styling
# Golden regression of the bundled default model (auto -> ukis_csmask_4b_l2a) on the five real L2A patches
# (all clear-sky scenes): pixels per class, measured when the model was imported. A change of more than
# 1 % of the patch (144 px) in any class means the model, its preprocessing or the resampling changed.
GOLDEN_DEFAULT = {
    "S2A_MSIL2A_20170613T101031_87_48": {"clear": 14400, "cloud": 0, "shadow": 0},    # bright bare fields
    "S2A_MSIL2A_20170617T113321_36_85": {"clear": 14400, "cloud": 0, "shadow": 0},
    "S2A_MSIL2A_20170617T113321_4_55": {"clear": 14400, "cloud": 0, "shadow": 0},
    "S2B_MSIL2A_20170924T93020_69_24": {"clear": 13278, "cloud": 0, "shadow": 1122},  # dark water read as shadow
    "S2B_MSIL2A_20180204T94161_57_38": {"clear": 14400, "cloud": 0, "shadow": 0},    # snow: not cloud
}


def test_cloud_mask_bundled_model(run, s2_samples, tmp_path):
    """The BUNDLED models (no MODEL_FILE, MODEL auto) on the real patches: the 4-band L2A model is chosen,
    and its class counts match the golden figures."""
    for s2 in s2_samples:
        out = tmp_path / f"{s2.stem}.tif"
        res = run({"INPUT": str(s2), "OUTPUT": str(out)}, default_tile=True)
        mask = check_mask(out, s2)
        assert res["MODEL_USED"] == "ukis_csmask_4b_l2a" and res["LEVEL_USED"] == "L2A"
        counts = {name: int((mask == value).sum()) for name, value in (("clear", 0), ("cloud", 1), ("shadow", 2))}
        golden = GOLDEN_DEFAULT[s2.stem.replace("_L2A12", "")]
        assert all(abs(counts[k] - golden[k]) <= 144 for k in golden), (s2.stem, counts, golden)
    from sar2eo_cloud_plugin.core.cloud import model_choices

    rgb = run({"INPUT": str(s2_samples[0]), "MODEL": model_choices().index("cloudmask"),
               "OUTPUT": str(tmp_path / "rgb.tif")},
              default_tile=True)
    assert rgb["MODEL_USED"] == "cloudmask"
    assert rgb["THRESHOLD_USED"] == pytest.approx(modelfile.read_card(BUNDLED_CLOUD).output["threshold"])


def test_bfloat16_precision_close_to_float32(run, s2_samples, tmp_path):
    """PRECISION=1 (bfloat16 autocast, the faster option) on the bundled default model and a real patch: the
    class probabilities stay close to float32's and the classes agree."""
    outs = {}
    for precision in (0, 1):
        mask, prob = tmp_path / f"m{precision}.tif", tmp_path / f"p{precision}.tif"
        run({"INPUT": str(s2_samples[3]), "PRECISION": precision, "OUTPUT": str(mask),
             "OUTPUT_PROBABILITY": str(prob)}, default_tile=True)
        with rasterio.open(prob) as ds:
            outs[precision] = (read(mask)[0], ds.read())
    (m32, p32), (m16, p16) = outs[0], outs[1]
    diff = np.abs(p32 - p16)
    assert diff.mean() < 0.01 and diff.max() < 0.2     # measured: 0.0075 and 0.12, where two classes are close
    assert np.mean(m32 == m16) > 0.98                     # measured 0.986 on this patch (shadow edges)


def test_outputs_open_styled(provider, s2_sample, model, tmp_path):
    project = QgsProject.instance()
    context = QgsProcessingContext()
    context.setProject(project)
    alg = QgsApplication.processingRegistry().createAlgorithmById(ALG)
    feedback = QgsProcessingFeedback()
    paths = {k: str(tmp_path / n) for k, n in (("OUTPUT", "m.tif"), ("OUTPUT_PROBABILITY", "p.tif"),
                                                 ("OUTPUT_POLYGONS", "c.gpkg"))}
    params = {"INPUT": str(s2_sample), "MODEL_FILE": model, "THRESHOLD": 0.3, "TILE_SIZE": FAST_TILE}
    params.update({k: QgsProcessingOutputLayerDefinition(v, project) for k, v in paths.items()})
    results, ok = alg.run(params, context, feedback)
    assert ok, results
    assert handle_algorithm_results(alg, context, feedback, params)
    by_source = {lyr.source().split("|")[0]: lyr for lyr in project.mapLayers().values()}
    mask = by_source[paths["OUTPUT"]]
    assert mask.renderer().type() == "paletted"
    classes = {c.value: c.label for c in mask.renderer().classes()}
    assert classes == {0: "Clear", 1: "Cloud", 2: "Cloud shadow", 255: "No data"}
    assert by_source[paths["OUTPUT_PROBABILITY"]].renderer().type() == "singlebandgray"
    if paths["OUTPUT_POLYGONS"] in by_source:
        assert by_source[paths["OUTPUT_POLYGONS"]].renderer().symbol().color().name() == "#ff00ff"
    project.removeAllMapLayers()


def test_runs_inside_a_model(provider, s2_sample, model, tmp_path, log_feedback):
    """A model built in code (as the modeler does): cloud mask child fed from model parameters, its mask
    and polygons as model outputs, and the mask chained into a second algorithm."""
    import processing
    from qgis.core import (
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelChildParameterSource as Source,
        QgsProcessingModelOutput,
        QgsProcessingModelParameter,
        QgsProcessingParameterFile,
        QgsProcessingParameterRasterLayer,
    )

    m = QgsProcessingModelAlgorithm("cloud mask test model", "tests")
    m.addModelParameter(QgsProcessingParameterRasterLayer("s2", "Sentinel-2"), QgsProcessingModelParameter("s2"))
    m.addModelParameter(QgsProcessingParameterFile("model", "Model", extension="json"),
                        QgsProcessingModelParameter("model"))
    mask = QgsProcessingModelChildAlgorithm(ALG)
    mask.setChildId("mask")
    mask.addParameterSources("INPUT", [Source.fromModelParameter("s2")])
    mask.addParameterSources("MODEL_FILE", [Source.fromModelParameter("model")])
    mask.addParameterSources("TILE_SIZE", [Source.fromStaticValue(FAST_TILE)])
    mask.addParameterSources("THRESHOLD", [Source.fromStaticValue(0.3)])
    outputs = {}
    for name, child_output in (("mask_out", "OUTPUT"), ("clouds_out", "OUTPUT_POLYGONS")):
        out = QgsProcessingModelOutput(name)
        out.setChildId("mask")
        out.setChildOutputName(child_output)
        outputs[name] = out
    mask.setModelOutputs(outputs)
    m.addChildAlgorithm(mask)
    stats = QgsProcessingModelChildAlgorithm("native:rasterlayerstatistics")
    stats.setChildId("stats")
    stats.addParameterSources("INPUT", [Source.fromChildOutput("mask", "OUTPUT")])
    stats.addParameterSources("BAND", [Source.fromStaticValue(1)])
    m.addChildAlgorithm(stats)
    m.updateDestinationParameters()
    dest = {p.name(): p for p in m.destinationParameterDefinitions()}
    mask_param = next(n for n in dest if n.endswith("mask_out"))
    clouds_param = next(n for n in dest if n.endswith("clouds_out"))

    res = processing.run(m, {"s2": str(s2_sample), "model": model, mask_param: str(tmp_path / "mask.tif"),
                             clouds_param: str(tmp_path / "clouds.gpkg")}, feedback=log_feedback())
    mask_arr = check_mask(tmp_path / "mask.tif", s2_sample)
    assert Path(res[mask_param]) == tmp_path / "mask.tif"
    assert QgsVectorLayer(str(tmp_path / "clouds.gpkg"), "c", "ogr").isValid()
    assert (mask_arr != 255).all()


REAL_QGIS_SCRIPT = r'''
import json, sys, traceback
sys.path.insert(0, {repo!r})
report = {{"layers": [], "error": None}}
try:
    import gc
    from qgis.core import QgsApplication, QgsProject
    from sar2eo_cloud_plugin.processing.provider import Sar2EoCloudProvider
    registry = QgsApplication.processingRegistry()
    if registry.providerById("sar2eo_cloud") is None:
        registry.addProvider(Sar2EoCloudProvider())
    import processing
    for i in range(2):   # twice: the second run must get fresh styling post-processors
        processing.runAndLoadResults("sar2eo_cloud:translate_sar_to_eo", {{
            "INPUT": {s1!r}, "MODEL_FILE": {tmodel!r}, "OUTPUT": {out!r} + f"/eo{{i}}.tif"}})
        processing.runAndLoadResults("sar2eo_cloud:cloud_mask", {{
            "INPUT": {s2!r}, "MODEL_FILE": {cmodel!r}, "TILE_SIZE": 128, "THRESHOLD": 0.3,
            "OUTPUT": {out!r} + f"/m{{i}}.tif", "OUTPUT_PROBABILITY": {out!r} + f"/p{{i}}.tif",
            "OUTPUT_POLYGONS": {out!r} + f"/c{{i}}.gpkg"}})
        gc.collect()
    for layer in QgsProject.instance().mapLayers().values():
        report["layers"].append([layer.source().split("|")[0], layer.renderer().type()])
except Exception:
    report["error"] = traceback.format_exc()
with open({report!r}, "w") as fh:
    json.dump(report, fh)
from qgis.PyQt.QtCore import QTimer
QTimer.singleShot(200, lambda: QgsApplication.exit(0))
'''


@pytest.mark.xvfb
@pytest.mark.slow
def test_real_qgis_desktop_runs_and_styles_both_algorithms(s1_sample, s2_sample, tiny_models, tmp_path):
    """The real QGIS desktop under Xvfb: both algorithms twice through runAndLoadResults, layers loaded
    styled. Regression: importing smp there pulled in triton, whose LLVM crashed QGIS (Mesa's LLVM)."""
    import json
    import os
    import shutil
    import subprocess
    import sysconfig

    if not (shutil.which("xvfb-run") and shutil.which("qgis")):
        pytest.skip("needs xvfb-run and the qgis desktop binary")
    out = tmp_path / "out"
    out.mkdir()
    report = tmp_path / "report.json"
    script = tmp_path / "script.py"
    script.write_text(REAL_QGIS_SCRIPT.format(
        repo=str(Path(__file__).resolve().parents[2]), s1=str(s1_sample), s2=str(s2_sample),
        tmodel=str(tiny_models / "sar2eo_rgb.json"), cmodel=str(tiny_models / "cloudmask.json"),
        out=str(out), report=str(report)))
    env = dict(os.environ, PYTHONPATH=sysconfig.get_paths()["purelib"])
    env.pop("QT_QPA_PLATFORM", None)
    proc = subprocess.run(["xvfb-run", "-a", "qgis", "--nologo", "--noversioncheck", "--profiles-path",
                           str(tmp_path / "profiles"), "--code", str(script)],
                          env=env, capture_output=True, text=True, timeout=540)
    assert report.is_file(), f"QGIS wrote no report (rc {proc.returncode}): {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    data = json.loads(report.read_text())
    assert data["error"] is None, data["error"]
    kinds = {Path(src).name: kind for src, kind in data["layers"]}
    for i in range(2):
        assert kinds[f"eo{i}.tif"] == "multibandcolor"
        assert kinds[f"m{i}.tif"] == "paletted"
        assert kinds[f"p{i}.tif"] == "singlebandgray"
        assert kinds[f"c{i}.gpkg"] == "singleSymbol"


def test_sentinel2_products_as_downloaded(run, tmp_path, log_feedback):
    """A GENERATED miniature L1C .SAFE product (real sample values, invented metadata; tests/core/safe_fixture.py)
    as a folder, as its zip and as its MTD xml: the algorithm stacks its bands, detects L1C, and writes the
    mask on the product's 10 m grid."""
    from tests.core import safe_fixture

    safe_dir = safe_fixture.make_safe(tmp_path / "products", "L1C")
    forms = {"folder": safe_dir, "zip": safe_fixture.zip_safe(safe_dir, tmp_path / f"{safe_dir.stem}.zip"),
             "xml": next(safe_dir.glob("MTD_MSIL1C.xml"))}
    masks = {}
    for form, path in forms.items():
        out = tmp_path / f"mask_{form}.tif"
        feedback = log_feedback()
        res = run({"INPUT": str(path), "OUTPUT": str(out), "OUTPUT_POLYGONS": str(tmp_path / f"p_{form}.gpkg")},
                  feedback, default_tile=True)
        assert res["LEVEL_USED"] == "L1C" and res["MODEL_USED"] == "ukis_csmask_4b_l1c", form
        assert any("bands stacked on its 10 m grid" in line for line in feedback.lines)
        with rasterio.open(out) as ds, rasterio.open(safe_fixture.SAMPLE) as sample:
            assert (ds.width, ds.height, ds.crs, ds.transform) == (120, 120, sample.crs, sample.transform)
            masks[form] = ds.read(1)
        assert QgsVectorLayer(str(tmp_path / f"p_{form}.gpkg"), "p", "ogr").crs().authid() == "EPSG:32633"
    np.testing.assert_array_equal(masks["folder"], masks["zip"])
    np.testing.assert_array_equal(masks["folder"], masks["xml"])


def test_polygons_to_a_format_without_geometry_are_refused(run, s2_sample, model, tmp_path, leftovers):
    """A .csv (or spreadsheet) destination for the polygons would lose their geometry: refused before the run."""
    for name in ("clouds.csv", "clouds.xlsx"):
        with pytest.raises(QgsProcessingException):
            run({"INPUT": str(s2_sample), "MODEL_FILE": model, "OUTPUT": str(tmp_path / "m.tif"),
                 "OUTPUT_POLYGONS": str(tmp_path / name)})
    assert leftovers(tmp_path) == []
    provider = QgsApplication.processingRegistry().providerById("sar2eo_cloud")
    assert "gpkg" in provider.supportedOutputVectorLayerExtensions()
    assert "csv" not in provider.supportedOutputVectorLayerExtensions()

"""Fixtures for the GUI tests (pytest-qgis stub iface; headless Qt).

``big_s1`` is GENERATED from real data: the real Sentinel-1 sample tiled 17 x 17 times into a
2040 x 2040 raster (same CRS and pixel size), only so that a run lasts long enough to be cancelled.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsSettings
from qgis.PyQt.QtCore import QCoreApplication, QEventLoop


def wait_until(predicate, timeout_s: float = 60.0, step_ms: int = 50) -> bool:
    """Process Qt events (the task manager's signals arrive through them) until predicate() is true."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        QCoreApplication.processEvents(QEventLoop.AllEvents, step_ms)
        if predicate():
            return True
        time.sleep(step_ms / 1000.0)
    QCoreApplication.processEvents()
    return bool(predicate())


def flush_deletes() -> None:
    """Deliver deleteLater() so removed widgets/actions really disappear."""
    from qgis.PyQt.QtCore import QEvent

    for _ in range(3):
        QCoreApplication.sendPostedEvents(None, QEvent.DeferredDelete)
        QCoreApplication.processEvents()


@pytest.fixture(scope="session", autouse=True)
def _release_qgis_objects_before_exit(qgis_app):
    """Tear down what the GUI tests created while QGIS is still initialised (pytest-qgis calls
    exitQgis at the end of the session; QGIS objects destroyed after that can crash the exit)."""
    yield
    import gc

    assert wait_until(lambda: QgsApplication.taskManager().countActiveTasks() == 0, 30)
    QgsProject.instance().removeAllMapLayers()
    flush_deletes()
    gc.collect()
    flush_deletes()


@pytest.fixture(autouse=True)
def _plugin_owns_the_provider(qgis_app):
    """Other test modules register the 'sar2eo_cloud' provider directly and leave it registered; the GUI
    tests load the plugin, which must own (and on unload remove) the provider, so drop a leftover one."""
    registry = QgsApplication.processingRegistry()
    leftover = registry.providerById("sar2eo_cloud")
    if leftover is not None:
        registry.removeProvider(leftover)
    yield


@pytest.fixture()
def clean_settings():
    QgsSettings().remove("sar2eo_cloud_plugin")
    yield
    QgsSettings().remove("sar2eo_cloud_plugin")


@pytest.fixture()
def plugin(qgis_iface, qgis_new_project, clean_settings):
    """The plugin loaded into the pytest-qgis stub iface; unloaded afterwards."""
    from sar2eo_cloud_plugin import classFactory

    plug = classFactory(qgis_iface)
    plug.initGui()
    yield plug
    plug.unload()
    flush_deletes()
    assert wait_until(lambda: QgsApplication.taskManager().countActiveTasks() == 0, 30)


@pytest.fixture()
def s1_layer(s1_sample):
    layer = QgsRasterLayer(str(s1_sample), Path(s1_sample).stem)
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    return layer


@pytest.fixture()
def s2_layer(s2_sample):
    layer = QgsRasterLayer(str(s2_sample), Path(s2_sample).stem)
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    return layer


@pytest.fixture(scope="session")
def big_s1(s1_sample, tmp_path_factory) -> Path:
    """GENERATED from real data: the real S1 sample tiled to 2040 x 2040 pixels (for cancel tests)."""
    import numpy as np
    import rasterio
    from rasterio.transform import Affine

    out = tmp_path_factory.mktemp("big_s1") / "GENERATED_from_real_s1_tiled_2040_VVVH.tif"
    with rasterio.open(s1_sample) as src:
        data = src.read()
        profile = src.profile.copy()
        descriptions = src.descriptions
        t = src.transform
    reps = 17
    big = np.tile(data, (1, reps, reps))
    profile.update(width=big.shape[2], height=big.shape[1], tiled=True, blockxsize=256, blockysize=256,
                   transform=Affine(t.a, t.b, t.c, t.d, t.e, t.f))
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(big)
        for i, d in enumerate(descriptions, 1):
            dst.set_band_description(i, d or "")
        dst.update_tags(NOTE="GENERATED for tests: the real BigEarthNet S1 patch tiled 17x17; not a real scene")
    return out

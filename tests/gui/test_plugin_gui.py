"""The plugin's desktop GUI driven through pytest-qgis's stub iface (headless Qt).

Real data: the Sentinel-1 / Sentinel-2 samples in sample_data/. Models: the GENERATED random-weight
``tiny_models`` (the dock's advanced "Model file" override), so results here say nothing about quality.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from qgis.core import Qgis, QgsApplication, QgsMapLayerType, QgsProject, QgsRasterLayer
from qgis.PyQt.QtWidgets import QAction, QDockWidget, QToolBar

from sar2eo_cloud_plugin import deps
from sar2eo_cloud_plugin.gui.settings import PluginSettings

from .conftest import flush_deletes, wait_until

OUR_ACTION_NAMES = {"sar2eo_dock_toggle", "sar2eo_translate_layer", "sar2eo_translate_layer_dialog",
                    "sar2eo_cloud_mask_layer", "sar2eo_cloud_mask_layer_dialog", "sar2eo_translate_menu",
                    "sar2eo_translate_menu_dialog", "sar2eo_cloud_mask_menu", "sar2eo_cloud_mask_menu_dialog"}


def our_actions(main_window):
    return [a for a in main_window.findChildren(QAction) if a.objectName() in OUR_ACTION_NAMES]


def project_layer_ids():
    return set(QgsProject.instance().mapLayers())


# ------------------------------------------------------------------------------ load / unload
def test_load_creates_dock_actions_and_provider(plugin, qgis_iface):
    main = qgis_iface.mainWindow()
    dock = main.findChild(QDockWidget, "Sar2EoCloudDock")
    assert dock is plugin.dock
    assert {a.objectName() for a in our_actions(main)} == OUR_ACTION_NAMES
    assert QgsApplication.processingRegistry().providerById("sar2eo_cloud") is not None
    assert QgsApplication.processingRegistry().algorithmById("sar2eo_cloud:translate_sar_to_eo") is not None
    # four layer-tree entries, registered for raster layers, attached per layer (allLayers=False)
    calls = qgis_iface.addCustomActionForLayerType.call_args_list
    assert len(calls) == 4
    assert all(c.args[2] == QgsMapLayerType.RasterLayer and c.args[3] is False for c in calls)
    assert [c.args[0].text() for c in calls] == ["Translate SAR to EO", "Translate SAR to EO…",
                                                 "Cloud mask", "Cloud mask…"]
    toolbar = main.findChild(QToolBar, "Sar2EoCloudToolbar")
    assert toolbar is not None
    assert [a.objectName() for a in toolbar.actions()] == ["sar2eo_dock_toggle", "sar2eo_translate_menu",
                                                            "sar2eo_cloud_mask_menu"]
    assert all(not a.icon().isNull() for a in toolbar.actions())
    if (Path(__file__).resolve().parents[2] / "sar2eo_cloud_plugin" / "resources.py").is_file():
        from qgis.PyQt.QtCore import QFile

        # built checkout: icons come from the compiled resources.qrc
        assert QFile.exists(":/plugins/sar2eo_cloud_plugin/icons/dock.svg")
    # the dock toggle shows/hides the dock
    assert not dock.isVisible()
    plugin.dock_action.trigger()
    assert plugin.dock_action.isChecked()


def test_unload_leaves_nothing_behind_and_reload_works(qgis_iface, qgis_new_project, clean_settings, monkeypatch):
    from sar2eo_cloud_plugin import classFactory

    menu = []
    monkeypatch.setattr(qgis_iface, "addPluginToMenu", lambda name, action: menu.append((name, action.objectName())),
                        raising=False)
    monkeypatch.setattr(qgis_iface, "removePluginMenu",
                        lambda name, action: menu.remove((name, action.objectName())), raising=False)
    main = qgis_iface.mainWindow()
    registry = QgsApplication.processingRegistry()
    for round_ in range(2):  # load, unload, load again (Plugin Reloader style)
        qgis_iface.addCustomActionForLayerType.reset_mock()
        qgis_iface.removeCustomActionForLayerType.reset_mock()
        plug = classFactory(qgis_iface)
        plug.initGui()
        assert main.findChild(QDockWidget, "Sar2EoCloudDock") is not None
        assert len(menu) == 5, menu
        assert registry.providerById("sar2eo_cloud") is not None
        added = [c.args[0] for c in qgis_iface.addCustomActionForLayerType.call_args_list]
        plug.unload()
        flush_deletes()
        removed = [c.args[0] for c in qgis_iface.removeCustomActionForLayerType.call_args_list]
        assert sorted(map(id, removed)) == sorted(map(id, added)) and len(added) == 4, f"round {round_}"
        assert menu == []
        assert main.findChild(QDockWidget, "Sar2EoCloudDock") is None
        assert main.findChild(QToolBar, "Sar2EoCloudToolbar") is None
        assert our_actions(main) == []
        assert registry.providerById("sar2eo_cloud") is None
        # no signal left connected: adding a layer after unload must not reach the plugin
        qgis_iface.addCustomActionForLayer.reset_mock()
        layer = QgsRasterLayer(str(Path(__file__).resolve().parents[2] / "sample_data" / "s1" /
                                   "S1A_IW_GRDH_1SDV_20170613T165043_33UUP_87_48_VVVH.tif"), "after unload")
        QgsProject.instance().addMapLayer(layer)
        assert qgis_iface.addCustomActionForLayer.call_count == 0
        QgsProject.instance().removeMapLayer(layer.id())


# ------------------------------------------------------------------------------ layer actions
def test_layer_actions_follow_layer_kind(plugin, qgis_iface, s1_layer, s2_layer):
    attached = {}
    for call in qgis_iface.addCustomActionForLayer.call_args_list:
        action, layer = call.args
        attached.setdefault(layer.id(), []).append(action.text())
    assert attached[s1_layer.id()] == ["Translate SAR to EO", "Translate SAR to EO…"]
    assert attached[s2_layer.id()] == ["Cloud mask", "Cloud mask…"]


def test_layers_present_before_load_get_actions(qgis_iface, qgis_new_project, clean_settings, s1_layer):
    from sar2eo_cloud_plugin import classFactory

    qgis_iface.addCustomActionForLayer.reset_mock()
    plug = classFactory(qgis_iface)
    plug.initGui()
    try:
        layers = [c.args[1] for c in qgis_iface.addCustomActionForLayer.call_args_list]
        assert layers == [s1_layer, s1_layer]
    finally:
        plug.unload()
        flush_deletes()


def test_dialog_entry_opens_processing_dialog_with_layer(plugin, qgis_iface, s1_layer, monkeypatch):
    import processing

    calls = []
    monkeypatch.setattr(processing, "execAlgorithmDialog", lambda alg_id, params: calls.append((alg_id, params)))
    qgis_iface.setActiveLayer(s1_layer)
    plugin.actions.dialog_actions["translate"].trigger()
    assert calls == [("sar2eo_cloud:translate_sar_to_eo", {"INPUT": s1_layer.id()})]


def test_one_click_without_raster_warns(plugin, qgis_iface):
    qgis_iface._active_layer_id = None
    plugin.actions.layer_actions["translate"].trigger()
    warnings = qgis_iface.messageBar().get_messages(Qgis.Warning)
    assert any("select a raster layer" in m for m in warnings)


# ------------------------------------------------------------------------------ dock
def test_dock_widgets_and_task_follow_layer(plugin, s1_layer, s2_layer, tiny_models):
    dock = plugin.dock
    dock.set_layer(s2_layer)
    assert dock.task == "cloud_mask" and not dock.band_set_combo.isEnabled()
    assert dock.tile_spin.value() == 512
    dock.set_layer(s1_layer)
    assert dock.task == "translate" and dock.band_set_combo.isEnabled()
    assert dock.tile_spin.value() == 256
    from sar2eo_cloud_plugin.gui.layers import has_bundled_model

    if not has_bundled_model("translate", "rgb"):  # Run needs weights: bundled ones or a model file
        assert not dock.run_button.isEnabled()
        assert "The model 'sar2eo_rgb' is not installed" in dock.status_label.text()
    dock.model_file.setFilePath(str(tiny_models / "sar2eo_rgb.json"))
    assert dock.status_label.text() == ""
    assert dock.run_button.isEnabled() and not dock.cancel_button.isEnabled()
    # each task keeps its own model file
    dock.set_task("cloud_mask")
    assert dock.model_file.filePath() == ""
    dock.model_file.setFilePath(str(tiny_models / "cloudmask.json"))
    dock.set_task("translate")
    assert dock.model_file.filePath() == str(tiny_models / "sar2eo_rgb.json")
    dock.set_task("cloud_mask")
    assert dock.model_file.filePath() == str(tiny_models / "cloudmask.json")
    dock.set_task("translate")
    assert dock.output_file.lineEdit().placeholderText() == "[Save to temporary file]"
    dock.device_combo.setCurrentIndex(dock.device_combo.findData("cuda"))
    text = dock.describe_devices()
    assert "CPU" in text or "CUDA" in text
    assert dock.device_label.text() == text
    cuda_item = dock.device_combo.model().item(dock.device_combo.findData("cuda"))
    if text.startswith("CPU only"):
        assert not cuda_item.isEnabled() and dock.device == "auto"
    else:
        assert cuda_item.isEnabled() and dock.device == "cuda"
    params = dock.parameters()
    assert params["INPUT"] == s1_layer.id() and params["VV_BAND"] == 1 and params["VH_BAND"] == 2
    assert params["OUTPUT"].sink.staticValue() == "TEMPORARY_OUTPUT"


def test_settings_are_remembered(plugin, qgis_iface, tmp_path, s1_layer):
    dock = plugin.dock
    dock.set_layer(s1_layer)
    dock.device_combo.setCurrentIndex(dock.device_combo.findData("cpu"))
    dock.band_set_combo.setCurrentIndex(dock.band_set_combo.findData("nir_swir_re"))
    dock.tile_spin.setValue(128)
    dock.output_folder.setFilePath(str(tmp_path))
    s = PluginSettings()
    assert (s.device, s.band_set, s.tile_size("translate"), s.output_folder) == ("cpu", "nir_swir_re", 128,
                                                                                  str(tmp_path))
    assert s.tile_size("cloud_mask") == 512
    # a new session (plugin reloaded) restores them
    plugin.unload()
    flush_deletes()
    plugin.initGui()
    dock = plugin.dock
    assert (dock.device, dock.band_set, dock.output_folder.filePath()) == ("cpu", "nir_swir_re", str(tmp_path))
    dock.set_layer(s1_layer)
    assert dock.tile_spin.value() == 128


def test_missing_package_disables_only_what_cannot_run(qgis_iface, qgis_new_project, clean_settings, monkeypatch,
                                                        s1_layer, s2_layer, tiny_models):
    from sar2eo_cloud_plugin import classFactory

    real = importlib.util.find_spec
    # No onnxruntime (the preferred runtime) and no smp: translation runs on torch, the cloud mask cannot run,
    # and the message asks for the preferred runtime.
    monkeypatch.setattr(deps.importlib.util, "find_spec",
                        lambda name, *a, **k: None if name in ("segmentation_models_pytorch", "onnxruntime")
                        else real(name, *a, **k))
    qgis_iface.messageBar().clear_messages()
    plug = classFactory(qgis_iface)
    plug.initGui()  # still loads
    try:
        warnings = qgis_iface.messageBar().get_messages(Qgis.Warning)
        assert len(warnings) == 1
        # the cloud mask has no complete runtime (no onnxruntime, torch without smp): the preferred one is asked for
        assert "onnxruntime is not installed" in warnings[0]
        assert "pip install onnxruntime==1.32.0" in warnings[0] and "Install dependencies" in warnings[0]
        acts = plug.actions
        assert acts.layer_actions["translate"].isEnabled() and acts.dialog_actions["translate"].isEnabled()
        assert not acts.layer_actions["cloud_mask"].isEnabled() and not acts.dialog_actions["cloud_mask"].isEnabled()
        dock = plug.dock
        dock.set_layer(s2_layer)
        dock.model_file.setFilePath(str(tiny_models / "cloudmask.json"))
        assert dock.task == "cloud_mask" and not dock.run_button.isEnabled()
        assert "onnxruntime" in dock.status_label.text() and not dock.install_button.isHidden()
        dock.set_layer(s1_layer)
        dock.model_file.setFilePath(str(tiny_models / "sar2eo_rgb.json"))
        assert dock.task == "translate" and dock.run_button.isEnabled()
        assert dock.status_label.text() == ""
    finally:
        plug.unload()
        flush_deletes()


# ------------------------------------------------------------------------------ running
def _run_dock(dock, timeout_s=120):
    results = []
    dock.runFinished.connect(lambda state, res, layers: results.append((state, res, layers)))
    run = dock.start_run()
    assert run is not None, dock.log.toPlainText()
    assert dock.cancel_button.isEnabled() and not dock.run_button.isEnabled()
    assert wait_until(lambda: results, timeout_s), dock.log.toPlainText()
    return run, results[0]


@pytest.mark.slow
def test_dock_translates_real_s1_sample(plugin, s1_layer, tiny_models):
    dock = plugin.dock
    dock.set_layer(s1_layer)
    dock.model_file.setFilePath(str(tiny_models / "sar2eo_rgb.json"))
    dock.tile_spin.setValue(64)
    dock.overlap_spin.setValue(16)
    before = project_layer_ids()
    run, (state, results, layers) = _run_dock(dock)
    assert state == "ok", dock.log.toPlainText()
    new = [QgsProject.instance().mapLayer(i) for i in project_layer_ids() - before]
    assert len(new) == 1 and new[0] is layers[0]
    out = new[0]
    assert out.isValid() and out.bandCount() == 3
    assert out.crs() == s1_layer.crs()
    assert out.extent() == s1_layer.extent()
    assert out.name() == f"{s1_layer.name()} SAR2EO rgb"
    assert out.renderer().type() == "multibandcolor"  # the algorithm's styling post-processor ran
    assert results["DEVICE_USED"] == "cpu" or results["DEVICE_USED"] == "cuda"
    assert dock.progress.value() == 100
    assert "Done in" in dock.log.toPlainText()
    assert dock.run_button.isEnabled() and not dock.cancel_button.isEnabled()


@pytest.mark.slow
def test_dock_cloud_mask_on_real_s2_sample_to_file(plugin, s2_layer, tiny_models, tmp_path):
    dock = plugin.dock
    dock.set_layer(s2_layer)
    assert dock.task == "cloud_mask"
    assert dock.cloud_model_combo.isEnabled() and not dock.band_set_combo.isEnabled()
    assert dock.cloud_model_combo.itemText(0).startswith("Auto") and dock.cloud_model_combo.count() >= 2
    dock.model_file.setFilePath(str(tiny_models / "tiny_cloud_shadow.json"))
    dock.tile_spin.setValue(128)
    dock.buffer_spin.setValue(20)
    out_path = tmp_path / "mask.tif"
    dock.output_file.setFilePath(str(out_path))
    run, (state, results, layers) = _run_dock(dock)
    assert state == "ok", dock.log.toPlainText()
    assert out_path.is_file()
    assert len(layers) == 1 and Path(layers[0].source()) == out_path
    assert layers[0].crs() == s2_layer.crs()
    assert layers[0].renderer().type() == "paletted"
    import rasterio

    with rasterio.open(out_path) as ds:
        mask = ds.read(1)
        assert ds.tags()["CLOUD_BUFFER_M"] == "20"          # the dock's buffer reached the algorithm
    assert results["CLOUD_PIXELS"] == int((mask == 1).sum()) and results["SHADOW_PIXELS"] == int((mask == 2).sum())
    assert results["MODEL_USED"] == "tiny_cloud_shadow"
    log = dock.log.toPlainText()
    assert f"cloud {100 * results['CLOUD_FRACTION']:.1f} %" in log and "shadow" in log and "tiny_cloud_shadow" in log
    dock.cloud_mode_combo.setCurrentIndex(1)                  # cloud only
    run, (state, results, layers) = _run_dock(dock)
    assert state == "ok" and results["SHADOW_PIXELS"] == 0


@pytest.mark.slow
def test_dock_cancel_leaves_no_layer_and_no_file(plugin, big_s1, tiny_models, tmp_path):
    layer = QgsRasterLayer(str(big_s1), "big S1 (generated from real)")
    assert layer.isValid() and layer.width() == 2040
    QgsProject.instance().addMapLayer(layer)
    dock = plugin.dock
    dock.set_layer(layer)
    dock.model_file.setFilePath(str(tiny_models / "sar2eo_rgb.json"))
    dock.tile_spin.setValue(128)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out_path = out_dir / "cancelled.tif"
    dock.output_file.setFilePath(str(out_path))
    before = project_layer_ids()
    results = []
    dock.runFinished.connect(lambda state, res, layers: results.append(state))
    import time

    t_start = time.monotonic()
    run = dock.start_run()
    start_s = time.monotonic() - t_start
    assert run is not None
    assert start_s < 2.0, f"start_run blocked the GUI thread for {start_s:.1f} s"
    # the GUI thread stays responsive while the task computes: event-loop gaps stay short
    gaps, last = [], [time.monotonic()]

    def progressed():
        now = time.monotonic()
        gaps.append(now - last[0])
        last[0] = now
        return dock.progress.value() >= 2 or bool(results)

    assert wait_until(progressed, 120), dock.log.toPlainText()
    assert max(gaps) < 1.0, f"the GUI thread was blocked for {max(gaps):.2f} s"
    assert not results, "the run ended before it could be cancelled"
    progress_at_cancel = dock.progress.value()
    dock.cancel_button.click()
    t0 = time.monotonic()
    assert wait_until(lambda: results, 60)
    stop_s = time.monotonic() - t0
    assert results == ["cancelled"], dock.log.toPlainText()
    assert stop_s < 15, f"cancel took {stop_s:.1f} s"
    assert progress_at_cancel < 90
    assert project_layer_ids() == before
    assert list(out_dir.iterdir()) == [], "a cancelled run left files behind"
    assert "Cancelled" in dock.log.toPlainText()
    assert dock.run_button.isEnabled() and not dock.cancel_button.isEnabled()
    print(f"cancel at {progress_at_cancel} % stopped in {stop_s:.2f} s")


@pytest.mark.slow
def test_one_click_uses_the_same_algorithm(plugin, qgis_iface, s1_layer, tiny_models, tmp_path, monkeypatch):
    """One click = defaults from the settings + the background runner. Bundled weights may not be part of
    this build yet, so the model file is added to the parameters the action builds."""
    from sar2eo_cloud_plugin.gui import actions as actions_mod

    real_build = actions_mod.build_parameters

    def with_tiny_model(task, layer, **kw):
        params = real_build(task, layer, **kw)
        params["MODEL_FILE"] = str(tiny_models / "sar2eo_rgb.json")
        params["TILE_SIZE"] = 64
        return params

    monkeypatch.setattr(actions_mod, "build_parameters", with_tiny_model)
    PluginSettings().output_folder = str(tmp_path)
    qgis_iface.setActiveLayer(s1_layer)
    before = project_layer_ids()
    plugin.actions.layer_actions["translate"].trigger()
    assert len(plugin.actions.runs) == 1
    run = plugin.actions.runs[0]
    assert wait_until(lambda: not run.active, 120)
    assert run.state == "ok", run.errors
    new = [QgsProject.instance().mapLayer(i) for i in project_layer_ids() - before]
    assert len(new) == 1 and new[0].crs() == s1_layer.crs()
    assert Path(new[0].source()).parent == tmp_path
    assert any("done: added" in m for m in qgis_iface.messageBar().get_messages(Qgis.Success))


def test_one_click_without_bundled_weights_says_so(plugin, qgis_iface, s1_layer):
    from sar2eo_cloud_plugin.core.modelfile import BUNDLED_DIR

    if (Path(BUNDLED_DIR) / "sar2eo_rgb.json").is_file():
        pytest.skip("this build bundles sar2eo_rgb weights")
    run = plugin.actions.run_one_click("translate", s1_layer)
    assert run is not None
    assert wait_until(lambda: not run.active, 60)
    assert run.state == "failed"
    assert any("No weights bundled" in e for e in run.errors), run.errors
    critical = qgis_iface.messageBar().get_messages(Qgis.Critical)
    assert any("No weights bundled" in m for m in critical), critical


def test_provider_registered_elsewhere_is_left_alone(qgis_iface, qgis_new_project, clean_settings):
    from sar2eo_cloud_plugin import classFactory
    from sar2eo_cloud_plugin.processing.provider import Sar2EoCloudProvider

    registry = QgsApplication.processingRegistry()
    assert registry.addProvider(Sar2EoCloudProvider())
    theirs = registry.providerById("sar2eo_cloud")
    plug = classFactory(qgis_iface)
    plug.initGui()
    try:
        assert plug.provider is None and registry.providerById("sar2eo_cloud") is theirs
    finally:
        plug.unload()
        flush_deletes()
    assert registry.providerById("sar2eo_cloud") is theirs
    registry.removeProvider(theirs)

"""The real QGIS desktop under Xvfb: plugin installed in a fresh profile, dock opened, screenshot saved.

Starts ``xvfb-run -a qgis --nologo --noversioncheck --profiles-path DIR --code qgis_window_script.py``;
the script (tests/gui/qgis_window_script.py) loads the real Sentinel-1 sample, opens the dock, runs
the translation with a GENERATED tiny test model, grabs the main window into
``artifacts/qgis_window.png`` and writes the facts it found to ``artifacts/qgis_window.json``;
then it unloads and reloads the plugin (Plugin Reloader style) and records the window again.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.plugin_install import install_plugin_in_profile

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

pytestmark = [pytest.mark.xvfb, pytest.mark.slow,
              pytest.mark.skipif(not (shutil.which("xvfb-run") and shutil.which("qgis")),
                                 reason="needs xvfb-run and the qgis binary")]


def test_dock_in_real_qgis_window(tmp_path, s1_sample, tiny_models):
    artifacts = REPO / "artifacts"
    artifacts.mkdir(exist_ok=True)
    png = artifacts / "qgis_window.png"
    facts_path = artifacts / "qgis_window.json"
    for f in (png, facts_path):
        if f.exists():
            f.unlink()
    profiles = tmp_path / "profiles"
    install_plugin_in_profile(profiles)
    home = tmp_path / "home"
    home.mkdir()
    env = dict(os.environ)
    env.pop("QT_QPA_PLATFORM", None)  # a real (virtual) X display this time
    site = REPO / ".venv" / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    env.update({
        "HOME": str(home), "XDG_RUNTIME_DIR": str(tmp_path / "xdg"),
        "PYTHONPATH": os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH", "")) if p),
        "SAR2EO_WINDOW_PNG": str(png), "SAR2EO_WINDOW_JSON": str(facts_path),
        "SAR2EO_WINDOW_S1": str(s1_sample), "SAR2EO_WINDOW_MODEL": str(tiny_models / "sar2eo_rgb.json"),
        "SAR2EO_WINDOW_RELOAD": "1",
    })
    (tmp_path / "xdg").mkdir(mode=0o700)
    cmd = ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", "qgis", "--nologo", "--noversioncheck",
           "--profiles-path", str(profiles), "--code", str(HERE / "qgis_window_script.py")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=str(tmp_path))
    log = (proc.stdout or "")[-3000:] + (proc.stderr or "")[-3000:]
    (artifacts / "qgis_window.log").write_text(log, encoding="utf-8")
    assert facts_path.is_file(), f"the script wrote no facts (rc {proc.returncode}):\n{log}"
    facts = json.loads(facts_path.read_text(encoding="utf-8"))
    assert facts["errors"] == [], facts["errors"]

    assert facts["plugin_loaded"], facts.get("active_plugins")
    assert facts["layer_valid"]
    # the dock is in the main window's widget tree, visible, docked
    assert facts["dock_found"] and facts["dock_visible"]
    assert facts["dock_title"] == "SAR2EO & Cloud"
    assert facts["dock_area"] in (1, 2)  # left or right dock area
    assert facts["toolbar_actions"] == ["SAR2EO & Cloud panel", "Translate SAR to EO (active layer)",
                                        "Cloud mask (active layer)"]
    assert facts["provider"]
    plugin_menu = next(iter(facts["plugin_menu"].values()))
    assert plugin_menu == ["SAR2EO & Cloud panel", "Translate SAR to EO (active layer)", "Translate SAR to EO…",
                           "Cloud mask (active layer)", "Cloud mask…"]
    # the real layer-tree context menu of the S1 layer offers the translation, not the cloud mask
    menu = facts["layer_context_menu"]
    assert "Translate SAR to EO" in menu and "Translate SAR to EO…" in menu
    assert "Cloud mask" not in menu
    assert "CPU" in facts["device_label"] or "CUDA" in facts["device_label"]
    # the dock ran the algorithm in the real window: a new, valid, styled layer in the input's CRS
    assert facts["run_started"] and facts["run_state"] == "ok", facts.get("dock_log")
    assert len(facts["new_layers"]) == 1
    new = facts["new_layers"][0]
    assert new["valid"] and new["crs"] == facts["input_crs"] and new["bands"] == 3
    assert new["renderer"] == "multibandcolor"

    # one click in the real layer-tree context menu runs the same algorithm with the defaults (bundled
    # weights); without bundled weights in this build it must fail with the clear message, adding nothing
    assert facts["one_click_action_found"] and facts["one_click_started"]
    from sar2eo_cloud_plugin.core.modelfile import BUNDLED_DIR

    if (Path(BUNDLED_DIR) / "sar2eo_rgb.json").is_file():
        assert facts["one_click_state"] == "ok", facts["one_click_errors"]
        assert len(facts["one_click_new_layers"]) == 1
    else:
        assert facts["one_click_state"] == "failed"
        assert any("No weights bundled" in e for e in facts["one_click_errors"]), facts["one_click_errors"]
        assert facts["one_click_new_layers"] == []
        assert any("No weights bundled" in m for m in facts["message_bar"]), facts["message_bar"]
    # the "…" entry opened the Processing dialog of the same algorithm, prefilled with the layer
    assert facts["dialog_action_found"] and facts["dialog_returned"]
    assert "Translate SAR to EO" in facts["dialog_title"]
    assert facts["dialog_input_layer"] == "S1 VV VH (real sample)"

    # screenshot: exists and is a real window image (not blank, not tiny)
    assert png.is_file() and png.stat().st_size > 20_000
    w, h = facts["png_size"]
    assert w >= 800 and h >= 500
    from qgis.PyQt.QtGui import QImage

    image = QImage(str(png))
    colours = {image.pixel(x, y) for x in range(0, image.width(), 17) for y in range(0, image.height(), 17)}
    assert len(colours) > 50

    # unload removed everything; loading again restored it (Plugin Reloader style)
    assert not facts["after_unload_dock_found"] and facts["after_unload_toolbar_actions"] is None
    assert not facts["after_unload_provider"] and facts["after_unload_plugin_menu"] == {}
    assert not any("SAR" in t or "Cloud mask" in t for t in facts["after_unload_context_menu"])
    assert facts["after_reload_dock_found"] and facts["after_reload_provider"]
    assert facts["after_reload_toolbar_actions"] == facts["toolbar_actions"]
    assert "Translate SAR to EO" in facts["after_reload_context_menu"]

"""The real QGIS desktop under Xvfb: batch_folder and a shipped model run in QGIS's background task
runner (as from the Toolbox), their dialogs open, and a shipped model opens in the Graphical Modeler.

Inputs: copies of the REAL Sentinel-1 samples plus a GENERATED 1-band raster; model cards are the
GENERATED random-weight ``tiny_models``.
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


def test_batch_and_model_in_real_qgis(tmp_path, s1_samples, s2_sample, tiny_models, dem_factory):
    profiles = tmp_path / "profiles"
    install_plugin_in_profile(profiles)
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    in_dir.mkdir()
    for f in s1_samples[:3]:
        shutil.copy2(f, in_dir / f.name)
    dem_factory(in_dir / "dem_1band.tif")
    s1 = shutil.copy2(s1_samples[0], tmp_path / s1_samples[0].name)
    s2 = shutil.copy2(s2_sample, tmp_path / s2_sample.name)
    facts_path = tmp_path / "facts.json"
    png = tmp_path / "modeler.png"
    (tmp_path / "home").mkdir()
    (tmp_path / "xdg").mkdir(mode=0o700)
    env = dict(os.environ)
    env.pop("QT_QPA_PLATFORM", None)
    site = REPO / ".venv" / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    env.update({"HOME": str(tmp_path / "home"), "XDG_RUNTIME_DIR": str(tmp_path / "xdg"),
                "PYTHONPATH": os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH", "")) if p),
                "SAR2EO_BATCH_JSON": str(facts_path), "SAR2EO_BATCH_IN": str(in_dir),
                "SAR2EO_BATCH_OUT": str(out_dir), "SAR2EO_BATCH_MODELS": str(tiny_models),
                "SAR2EO_BATCH_S1": str(s1), "SAR2EO_BATCH_S2": str(s2), "SAR2EO_BATCH_PNG": str(png),
                "OMP_NUM_THREADS": "2"})
    cmd = ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", "qgis", "--nologo", "--noversioncheck",
           "--profiles-path", str(profiles), "--code", str(HERE / "qgis_batch_gui_script.py")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=str(tmp_path))
    (tmp_path / "qgis.log").write_text((proc.stdout or "") + (proc.stderr or ""), encoding="utf-8")
    log = (proc.stdout or "")[-3000:] + (proc.stderr or "")[-3000:]
    assert facts_path.is_file(), f"no facts (rc {proc.returncode}):\n{log}"
    facts = json.loads(facts_path.read_text())
    assert facts["errors"] == [], facts["errors"]
    for alg_id in ("sar2eo_cloud:batch_folder", "sar2eo_cloud:translate_and_cloud_mask",
                   "sar2eo_cloud:sar_under_clouds"):
        assert alg_id in facts["algorithms"]
    assert facts["batch_dialog"] and facts["model_dialog"]
    assert facts["modeler_children"] == ["clip", "cloudmask", "translate"]
    assert facts["modeler_items"] > 10 and png.stat().st_size > 10_000

    batch = facts["batch"]
    assert batch["ok"], batch
    assert batch["thread"] == "background"
    assert (batch["results"]["PROCESSED"], batch["results"]["FAILED"]) == ("3", "1")
    assert batch["progress_max"] == 100 and batch["progress_steps"] >= 4
    # A folder batch adds nothing to the project: the child outputs are files, not layers to load.
    assert batch["load_on_completion"] == []
    summary = json.loads(Path(batch["results"]["SUMMARY"]).read_text())
    assert {r["input"]: r["status"] for r in summary["files"]}["dem_1band.tif"] == "failed"
    for f in s1_samples[:3]:
        assert (out_dir / f"{f.stem}_eo_rgb.tif").is_file()

    model = facts["model"]
    assert model["ok"], model
    # QGIS 3.22 flags every graphical model FlagNoThreading, so the dialog runs it on the main thread; 3.40
    # runs a model as a background task like any other algorithm.
    from qgis.core import Qgis

    if Qgis.QGIS_VERSION_INT < 32300:
        assert model["thread"] == "main"
    elif Qgis.QGIS_VERSION_INT >= 34000:
        assert model["thread"] == "background"
    assert (out_dir / "model_eo.tif").is_file() and (out_dir / "model_mask.tif").is_file()

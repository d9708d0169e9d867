"""Issue 14's done-criterion, end to end in the real QGIS desktop under Xvfb.

A fresh QGIS profile is given only the code-only zip (``make zip``) and network access to one test server on
127.0.0.1. That server is a package index (PEP 503, over a wheelhouse that ``pip download`` filled at test
set-up, cached in data-cache/wheelhouse) and a mirror of the model files. QGIS's Python here has no
onnxruntime, no rasterio and no torch. In QGIS (tests/e2e/e2e_script.py), as a user would: the dock's
**Install dependencies…** runs pip into the profile; the **Models…** manager downloads the RGB translation
model and the L2A cloud + shadow model, verified by sha256; then both algorithms run, on ONNX Runtime (torch
is never imported). Screenshots of the installer, the model manager and the window are kept in artifacts/e2e/.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from tests.dist.local_server import LocalServer
from tests.dist.wheelhouse import ensure_wheelhouse
from tests.plugin_install import enable_plugin_in_profile
from tests.script_modules import load_script

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
MODELS = ("sar2eo_rgb", "ukis_csmask_4b_l2a")

pytestmark = [pytest.mark.xvfb, pytest.mark.slow,
              pytest.mark.skipif(not (shutil.which("xvfb-run") and shutil.which("qgis")),
                                 reason="needs xvfb-run and the qgis binary")]


def _serve_index(server: LocalServer, wheelhouse: Path) -> str:
    """A PEP 503 simple index of the wheelhouse on ``server``; returns its URL."""
    projects = defaultdict(list)
    for wheel in sorted(wheelhouse.glob("*.whl")):
        project = wheel.name.split("-")[0].lower().replace("_", "-").replace(".", "-")
        data = wheel.read_bytes()
        server.add(f"wheels/{wheel.name}", data)
        projects[project].append(f'<a href="../../wheels/{wheel.name}#sha256='
                                 f'{hashlib.sha256(data).hexdigest()}">{wheel.name}</a><br>')
    for project, links in projects.items():
        server.add(f"simple/{project}/", ("<html><body>" + "".join(links) + "</body></html>").encode(),
                   content_type="text/html")
    server.add("simple/", "".join(f'<a href="{p}/">{p}</a><br>' for p in projects).encode(), content_type="text/html")
    return f"{server.url}/simple/"


def _serve_models(server: LocalServer) -> str:
    """The files of MODELS (as the model index lists them) under /models/ on ``server``."""
    from sar2eo_cloud_plugin.core import modelfile, modelstore

    for name in MODELS:
        for f in modelstore.index_entry(name).files:
            path = modelfile.BUNDLED_DIR / f.file
            if not modelfile.file_matches(path, f.sha256, f.bytes):
                pytest.skip(f"{path} is not there to serve (run scripts/setup.sh)")
            server.add(f"models/{f.file}", path.read_bytes())
    return f"{server.url}/models"


def test_fresh_profile_installs_and_runs(tmp_path, s1_sample, s2_sample):
    artifacts = REPO / "artifacts" / "e2e"
    if artifacts.exists():
        shutil.rmtree(artifacts)
    artifacts.mkdir(parents=True)
    wheelhouse = ensure_wheelhouse()
    code_zip = load_script("build_plugin").build_zip(tmp_path / "dist")
    assert code_zip.stat().st_size < 25_000_000
    profiles = tmp_path / "profiles"
    plugins = profiles / "profiles" / "default" / "python" / "plugins"
    load_script("build_plugin").deploy(code_zip, plugins)         # what Install from ZIP unpacks
    enable_plugin_in_profile(profiles)
    assert not list((plugins / "sar2eo_cloud_plugin" / "models").glob("*.onnx"))
    assert not list((plugins / "sar2eo_cloud_plugin" / "models").glob("*.safetensors"))
    facts_path = artifacts / "facts.json"
    with LocalServer() as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "QGIS_", "SAR2EO_"))}
        env.pop("PYTHONPATH", None)             # QGIS's own Python only: no venv, so no onnxruntime/torch
        env.pop("QT_QPA_PLATFORM", None)
        for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
            env.pop(var, None)
        (tmp_path / "home").mkdir()
        (tmp_path / "xdg").mkdir(mode=0o700)
        env.update({
            "HOME": str(tmp_path / "home"), "XDG_RUNTIME_DIR": str(tmp_path / "xdg"),
            "PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": _serve_index(server, wheelhouse),
            "PIP_DISABLE_PIP_VERSION_CHECK": "1", "SAR2EO_CLOUD_MODEL_MIRROR": _serve_models(server),
            "SAR2EO_E2E_S1": str(s1_sample), "SAR2EO_E2E_S2": str(s2_sample), "SAR2EO_E2E_OUT": str(tmp_path),
            "SAR2EO_E2E_ARTIFACTS": str(artifacts), "SAR2EO_E2E_MODELS": ",".join(MODELS),
            "OMP_NUM_THREADS": "1",
        })
        cmd = ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", "qgis", "--nologo", "--noversioncheck",
               "--profiles-path", str(profiles), "--code", str(HERE / "e2e_script.py")]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=540, cwd=str(tmp_path),
                              stdin=subprocess.DEVNULL)
        requested = {path for path, _range in server.requests}
    log = (proc.stdout or "")[-4000:] + (proc.stderr or "")[-4000:]
    (artifacts / "qgis.log").write_text(log, encoding="utf-8")
    assert facts_path.is_file(), f"the script wrote no facts (rc {proc.returncode}):\n{log}"
    facts = json.loads(facts_path.read_text(encoding="utf-8"))
    assert facts["errors"] == [], facts["errors"]
    # before: the fresh profile cannot run anything, and says so
    assert facts["blocked_before"] == ["translate", "cloud_mask"], facts
    # the installer put the packages into the profile and both tasks can run
    assert facts["install_ok"] is True, facts.get("install_status")
    target = Path(facts["python_dir"])
    assert str(profiles) in str(target) and target.name == f"python{sys.version_info.major}.{sys.version_info.minor}"
    assert facts["onnxruntime_from"].startswith(str(target)), facts["onnxruntime_from"]
    assert facts["blocked_after"] == [], facts
    # the models were downloaded from the test server into the profile and verified
    assert facts["model_states"] == {name: "installed" for name in MODELS}, facts["model_states"]
    assert all(p.startswith(str(profiles)) for p in facts["model_cards"]), facts["model_cards"]
    # both algorithms ran on ONNX Runtime, torch never imported
    assert facts["translate"]["ok"] and facts["cloud"]["ok"], (facts["translate"], facts["cloud"])
    assert "onnxruntime" in facts["translate"]["runtime"].lower() and "onnxruntime" in facts["cloud"]["runtime"].lower()
    assert facts["torch_imported"] is False
    for name in ("installer_before.png", "installer_done.png", "model_manager.png", "window_end.png"):
        assert (artifacts / name).stat().st_size > 10_000, name
    # pip and the model manager both fetched from the test server (the index, the wheels, the model files)
    assert "/simple/onnxruntime/" in requested and any(p.startswith("/wheels/onnxruntime-") for p in requested)
    assert {f"/models/{name}.onnx" for name in MODELS} <= requested, sorted(requested)

"""``qgis_process run sar2eo_cloud:download_models`` (headless): models by name on the command line, from a
127.0.0.1 mirror of the real model files, verified; and a failing mirror said in words."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from sar2eo_cloud_plugin.core import modelfile, modelstore
from tests.plugin_install import copy_plugin, qgis_process_env

pytestmark = pytest.mark.qgis_process
EXE = "qgis_process.bin"
NAME = "sar2eo_rgb"


@pytest.fixture(scope="module")
def qp_env(tmp_path_factory):
    if shutil.which(EXE) is None:
        pytest.skip(f"{EXE} is not installed (apt install qgis)")
    base = tmp_path_factory.mktemp("qgis_process_dl")
    copy_plugin(base / "plugins")
    (base / "config").mkdir()
    env = qgis_process_env(base / "plugins", base / "config")
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
                modelstore.MIRROR_ENV, modelstore.STORE_ENV):
        env.pop(var, None)
    out = subprocess.run([EXE, "plugins", "enable", "sar2eo_cloud_plugin"], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return env


def _download(env, *params):
    return subprocess.run([EXE, "run", "sar2eo_cloud:download_models", "--", *params], env=env, capture_output=True,
                          text=True, timeout=300)


def test_download_models_headless(qp_env, server, tmp_path):
    for f in modelstore.index_entry(NAME).files:
        path = Path(modelfile.BUNDLED_DIR) / f.file
        if not modelfile.file_matches(path, f.sha256, f.bytes):
            pytest.skip(f"{path} is not there to serve (run scripts/setup.sh)")
        server.add(f"m/{f.file}", path.read_bytes())
    folder = tmp_path / "models"
    folder.mkdir()
    out = _download(qp_env, f"MODELS={NAME}", f"FOLDER={folder}", f"MIRROR={server.url}/m")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert f"INSTALLED:\t{folder / (NAME + '.json')}" in out.stdout
    card = modelfile.read_card(folder / f"{NAME}.json")
    assert any((folder / f.file).is_file() for f in modelstore.index_entry(NAME).files)
    assert card.name == NAME


def test_download_models_headless_404_in_words(qp_env, server, tmp_path):
    out = _download(qp_env, f"MODELS={NAME}", f"FOLDER={tmp_path}", f"MIRROR={server.url}/nothing-here")
    assert out.returncode != 0
    assert "not found on the server (HTTP 404)" in out.stdout + out.stderr
    assert not (tmp_path / f"{NAME}.json").exists()

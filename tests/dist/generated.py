"""GENERATED test content for the download tests: random bytes named as a model's weights and graph (never
loaded as a network)."""
from __future__ import annotations

import hashlib
import os

WEIGHTS = os.urandom(50_000)
ONNX = os.urandom(20_000)


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def write_local_card(folder, name: str = "my_rgbn"):
    """A GENERATED local model (an rgbn translation card and random 'weights') in ``folder``, as a user would have
    it before importing it; returns the card's path."""
    from sar2eo_cloud_plugin.core import cards

    folder.mkdir(parents=True, exist_ok=True)
    card = cards.sar2eo_card("rgbn", name=name)
    card.notes = "GENERATED for tests"
    card.weights = {"file": f"{name}.safetensors", "sha256": sha(WEIGHTS), "bytes": len(WEIGHTS), "dtype": "float16"}
    (folder / f"{name}.json").write_text(card.to_json())
    (folder / f"{name}.safetensors").write_bytes(WEIGHTS)
    return folder / f"{name}.json"

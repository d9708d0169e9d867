"""GENERATED test content for the download tests: random bytes named as a model's weights and graph (never
loaded as a network)."""
from __future__ import annotations

import hashlib
import os

WEIGHTS = os.urandom(50_000)
ONNX = os.urandom(20_000)


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()

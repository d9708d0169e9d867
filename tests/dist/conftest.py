from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from local_server import LocalServer  # noqa: E402


@pytest.fixture
def server():
    with LocalServer() as srv:
        yield srv


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    # 127.0.0.1 must be reached directly even where the machine has a proxy configured
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)

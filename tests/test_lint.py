"""``ruff check`` on the whole repository and ``mypy`` on ``sar2eo_cloud_plugin/core`` (configuration of both:
pyproject.toml) find nothing."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(importlib.util.find_spec("ruff") is None,
                    reason="ruff is not installed in this Python (pip install ruff); the lint check cannot run")
def test_ruff_finds_nothing():
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"ruff check found problems:\n{proc.stdout}{proc.stderr}"


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None,
                    reason="mypy is not installed in this Python (pip install 'mypy<2'); the type check cannot run")
def test_mypy_finds_nothing_in_the_core():
    """The QGIS-free core type-checks (files and settings in pyproject.toml's [tool.mypy])."""
    proc = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", "--no-error-summary"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"mypy found problems:\n{proc.stdout}{proc.stderr}"

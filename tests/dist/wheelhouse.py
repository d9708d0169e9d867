"""The local wheelhouse the installer tests install from: filled once by ``pip download`` at test set-up
(cached under data-cache/wheelhouse, git-ignored), then used with ``--no-index --find-links``."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sar2eo_cloud_plugin import installer

REPO = Path(__file__).resolve().parents[2]
WHEELHOUSE = REPO / "data-cache" / "wheelhouse"


def clean_pip_env() -> dict:
    """pip without the machine's pip.conf (its index, find-links and constraints): only what a test names."""
    env = dict(os.environ, PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1")
    for var in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_CONSTRAINT"):
        env.pop(var, None)
    return env


def ensure_wheelhouse() -> Path:
    """The ONNX Runtime (CPU) wheels and their dependencies for this Python (downloaded if missing)."""
    specs = installer.requirements("cpu")
    marker = WHEELHOUSE / f".complete-py{sys.version_info.major}{sys.version_info.minor}"
    if not marker.is_file() or marker.read_text().split() != specs:
        WHEELHOUSE.mkdir(parents=True, exist_ok=True)
        # the machine's own pip configuration (its index) is used here: this is the set-up step
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "-d", str(WHEELHOUSE)]
                       + specs, check=True)
        marker.write_text("\n".join(specs) + "\n")
    return WHEELHOUSE

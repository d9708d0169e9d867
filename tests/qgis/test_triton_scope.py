"""The triton guard (core/networks._keep_triton_out_of_qgis) is scoped: it hides triton in a process
that has loaded QGIS, at the moment the U-Net is built, and nowhere else. Each case runs in its own
interpreter because the guard changes sys.modules for the life of a process."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

CASE = """
import sys
{pre}
from sar2eo_cloud_plugin.core import networks
import torch
before = 'triton' in sys.modules and sys.modules['triton'] is not None
networks._keep_triton_out_of_qgis()
print(before, 'triton' in sys.modules and sys.modules['triton'] is None)
"""


def _run(repo_root, pre: str) -> str:
    out = subprocess.run([sys.executable, "-c", CASE.format(pre=pre)], capture_output=True, text=True, timeout=300,
                         cwd=str(repo_root), env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("pre,hidden", [("import qgis.core", "True"), ("", "False")],
                         ids=["inside-qgis", "training-and-scripts"])
def test_triton_is_hidden_only_inside_qgis(repo_root, pre, hidden):
    # "False" first: importing torch alone must not have loaded triton, else the guard would come too late.
    assert _run(repo_root, pre) == f"False {hidden}"

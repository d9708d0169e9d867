"""An output folder the user may not write to (issue 11): a clear error naming the folder and
"permission denied", not a traceback. root may write anywhere, so the run happens in a child
process that drops to user ``nobody`` (skipped where the tests do not run as root). The input is a
GENERATED raster."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from fault_helpers import write_raster

REPO = Path(__file__).resolve().parents[2]
NOBODY = 65534

CHILD = """
import sys
sys.path.insert(0, {repo!r}); sys.path.insert(0, {here!r})
from fault_helpers import uint16_output
from tests.core.core_helpers import identity_predict, identity_prepare
from sar2eo_cloud_plugin.core.engine import TilingOptions, run_tiled
from sar2eo_cloud_plugin.core.errors import Sar2EoError
try:
    run_tiled({src!r}, [1, 2], identity_prepare, identity_predict, 2, [uint16_output({out!r}, 2)],
              TilingOptions(tile_size=32, overlap=0))
except Sar2EoError as exc:
    print("CLEAR:", exc)
"""


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to drop to user nobody")
def test_output_folder_without_write_permission_is_named():
    base = Path(tempfile.mkdtemp(prefix="sar2eo_perm_", dir="/tmp"))
    try:
        os.chmod(base, 0o755)
        src = write_raster(base / "in.tif", np.full((2, 40, 40), 5, dtype="float32"))
        os.chmod(src, 0o644)
        locked = base / "locked"
        locked.mkdir(mode=0o555)
        os.chmod(locked, 0o555)
        code = CHILD.format(repo=str(REPO), here=str(Path(__file__).parent), src=str(src), out=str(locked / "o.tif"))
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                              preexec_fn=lambda: (os.setgid(NOBODY), os.setuid(NOBODY)))
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert f"CLEAR: Cannot write the output into folder '{locked}': permission denied" in proc.stdout, proc.stdout
        assert "Traceback" not in proc.stderr
    finally:
        shutil.rmtree(base, ignore_errors=True)

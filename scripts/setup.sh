#!/usr/bin/env bash
# One-time (and idempotent) set-up for Debian 12: system QGIS 3.22, a venv that sees it, the pinned Python
# packages, and the build steps QGIS needs to load the plugin from this checkout.
#
#   ./scripts/setup.sh        (`make demo` and `make test` run it first; re-running it is cheap)
#
# Every step is skipped when already done:
#   1. apt: qgis python3-qgis qgis-providers xvfb xauth python3-venv pyqt5-dev-tools — only the missing ones
#      (needs root, or sudo). SKIP_APT=1 skips this step (e.g. a machine where someone else manages packages).
#   2. .venv from /usr/bin/python3 with --system-site-packages (so `import qgis` works inside it).
#   3. pip install -r requirements.txt — only when .venv/.requirements.stamp is missing or older than
#      requirements.txt.
#   4. scripts/import_ukis_models.py: the four pretrained ukis-csmask cloud/shadow U-Nets (PyPI ukis-csmask==1.0.0,
#      DLR, Apache-2.0; wheel sha256-pinned, cached in data-cache/ukis-csmask/) -> sar2eo_cloud_plugin/models/
#      ukis_csmask_*.safetensors (generated, git-ignored), checked against their committed .json cards — only when
#      a weights file is missing or does not match its card.
#   5. compile resources.qrc -> sar2eo_cloud_plugin/resources.py; check metadata.txt and link it (and LICENSE)
#      into the package.
#   6. a smoke import of qgis.core, torch, rasterio, segmentation_models_pytorch and the plugin's core.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

# xauth: only a Recommends of xvfb, but xvfb-run (the real-QGIS-window test) refuses to start without it.
APT_PACKAGES=(qgis python3-qgis qgis-providers xvfb xauth python3-venv pyqt5-dev-tools)
VENV="$REPO/.venv"
PY="$VENV/bin/python"
STAMP="$VENV/.requirements.stamp"

say() { printf '[setup] %s\n' "$*"; }

# ---------------------------------------------------------------------------------------------- 1. apt
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done
if [ "${#missing[@]}" -eq 0 ]; then
    say "system packages present: ${APT_PACKAGES[*]}"
elif [ "${SKIP_APT:-0}" = "1" ]; then
    say "SKIP_APT=1 but these system packages are missing: ${missing[*]}" >&2
    exit 1
else
    SUDO=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            SUDO=(sudo)
        else
            say "need root (or sudo) to install: ${missing[*]}" >&2
            exit 1
        fi
    fi
    say "installing system packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get update
    "${SUDO[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
fi
for cmd in qgis_process.bin pyrcc5 xvfb-run xauth; do
    command -v "$cmd" >/dev/null 2>&1 || { say "$cmd not found after installing ${APT_PACKAGES[*]}" >&2; exit 1; }
done

# ---------------------------------------------------------------------------------------------- 2. venv
if [ ! -x "$PY" ]; then
    say "creating $VENV (system site packages visible, for QGIS's Python bindings)"
    /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi

# ---------------------------------------------------------------------------------------------- 3. pip
if [ ! -f "$STAMP" ] || [ requirements.txt -nt "$STAMP" ]; then
    say "pip install -r requirements.txt (pins: numpy<2, affine<3, pyarrow<26, torch==2.14.1, torchvision==0.29.1)"
    export PIP_DISABLE_PIP_VERSION_CHECK=1
    "$PY" -m pip install --progress-bar off -r requirements.txt
    touch "$STAMP"
else
    say "Python packages up to date (delete $STAMP to force pip)"
fi

# ---------------------------------------------------------------------------------------------- 4. ukis
"$PY" scripts/import_ukis_models.py

# ---------------------------------------------------------------------------------------------- 5. build
"$PY" scripts/build_plugin.py metadata
"$PY" scripts/build_plugin.py resources

# ---------------------------------------------------------------------------------------------- 6. smoke
QT_QPA_PLATFORM=offscreen "$PY" - <<'EOF'
import numpy, torch, rasterio, segmentation_models_pytorch, safetensors
from qgis.core import Qgis
import sar2eo_cloud_plugin.core.inference  # noqa: F401  (the QGIS-free core imports)
print(f"[setup] ok: QGIS {Qgis.QGIS_VERSION}, numpy {numpy.__version__}, torch {torch.__version__} "
      f"(CUDA available: {torch.cuda.is_available()}), rasterio {rasterio.__version__}, "
      f"segmentation-models-pytorch {segmentation_models_pytorch.__version__}")
EOF

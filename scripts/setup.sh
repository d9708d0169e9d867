#!/usr/bin/env bash
# One-time (and idempotent) set-up for Debian 12 (QGIS 3.22) or Debian 13 (QGIS 3.40): the system QGIS, a venv
# that sees it, the Python packages pinned for that release, and the build steps QGIS needs to load the plugin
# from this checkout.
#
#   ./scripts/setup.sh        (`make demo` and `make test` run it first; re-running it is cheap)
#
# Every step is skipped when already done:
#   1. apt: qgis python3-qgis qgis-providers xvfb xauth python3-venv python3-pip pyqt5-dev-tools — only the missing
#      ones (python3-pip: the dock's installer runs QGIS's own Python's pip; Debian 13's minimal root lacks it)
#      (needs root, or sudo). SKIP_APT=1 skips this step (e.g. a machine where someone else manages packages).
#   2. .venv from /usr/bin/python3 with --system-site-packages (so `import qgis` works inside it).
#   3. pip install -r requirements.txt -c requirements/debian<N>.txt, the constraint file of this release
#      (numpy 1.x on Debian 12, 2.x on Debian 13, to match the system's GDAL/QGIS bindings) — only when
#      .venv/.requirements.stamp does not hold the checksums of exactly these two files (so editing either, or
#      moving the checkout to the other release, runs pip again). The release comes from /etc/os-release
#      (/etc/debian_version as a fallback); SAR2EO_PINS=debian12|debian13 overrides it.
#   4. scripts/import_ukis_models.py: the four pretrained ukis-csmask cloud/shadow U-Nets (PyPI ukis-csmask==1.0.0,
#      DLR, Apache-2.0; wheel sha256-pinned, cached in data-cache/ukis-csmask/) -> sar2eo_cloud_plugin/models/
#      ukis_csmask_*.safetensors (generated, git-ignored), checked against their committed .json cards — only when
#      a weights file is missing or does not match its card.
#   4b. scripts/derive_onnx.py: the ONNX graphs of the project's own models (ONNX Runtime runs them), exported
#      from the committed safetensors and checked against the sha256 their cards carry (generated, git-ignored) —
#      only when a graph is missing or does not match its card.
#   5. compile resources.qrc -> sar2eo_cloud_plugin/resources.py; check metadata.txt and link it (and LICENSE)
#      into the package.
#   6. a smoke import of qgis.core, torch, rasterio, segmentation_models_pytorch and the plugin's core.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

# xauth: only a Recommends of xvfb, but xvfb-run (the real-QGIS-window test) refuses to start without it.
APT_PACKAGES=(qgis python3-qgis qgis-providers xvfb xauth python3-venv python3-pip pyqt5-dev-tools)
VENV="$REPO/.venv"
PY="$VENV/bin/python"
STAMP="$VENV/.requirements.stamp"

say() { printf '[setup] %s\n' "$*"; }

# ---------------------------------------------------------------------------------------------- 0. release
# Which Debian release this is decides the pins (requirements/<release>.txt). Nothing else here is per-release.
release_major=""
if [ -r /etc/os-release ]; then
    # shellcheck disable=SC1091
    release_major="$(. /etc/os-release; [ "${ID:-}" = debian ] && echo "${VERSION_ID:-}")"
fi
if [ -z "$release_major" ] && [ -r /etc/debian_version ]; then
    case "$(cat /etc/debian_version)" in
        12.*|bookworm*) release_major=12 ;;
        13.*|trixie*) release_major=13 ;;
    esac
fi
PINS="${SAR2EO_PINS:-${release_major:+debian$release_major}}"
CONSTRAINTS="requirements/$PINS.txt"
if [ -z "$PINS" ] || [ ! -f "$CONSTRAINTS" ]; then
    say "unsupported system (/etc/os-release: $(. /etc/os-release 2>/dev/null; echo "${PRETTY_NAME:-unknown}")):" \
        "no requirements/${PINS:-<release>}.txt. Supported: Debian 12, Debian 13; SAR2EO_PINS=debian12|debian13" \
        "picks one by hand" >&2
    exit 1
fi
say "release: Debian ${release_major:-?}, pins from $CONSTRAINTS"

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
# The stamp holds the checksums of the two files pip was run with; any change to them (or another release's
# constraint file) runs pip again.
want_stamp="$(sha256sum requirements.txt "$CONSTRAINTS")"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want_stamp" ]; then
    pins="$(grep -v -e '^#' -e '^$' "$CONSTRAINTS" | tr '\n' ' ')"
    say "pip install -r requirements.txt -c $CONSTRAINTS (pins: ${pins% })"
    export PIP_DISABLE_PIP_VERSION_CHECK=1
    "$PY" -m pip install --progress-bar off -r requirements.txt -c "$CONSTRAINTS"
    printf '%s\n' "$want_stamp" > "$STAMP"
else
    say "Python packages up to date (delete $STAMP to force pip)"
fi

# ---------------------------------------------------------------------------------------------- 4. ukis
"$PY" scripts/import_ukis_models.py
"$PY" scripts/derive_onnx.py

# ---------------------------------------------------------------------------------------------- 5. build
"$PY" scripts/build_plugin.py metadata
"$PY" scripts/build_plugin.py resources

# ---------------------------------------------------------------------------------------------- 6. smoke
QT_QPA_PLATFORM=offscreen "$PY" - <<'EOF'
import numpy, torch, rasterio, segmentation_models_pytorch, safetensors, onnxruntime
from qgis.core import Qgis
import sar2eo_cloud_plugin.core.inference  # noqa: F401  (the QGIS-free core imports)
import sys, sysconfig
print(f"[setup] ok: Python {sys.version.split()[0]} (packages in {sysconfig.get_path('purelib')}), "
      f"QGIS {Qgis.QGIS_VERSION}, numpy {numpy.__version__}, torch {torch.__version__} "
      f"(CUDA available: {torch.cuda.is_available()}), rasterio {rasterio.__version__}, "
      f"segmentation-models-pytorch {segmentation_models_pytorch.__version__}")
EOF

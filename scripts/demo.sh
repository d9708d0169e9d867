#!/usr/bin/env bash
# Headless demo: run the plugin's Processing algorithms through qgis_process.bin on the bundled REAL sample
# (a BigEarthNet Sentinel-1 patch and the Sentinel-2 patch of the same ground, sample_data/), with the plugin
# loaded from this checkout and the model files bundled in sar2eo_cloud_plugin/models/.
#
#   make demo            (= ./scripts/setup.sh && ./scripts/demo.sh)
#
# Writes into artifacts/demo/:
#   <S1 name>_sar2eo_<band set>.tif   Sentinel-2-like image translated from the Sentinel-1 VV/VH patch
#   <S2 name>_cloudmask.tif           cloud mask of the Sentinel-2 patch (0 clear, 1 cloud, 255 nodata)
#   <S2 name>_cloudprob.tif           cloud probability (float32, nodata -1)
#   <S2 name>_clouds.gpkg             dissolved cloud polygons
#   translate.log, cloudmask.log      qgis_process output (parameters, log, results)
#   quicklook.png                     the real inputs and the outputs side by side
# then prints a gdalinfo-style summary of each output.
#
# Environment knobs (all optional):
#   DEMO_S1, DEMO_S2        input rasters (default: the paired real patches 87_48 below)
#   DEMO_BAND_SET           rgb | nir_swir_re | rgbn (default rgb)
#   DEMO_DEVICE             auto | cpu | cuda (default auto)
#   DEMO_OUT                output folder (default artifacts/demo)
#   TRANSLATE_MODEL_FILE, CLOUD_MODEL_FILE   a model card (.json) to use instead of the bundled one
#   SKIP_SETUP=1            do not run scripts/setup.sh first
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

[ "${SKIP_SETUP:-0}" = "1" ] || ./scripts/setup.sh

PY="$REPO/.venv/bin/python"
S1="${DEMO_S1:-sample_data/s1/S1A_IW_GRDH_1SDV_20170613T165043_33UUP_87_48_VVVH.tif}"
S2="${DEMO_S2:-sample_data/s2/S2A_MSIL2A_20170613T101031_87_48_L2A12.tif}"
BAND_SET="${DEMO_BAND_SET:-rgb}"
DEVICE="${DEMO_DEVICE:-auto}"
OUT="${DEMO_OUT:-artifacts/demo}"

case "$BAND_SET" in rgb) BAND_SET_IDX=0 ;; nir_swir_re) BAND_SET_IDX=1 ;; rgbn) BAND_SET_IDX=2 ;;
    *) echo "DEMO_BAND_SET must be rgb, nir_swir_re or rgbn (got '$BAND_SET')" >&2; exit 2 ;; esac
case "$DEVICE" in auto) DEVICE_IDX=0 ;; cpu) DEVICE_IDX=1 ;; cuda) DEVICE_IDX=2 ;;
    *) echo "DEMO_DEVICE must be auto, cpu or cuda (got '$DEVICE')" >&2; exit 2 ;; esac
for f in "$S1" "$S2"; do [ -f "$f" ] || { echo "input not found: $f" >&2; exit 2; }; done

mkdir -p "$OUT"
s1name="$(basename "${S1%.*}")"
s2name="$(basename "${S2%.*}")"
TRANSLATED="$OUT/${s1name}_sar2eo_${BAND_SET}.tif"
MASK="$OUT/${s2name}_cloudmask.tif"
PROB="$OUT/${s2name}_cloudprob.tif"
POLYS="$OUT/${s2name}_clouds.gpkg"
rm -f "$TRANSLATED" "$MASK" "$PROB" "$POLYS"

# qgis_process.bin with the plugin loaded from this checkout, a throw-away QGIS profile, and the venv's
# packages on the path (Debian's `qgis_process` wrapper passes --noversioncheck, which 3.22 rejects).
PROFILE="$(mktemp -d "${TMPDIR:-/tmp}/sar2eo-demo-profile.XXXXXX")"
trap 'rm -rf "$PROFILE"' EXIT
SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
export QT_QPA_PLATFORM=offscreen
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
export QGIS_PLUGINPATH="$REPO"
export QGIS_CUSTOM_CONFIG_PATH="$PROFILE"
export GDAL_PAM_ENABLED=NO

qp() { qgis_process.bin "$@" 2> >(grep -v -e 'XDG_RUNTIME_DIR' -e 'setapi() is deprecated' >&2); }

for m in "${TRANSLATE_MODEL_FILE:-}" "${CLOUD_MODEL_FILE:-}"; do
    [ -z "$m" ] || echo "== NOTE: using the model file $m instead of the bundled one"
done
echo "== enabling the plugin (QGIS_PLUGINPATH=$REPO)"
qp plugins enable sar2eo_cloud_plugin >/dev/null

echo "== Translate SAR to EO: $S1 (band set $BAND_SET, device $DEVICE)"
# VV is band 1 and VH band 2 in the sample (also the defaults; explicit here for readers).
args=(run sar2eo_cloud:translate_sar_to_eo -- "INPUT=$S1" VV_BAND=1 VH_BAND=2 "BAND_SET=$BAND_SET_IDX"
      "DEVICE=$DEVICE_IDX" "OUTPUT=$TRANSLATED")
[ -z "${TRANSLATE_MODEL_FILE:-}" ] || args+=("MODEL_FILE=$TRANSLATE_MODEL_FILE")
qp "${args[@]}" 2>&1 | tee "$OUT/translate.log"

echo "== Cloud mask: $S2 (device $DEVICE)"
args=(run sar2eo_cloud:cloud_mask -- "INPUT=$S2" "DEVICE=$DEVICE_IDX" "OUTPUT=$MASK" "OUTPUT_PROBABILITY=$PROB"
      "OUTPUT_POLYGONS=$POLYS")
[ -z "${CLOUD_MODEL_FILE:-}" ] || args+=("MODEL_FILE=$CLOUD_MODEL_FILE")
qp "${args[@]}" 2>&1 | tee "$OUT/cloudmask.log"

echo "== Summary (inputs, then outputs)"
"$PY" scripts/raster_summary.py "$S1" "$TRANSLATED" "$S2" "$MASK" "$PROB" "$POLYS"
note=""
[ -z "${TRANSLATE_MODEL_FILE:-}${CLOUD_MODEL_FILE:-}" ] || \
    note="Model files given by TRANSLATE_MODEL_FILE / CLOUD_MODEL_FILE, not the bundled ones"
"$PY" scripts/demo_quicklook.py "$S1" "$TRANSLATED" "$S2" "$MASK" "$OUT/quicklook.png" --note "$note"
echo "== Demo outputs are in $OUT/"

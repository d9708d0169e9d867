#!/usr/bin/env bash
# The test command: set-up (idempotent), then the whole pytest suite headless.
#
#   make test                        (= ./scripts/test.sh)
#   ./scripts/test.sh -k packaging   (extra arguments go to pytest)
#
# Writes artifacts/test/junit.xml and artifacts/test/pytest.log (and whatever the tests save as artifacts,
# e.g. the GUI screenshot). SKIP_SETUP=1 skips scripts/setup.sh.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

[ "${SKIP_SETUP:-0}" = "1" ] || ./scripts/setup.sh

ART="$REPO/artifacts/test"
mkdir -p "$ART"
export QT_QPA_PLATFORM=offscreen
export GDAL_PAM_ENABLED=NO
export PYTHONDONTWRITEBYTECODE=1

set +e
"$REPO/.venv/bin/python" scripts/run_pytest.py -p no:cacheprovider -ra --durations=15 \
    --junitxml="$ART/junit.xml" -o junit_family=xunit2 "$@" 2>&1 | tee "$ART/pytest.log"
rc=${PIPESTATUS[0]}
set -e
echo "[test] pytest exit code $rc; report: artifacts/test/junit.xml, log: artifacts/test/pytest.log"
exit "$rc"

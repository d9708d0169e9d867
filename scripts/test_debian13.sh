#!/usr/bin/env bash
# The whole test suite on Debian 13 (trixie: Python 3.13, numpy 2.2, GDAL 3.10, QGIS 3.40 LTR), run from a
# Debian 12 (or any Debian) machine in a chroot:
#
#   make test-debian13                     (= ./scripts/test_debian13.sh; needs root, or sudo)
#   ./scripts/test_debian13.sh -k deps     (extra arguments go to pytest, as with ./scripts/test.sh)
#
# 1. A Debian 13 root in build/debian13-root (a cache ignored by git; DEBIAN13_ROOT=… elsewhere), made once with
#    `debootstrap --variant=minbase trixie` (debootstrap is apt-installed here first if missing).
# 2. This checkout (the files git tracks plus the untracked, not ignored ones; no .venv, no build outputs) is
#    copied to /work/sar2eo_cloud_plugin inside the root, next to /work/shared (a bind mount of the `shared`
#    folder beside this checkout: the tests read ../shared/data).
# 3. /proc, /sys, /dev are mounted into the root for the run and unmounted on exit (trap).
# 4. ./scripts/test.sh runs inside, i.e. the project's own scripts/setup.sh first (apt: QGIS 3.40 and the rest;
#    the venv; pip with requirements/debian13.txt), then pytest. The packages and the venv stay in the root, so a
#    second run does no debootstrap, no apt and no pip unless requirements*.txt changed.
# 5. The reports come back to artifacts/test-debian13/ (junit.xml, pytest.log, the tests' pictures).
#
# The first run downloads about 0.4 GB of Debian packages and about 3 GB of Python wheels (PyPI's torch for Python
# 3.13 is a CUDA build; it runs on the CPU here); the root takes about 10 GB. Remove it with
# `make clean-debian13`. Host CA certificates added under /usr/local/share/ca-certificates (a TLS-inspecting
# proxy) are copied into the root so that pip inside can reach PyPI.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "[debian13] needs root (chroot, mount, debootstrap)" >&2; exit 1; }
    exec sudo --preserve-env=DEBIAN13_ROOT,DEBIAN13_MIRROR,SHARED_DIR,CI "$REPO/scripts/test_debian13.sh" "$@"
fi

ROOT="${DEBIAN13_ROOT:-$REPO/build/debian13-root}"
MIRROR="${DEBIAN13_MIRROR:-http://deb.debian.org/debian}"
SHARED="${SHARED_DIR:-$(dirname "$REPO")/shared}"
INSIDE=/work/sar2eo_cloud_plugin          # the checkout's path inside the root; ../shared beside it
ART="$REPO/artifacts/test-debian13"

say() { printf '[debian13] %s\n' "$*"; }
# Anything mounted under a folder (e.g. left by a run killed with SIGKILL)? rm -rf would then go through a bind
# mount into the host's /dev or shared data, so the folders are removed only when nothing is.
mounted_under() { findmnt -rn -o TARGET | grep -q "^$(realpath -m "$1")/"; }
t0=$SECONDS

mkdir -p "$(dirname "$ROOT")"
exec 9>"$ROOT.lock"
flock -n 9 || { say "another run holds $ROOT.lock" >&2; exit 1; }

# ------------------------------------------------------------------------------------ 1. the root (once)
if [ ! -f "$ROOT/.sar2eo-debootstrap-done" ]; then
    if ! command -v debootstrap >/dev/null 2>&1; then
        say "installing debootstrap on this machine"
        DEBIAN_FRONTEND=noninteractive apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap
    fi
    say "debootstrap trixie -> $ROOT (once; a few minutes)"
    for d in "$ROOT" "$ROOT.partial"; do
        if mounted_under "$d"; then say "something is mounted under $d; unmount it first" >&2; exit 1; fi
    done
    rm -rf --one-file-system "$ROOT.partial"
    debootstrap --variant=minbase --include=ca-certificates trixie "$ROOT.partial" "$MIRROR"
    cat > "$ROOT.partial/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: trixie trixie-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://security.debian.org/debian-security
Suites: trixie-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    rm -f "$ROOT.partial/etc/apt/sources.list"
    # no service starts inside a chroot (postinst scripts of the QGIS dependencies)
    printf '#!/bin/sh\nexit 101\n' > "$ROOT.partial/usr/sbin/policy-rc.d"
    chmod +x "$ROOT.partial/usr/sbin/policy-rc.d"
    touch "$ROOT.partial/.sar2eo-debootstrap-done"
    rm -rf --one-file-system "$ROOT"
    mv "$ROOT.partial" "$ROOT"
else
    say "reusing $ROOT ($(cat "$ROOT/etc/debian_version"))"
fi

# Host-added CA certificates (cheap; update-ca-certificates only when they changed).
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    changed=0
    for crt in /usr/local/share/ca-certificates/*.crt; do
        cmp -s "$crt" "$ROOT/usr/local/share/ca-certificates/$(basename "$crt")" || {
            cp "$crt" "$ROOT/usr/local/share/ca-certificates/"; changed=1; }
    done
    [ "$changed" = 0 ] || chroot "$ROOT" update-ca-certificates >/dev/null
fi
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"

# ------------------------------------------------------------------------------------ 2. mounts (this run)
mounted=()
cleanup() {
    local i
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
        umount -R "${mounted[i]}" 2>/dev/null || umount -R -l "${mounted[i]}" 2>/dev/null || \
            say "could not unmount ${mounted[i]}" >&2
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mount_into() {  # mount_into <target inside the root> <mount arguments...>
    local target="$ROOT$1"; shift
    mkdir -p "$target"
    if mountpoint -q "$target"; then umount -R "$target"; fi  # left over from a killed run
    mount "$@" "$target"
    mounted+=("$target")
}
mount_into /proc -t proc proc
mount_into /sys --rbind /sys && mount --make-rslave "$ROOT/sys"
mount_into /dev --rbind /dev && mount --make-rslave "$ROOT/dev"
if [ -d "$SHARED" ]; then
    mount_into /work/shared --bind "$SHARED"
else
    say "no $SHARED beside the checkout: tests that read ../shared/data will say so"
fi

# ------------------------------------------------------------------------------------ 3. the checkout
# A fresh copy each run (what a clone would hold), keeping only the root's .venv between runs.
dest="$ROOT$INSIDE"
mkdir -p "$dest"
find "$dest" -mindepth 1 -maxdepth 1 ! -name .venv -exec rm -rf --one-file-system {} +
if git -C "$REPO" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git -C "$REPO" ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do
            # not .venv (a symlink in some checkouts), not files deleted but not yet committed
            case "$f" in .venv|.venv/*) continue ;; esac
            if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi
        done | tar --null -T - -cf - | tar -C "$dest" -xf -
else
    tar --exclude=./.venv --exclude=./build --exclude=./dist --exclude=./artifacts -cf - . | tar -C "$dest" -xf -
fi
say "copied the checkout to $INSIDE in the root ($((SECONDS - t0)) s so far)"

# ------------------------------------------------------------------------------------ 4. set-up + tests inside
set +e
chroot "$ROOT" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    LANG=C.UTF-8 TERM=dumb CI="${CI:-}" PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    bash -c 'cd "$1" && shift && ./scripts/test.sh "$@"' bash "$INSIDE" "$@" </dev/null
rc=$?
set -e

# ------------------------------------------------------------------------------------ 5. reports back
rm -rf "$ART"
mkdir -p "$ART"
[ ! -d "$dest/artifacts" ] || cp -a "$dest/artifacts/." "$ART/"
say "exit code $rc after $((SECONDS - t0)) s; reports: ${ART#"$REPO"/}/test/junit.xml, ${ART#"$REPO"/}/test/pytest.log"
exit "$rc"

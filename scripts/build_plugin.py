#!/usr/bin/env python3
"""Build steps for the QGIS plugin: compile resources, keep the package's metadata copy, zip, deploy.

    python scripts/build_plugin.py resources        # resources.qrc -> sar2eo_cloud_plugin/resources.py (pyrcc5)
    python scripts/build_plugin.py metadata         # check metadata.txt; make sar2eo_cloud_plugin/metadata.txt
    python scripts/build_plugin.py zip [--out dist] # -> dist/sar2eo_cloud_plugin-<version>.zip
    python scripts/build_plugin.py deploy DIR       # unpack that zip into DIR/sar2eo_cloud_plugin (a QGIS
                                                    # profile's python/plugins folder)

``make zip`` / ``make deploy`` call this. Only the Python standard library plus pyrcc5 (or PyQt5's
``pyrcc_main``) is needed; no ``zip`` binary. ``pb_tool.cfg`` describes the same plugin folder for pb_tool users.

The top-level ``metadata.txt`` and ``LICENSE`` are the sources of truth. Inside the package they are relative
symlinks (so ``QGIS_PLUGINPATH=<repo>`` loads the plugin straight from a checkout); where a checkout cannot hold
symlinks (git ``core.symlinks=false``), ``metadata`` writes plain copies instead. The zip always holds real files.
"""
from __future__ import annotations

import argparse
import configparser
import fnmatch
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "sar2eo_cloud_plugin"
PKG_DIR = REPO / PACKAGE
QRC = REPO / "resources.qrc"
RESOURCES_PY = PKG_DIR / "resources.py"
LINKED_FILES = ("metadata.txt", "LICENSE")  # top-level file -> same name inside the package

# Fields plugins.qgis.org refuses an upload without, plus the ones this project promises (issue 2).
REQUIRED_METADATA = (
    "name", "qgisMinimumVersion", "description", "about", "version", "author", "email", "repository",
    "tracker", "homepage", "hasProcessingProvider", "tags", "icon", "category", "experimental", "deprecated",
    "changelog",
)

# What never goes into the zip (paths relative to the package, POSIX style).
EXCLUDE_DIRS = {"__pycache__", "tests", "test", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
EXCLUDE_FILES = ("*.pyc", "*.aux.xml", "*.pyo", "*.partial.tif", "*.tmp", "*.bak", "*~", ".*", "*.zip", "*.orig")
# models/ holds the bundled model files only: weights + cards (+ a README/notes if any).
MODEL_FILE_PATTERNS = ("*.json", "*.safetensors", "*.md", "*.txt")
ZIP_WARN_BYTES = 25 * 1024 * 1024  # plugins.qgis.org refuses large uploads; say so early


def log(msg: str) -> None:
    print(f"[build_plugin] {msg}", flush=True)


# --------------------------------------------------------------------------------------------- metadata
def read_metadata(path: Path = REPO / "metadata.txt") -> dict:
    cp = configparser.ConfigParser(interpolation=None)
    cp.optionxform = str  # keep camelCase keys
    with open(path, encoding="utf-8") as fh:
        cp.read_file(fh)
    if not cp.has_section("general"):
        raise SystemExit(f"{path}: no [general] section")
    return dict(cp["general"])


def check_metadata() -> dict:
    meta = read_metadata()
    missing = [k for k in REQUIRED_METADATA if not meta.get(k, "").strip()]
    if missing:
        raise SystemExit(f"metadata.txt lacks required field(s): {', '.join(missing)}")
    icon = PKG_DIR / meta["icon"]
    if not icon.is_file():
        raise SystemExit(f"metadata.txt icon={meta['icon']} but {icon} does not exist")
    return meta


def ensure_package_links() -> None:
    """Make sar2eo_cloud_plugin/{metadata.txt,LICENSE} mirror the top-level files (and models/ exist).

    A correct relative symlink is left alone; anything else (missing, a stale copy, or the one-line text file
    git writes for a symlink when core.symlinks=false) is replaced: by the symlink where the filesystem allows
    it, otherwise by a copy.
    """
    # models/ holds only generated/trained files; a clone without bundled weights lacks it, and pb_tool.cfg
    # names it, so make sure it exists.
    (PKG_DIR / "models").mkdir(exist_ok=True)
    for name in LINKED_FILES:
        src = REPO / name
        dst = PKG_DIR / name
        target = f"../{name}"
        if dst.is_symlink() and os.readlink(dst) == target:
            continue
        if dst.is_file() and not dst.is_symlink() and dst.read_bytes() == src.read_bytes():
            continue
        if dst.exists() or dst.is_symlink():
            dst.unlink()
        try:
            os.symlink(target, dst)
            log(f"{dst.relative_to(REPO)} -> {target} (symlink)")
        except OSError:
            shutil.copyfile(src, dst)
            log(f"{dst.relative_to(REPO)} copied from {name} (this filesystem has no symlinks)")


# --------------------------------------------------------------------------------------------- resources
def _qrc_inputs() -> list[Path]:
    import xml.etree.ElementTree as ET

    root = ET.parse(QRC).getroot()
    return [QRC.parent / f.text.strip() for f in root.iter("file")]


def compile_resources(force: bool = False) -> Path:
    """pyrcc5 resources.qrc into the package, only when the .qrc or an icon is newer than the output."""
    inputs = [QRC] + _qrc_inputs()
    missing = [p for p in inputs if not p.is_file()]
    if missing:
        raise SystemExit("resources.qrc names missing file(s): " + ", ".join(str(p) for p in missing))
    if not force and RESOURCES_PY.is_file():
        newest = max(p.stat().st_mtime for p in inputs)
        if RESOURCES_PY.stat().st_mtime >= newest:
            return RESOURCES_PY
    pyrcc5 = shutil.which("pyrcc5")
    if pyrcc5:
        cmd = [pyrcc5]
    elif importlib.util.find_spec("PyQt5") and importlib.util.find_spec("PyQt5.pyrcc_main"):
        cmd = [sys.executable, "-m", "PyQt5.pyrcc_main"]
    else:
        raise SystemExit("pyrcc5 not found: apt-get install pyqt5-dev-tools (./scripts/setup.sh does it)")
    tmp = RESOURCES_PY.with_name("resources.py.tmp")
    # pyrcc5 resolves the <file> paths relative to the .qrc; run it from there.
    subprocess.run(cmd + ["-o", str(tmp), QRC.name], cwd=QRC.parent, check=True)
    text = tmp.read_text(encoding="utf-8")
    # Import Qt through QGIS's shim, as QGIS plugins do.
    text = text.replace("from PyQt5 import QtCore", "from qgis.PyQt import QtCore")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, RESOURCES_PY)
    log(f"compiled {QRC.name} -> {RESOURCES_PY.relative_to(REPO)}")
    return RESOURCES_PY


# --------------------------------------------------------------------------------------------- zip
def _excluded(rel: PurePosixPath) -> bool:
    if any(part in EXCLUDE_DIRS for part in rel.parts[:-1]):
        return True
    name = rel.name
    if any(fnmatch.fnmatch(name, pat) for pat in EXCLUDE_FILES):
        return True
    if rel.parts[0] == "models" and not any(fnmatch.fnmatch(name, pat) for pat in MODEL_FILE_PATTERNS):
        return True
    return False


def package_files() -> list[tuple[Path, PurePosixPath]]:
    """(source path, path inside the package) of every file that ships, sorted."""
    files = []
    for dirpath, dirnames, filenames in os.walk(PKG_DIR):
        dirnames[:] = sorted(d for d in dirnames if d not in EXCLUDE_DIRS and not d.startswith("."))
        for fn in sorted(filenames):
            src = Path(dirpath) / fn
            rel = PurePosixPath(src.relative_to(PKG_DIR).as_posix())
            if not _excluded(rel):
                files.append((src, rel))
    return files


def build_zip(out_dir: Path) -> Path:
    meta = check_metadata()
    ensure_package_links()
    compile_resources()
    version = meta["version"].strip()
    out_dir.mkdir(parents=True, exist_ok=True)
    dest = out_dir / f"{PACKAGE}-{version}.zip"
    files = package_files()
    names = {str(rel) for _, rel in files}
    for needed in ("__init__.py", "metadata.txt", "LICENSE", "resources.py", meta["icon"]):
        if needed not in names:
            raise SystemExit(f"refusing to build: {PACKAGE}/{needed} would be missing from the zip")
    fd, tmp = tempfile.mkstemp(prefix=dest.name, suffix=".partial", dir=out_dir)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
            for src, rel in files:
                arc = f"{PACKAGE}/{rel}"
                if src.suffix == ".safetensors":
                    zf.write(src.resolve(), arc, compress_type=zipfile.ZIP_STORED)  # incompressible
                else:
                    zf.write(src.resolve(), arc)  # resolve(): symlinks go in as the real file
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    size = dest.stat().st_size
    models = sorted(str(rel) for _, rel in files if rel.parts[0] == "models")
    log(f"wrote {dest.relative_to(REPO) if dest.is_relative_to(REPO) else dest}: {len(files)} files, "
        f"{size / 1e6:.1f} MB; bundled model files: {', '.join(models) if models else 'none'}")
    if size > ZIP_WARN_BYTES:
        log(f"WARNING: {size / 1e6:.0f} MB is above plugins.qgis.org's upload limit (~25 MB); "
            "publish the weights separately or quantise them before uploading there")
    return dest


def deploy(zip_path: Path, plugins_dir: Path) -> Path:
    """Unpack the zip into plugins_dir (replacing an earlier deployment), as QGIS's 'Install from ZIP' does."""
    target = plugins_dir / PACKAGE
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.exists():
        shutil.rmtree(target)
    plugins_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(plugins_dir)
    log(f"deployed {zip_path.name} into {target}")
    return target


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Build steps for the sar2eo_cloud_plugin QGIS plugin")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("resources", help="compile resources.qrc into the package (if out of date)")
    r.add_argument("--force", action="store_true")
    sub.add_parser("metadata", help="check metadata.txt and link it (and LICENSE) into the package")
    sub.add_parser("version", help="print the plugin version from metadata.txt")
    z = sub.add_parser("zip", help="build dist/sar2eo_cloud_plugin-<version>.zip")
    z.add_argument("--out", type=Path, default=REPO / "dist")
    d = sub.add_parser("deploy", help="build the zip and unpack it into a QGIS plugins folder")
    d.add_argument("plugins_dir", type=Path)
    d.add_argument("--out", type=Path, default=REPO / "dist")
    args = ap.parse_args(argv)

    if args.cmd == "resources":
        compile_resources(force=args.force)
    elif args.cmd == "metadata":
        check_metadata()
        ensure_package_links()
    elif args.cmd == "version":
        print(read_metadata()["version"].strip())
    elif args.cmd == "zip":
        build_zip(args.out)
    elif args.cmd == "deploy":
        deploy(build_zip(args.out), args.plugins_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Build steps for the QGIS plugin: compile resources, keep the package's metadata copy, zip, deploy.

    python scripts/build_plugin.py resources        # resources.qrc -> sar2eo_cloud_plugin/resources.py (pyrcc5)
    python scripts/build_plugin.py metadata         # check metadata.txt; make sar2eo_cloud_plugin/metadata.txt
    python scripts/build_plugin.py zip [--out dist] # -> dist/sar2eo_cloud_plugin-<version>.zip (code only)
    python scripts/build_plugin.py zip --full       # -> dist/sar2eo_cloud_plugin-<version>-full.zip (with models)
    python scripts/build_plugin.py deploy DIR       # unpack that zip into DIR/sar2eo_cloud_plugin (a QGIS
                                                    # profile's python/plugins folder)

``make zip`` / ``make zip-full`` / ``make deploy`` call this. Two zips (README, "Which zip"):

* the **code-only** zip (``make zip``) for plugins.qgis.org: the model cards and ``model_index.json`` but no
  weights or graphs (QGIS users download the models they need from the dock, verified by sha256); it must stay
  under plugins.qgis.org's upload limit of 25,000,000 bytes (``CODE_ZIP_LIMIT``: the build refuses a larger
  one, and tests/test_packaging.py checks it);
* the **full** zip (``make zip-full``) for offline installs: every model's files inside, each checked against
  its card before it is packed.
 Only the Python standard library plus pyrcc5 (or PyQt5's
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
# models/: the cards and attribution texts go into both zips; weights and graphs only into the full zip.
MODEL_CODE_PATTERNS = ("*.json", "*.md", "*.txt")
MODEL_DATA_PATTERNS = ("*.safetensors", "*.onnx")
CODE_ZIP_LIMIT = 25_000_000  # bytes: plugins.qgis.org's upload limit


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
def _excluded(rel: PurePosixPath, full: bool = False) -> bool:
    if any(part in EXCLUDE_DIRS for part in rel.parts[:-1]):
        return True
    name = rel.name
    if any(fnmatch.fnmatch(name, pat) for pat in EXCLUDE_FILES):
        return True
    patterns = MODEL_CODE_PATTERNS + (MODEL_DATA_PATTERNS if full else ())
    if rel.parts[0] == "models" and not any(fnmatch.fnmatch(name, pat) for pat in patterns):
        return True
    return False


def model_data_files() -> list[Path]:
    """Every weights / graph file the bundled cards name, each checked against its card (size + sha256): the
    full zip refuses to pack a model that is missing or does not match."""
    sys.path.insert(0, str(REPO))
    from sar2eo_cloud_plugin.core import modelfile

    found = []
    for card_file in sorted((PKG_DIR / "models").glob("*.json")):
        card = modelfile.read_card(card_file)
        for entry, locate in ((card.weights, modelfile.weights_path), (card.onnx, modelfile.onnx_path)):
            if not entry:
                continue
            path = locate(card_file, card)
            if not modelfile.file_matches(path, entry["sha256"], entry.get("bytes")):
                raise SystemExit(f"refusing to build the full zip: {path} is missing or does not match "
                                 f"{card_file.name} (run scripts/setup.sh)")
            found.append(path)
    return found


def package_files(full: bool = False) -> list[tuple[Path, PurePosixPath]]:
    """(source path, path inside the package) of every file that ships in the code-only (or ``full``) zip,
    sorted."""
    files = []
    for dirpath, dirnames, filenames in os.walk(PKG_DIR):
        dirnames[:] = sorted(d for d in dirnames if d not in EXCLUDE_DIRS and not d.startswith("."))
        for fn in sorted(filenames):
            src = Path(dirpath) / fn
            rel = PurePosixPath(src.relative_to(PKG_DIR).as_posix())
            if not _excluded(rel, full):
                files.append((src, rel))
    return files


def build_zip(out_dir: Path, full: bool = False) -> Path:
    meta = check_metadata()
    ensure_package_links()
    compile_resources()
    version = meta["version"].strip()
    out_dir.mkdir(parents=True, exist_ok=True)
    dest = out_dir / f"{PACKAGE}-{version}{'-full' if full else ''}.zip"
    files = package_files(full)
    names = {str(rel) for _, rel in files}
    if full:
        missing = [p.name for p in model_data_files() if f"models/{p.name}" not in names]
        if missing:
            raise SystemExit(f"refusing to build the full zip: {', '.join(missing)} would be missing")
    for needed in ("__init__.py", "metadata.txt", "LICENSE", "resources.py", "model_index.json", meta["icon"]):
        if needed not in names:
            raise SystemExit(f"refusing to build: {PACKAGE}/{needed} would be missing from the zip")
    fd, tmp = tempfile.mkstemp(prefix=dest.name, suffix=".partial", dir=out_dir)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
            for src, rel in files:
                arc = f"{PACKAGE}/{rel}"
                if src.suffix in (".safetensors", ".onnx"):
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
    if not full and size >= CODE_ZIP_LIMIT:
        dest.unlink()
        raise SystemExit(f"the code-only zip is {size:,} bytes, not under plugins.qgis.org's limit of "
                         f"{CODE_ZIP_LIMIT:,}: something big got into the package")
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
    z = sub.add_parser("zip", help="build dist/sar2eo_cloud_plugin-<version>.zip (code only; --full: with models)")
    z.add_argument("--out", type=Path, default=REPO / "dist")
    z.add_argument("--full", action="store_true", help="every model inside, for offline installs")
    d = sub.add_parser("deploy", help="build the zip and unpack it into a QGIS plugins folder")
    d.add_argument("plugins_dir", type=Path)
    d.add_argument("--out", type=Path, default=REPO / "dist")
    d.add_argument("--full", action="store_true", help="deploy the full zip (every model inside)")
    args = ap.parse_args(argv)

    if args.cmd == "resources":
        compile_resources(force=args.force)
    elif args.cmd == "metadata":
        check_metadata()
        ensure_package_links()
    elif args.cmd == "version":
        print(read_metadata()["version"].strip())
    elif args.cmd == "zip":
        build_zip(args.out, full=args.full)
    elif args.cmd == "deploy":
        deploy(build_zip(args.out, full=args.full), args.plugins_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())

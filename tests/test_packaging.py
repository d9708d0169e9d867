"""Packaging: metadata, resources, the release zip, pb_tool.cfg, and the zip loading in qgis_process.

The zip is built by the project's own command (scripts/build_plugin.py, i.e. `make zip`) into a temporary folder,
unpacked as QGIS's "Install from ZIP" would, and loaded by qgis_process.bin from there — not from this checkout.
"""
from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.script_modules import load_script

REPO = Path(__file__).resolve().parents[1]
PKG = "sar2eo_cloud_plugin"
PKG_DIR = REPO / PKG
ALGORITHM_IDS = ("sar2eo_cloud:translate_sar_to_eo", "sar2eo_cloud:cloud_mask", "sar2eo_cloud:batch_folder")
S1_DEMO = REPO / "sample_data/s1/S1A_IW_GRDH_1SDV_20170613T165043_33UUP_87_48_VVVH.tif"
S2_DEMO = REPO / "sample_data/s2/S2A_MSIL2A_20170613T101031_87_48_L2A12.tif"


build_plugin = load_script("build_plugin")


def _metadata(path: Path) -> dict:
    cp = configparser.ConfigParser(interpolation=None)
    cp.optionxform = str
    cp.read_string(path.read_text(encoding="utf-8"))
    return dict(cp["general"])


def _source_files() -> set:
    """Every file of the package that must ship (byte code, caches and .aux.xml excluded)."""
    return {str(rel) for _, rel in build_plugin.package_files()}


@pytest.fixture(scope="module")
def plugin_zip(tmp_path_factory) -> Path:
    return build_plugin.build_zip(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="module")
def installed_plugin(plugin_zip, tmp_path_factory) -> Path:
    """The zip unpacked into an empty plugins folder; returns that folder (the QGIS_PLUGINPATH to use)."""
    plugins = tmp_path_factory.mktemp("plugins")
    build_plugin.deploy(plugin_zip, plugins)
    return plugins


def _qgis_process_env(plugins_dir: Path, profile: Path) -> dict:
    env = dict(os.environ)
    env.update(
        QT_QPA_PLATFORM="offscreen",
        # Only the venv's packages: the plugin must come from plugins_dir, not from this checkout.
        PYTHONPATH=sysconfig.get_paths()["purelib"],
        QGIS_PLUGINPATH=str(plugins_dir),
        QGIS_CUSTOM_CONFIG_PATH=str(profile),
        GDAL_PAM_ENABLED="NO",
    )
    return env


def _qgis_process(args, env, cwd, timeout=300) -> subprocess.CompletedProcess:
    exe = shutil.which("qgis_process.bin")
    if exe is None:
        pytest.fail("qgis_process.bin not found: run ./scripts/setup.sh (installs the qgis package)")
    return subprocess.run([exe, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


# ------------------------------------------------------------------------------------------------ metadata
def test_metadata_has_every_required_field():
    meta = _metadata(REPO / "metadata.txt")
    missing = [k for k in build_plugin.REQUIRED_METADATA if not meta.get(k, "").strip()]
    assert not missing, f"metadata.txt lacks {missing}"
    assert meta["qgisMinimumVersion"] == "3.22"
    assert meta["hasProcessingProvider"] == "yes"
    assert meta["category"] == "Raster"
    assert meta["repository"].startswith("https://") and meta["tracker"].startswith("https://")
    assert "@" in meta["email"]
    assert all(part.isdigit() for part in meta["version"].split(".")), meta["version"]
    assert meta["experimental"] in ("True", "False") and meta["deprecated"] in ("True", "False")
    icon = PKG_DIR / meta["icon"]
    assert icon.is_file() and icon.suffix == ".png", icon


def test_package_copies_mirror_top_level_files():
    """QGIS_PLUGINPATH=<checkout> finds the plugin only with metadata.txt inside the package."""
    for name in build_plugin.LINKED_FILES:
        inside = PKG_DIR / name
        assert inside.is_file(), f"{inside} missing: run ./scripts/setup.sh"
        assert inside.read_bytes() == (REPO / name).read_bytes(), f"{inside} is stale"


# ------------------------------------------------------------------------------------------------ resources
def test_resources_compile_and_serve_every_icon(qgis_app):
    from qgis.PyQt.QtCore import QFile
    from qgis.PyQt.QtGui import QIcon

    build_plugin.compile_resources()
    import sar2eo_cloud_plugin.resources  # noqa: F401  (registers the compiled resources)

    names = [p.name for p in build_plugin._qrc_inputs()]
    for required in ("icon.svg", "translate.svg", "cloud.svg", "dock.svg"):
        assert required in names, f"resources.qrc does not list icons/{required}"
    for name in names:
        path = f":/plugins/{PKG}/icons/{name}"
        assert QFile.exists(path), path
        assert not QIcon(path).pixmap(32, 32).isNull(), f"{path} does not render"


def test_svg_icons_are_valid(qgis_app):
    from qgis.PyQt.QtSvg import QSvgRenderer

    svgs = sorted((PKG_DIR / "icons").glob("*.svg"))
    assert svgs
    for svg in svgs:
        assert QSvgRenderer(str(svg)).isValid(), svg


# ------------------------------------------------------------------------------------------------ the zip
def test_zip_contents(plugin_zip):
    meta = _metadata(REPO / "metadata.txt")
    assert plugin_zip.name == f"{PKG}-{meta['version']}.zip"
    with zipfile.ZipFile(plugin_zip) as zf:
        assert zf.testzip() is None
        infos = zf.infolist()
        names = [i.filename for i in infos]
        assert all(n.startswith(f"{PKG}/") for n in names), "one top-level folder named after the package"
        rel = {n[len(PKG) + 1:] for n in names}
        for needed in ("__init__.py", "metadata.txt", "LICENSE", "resources.py", meta["icon"], "icons/icon.svg",
                       "icons/translate.svg", "icons/cloud.svg", "icons/dock.svg", "plugin.py",
                       "processing/provider.py", "core/inference.py"):
            assert needed in rel, f"{needed} missing from the zip"
        # real files, not symlinks, with the top-level content
        for name in build_plugin.LINKED_FILES:
            info = zf.getinfo(f"{PKG}/{name}")
            assert (info.external_attr >> 28) != 0o12, f"{name} is stored as a symlink"
            assert zf.read(info) == (REPO / name).read_bytes()
    assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".pyo"))]
    assert not [n for n in rel if n.split("/")[0] in ("tests", "test") or "/tests/" in n]
    assert not [n for n in rel if n.endswith(".aux.xml")]
    # models/ of the code-only zip: the cards and attribution texts, no weights or graphs (downloaded from the
    # dock); the model index that says where to download them from
    models = {n for n in rel if n.startswith("models/")}
    assert models and all(n.endswith((".json", ".md", ".txt")) for n in models), models
    assert "model_index.json" in rel
    # small enough for plugins.qgis.org
    assert plugin_zip.stat().st_size < build_plugin.CODE_ZIP_LIMIT == 25_000_000
    # everything the package holds ships (incl. processing/models/*.model3 when present)
    assert _source_files() <= rel, f"not in the zip: {sorted(_source_files() - rel)}"
    for model3 in PKG_DIR.glob("processing/models/*.model3"):
        assert f"processing/models/{model3.name}" in rel


def test_full_zip_selection_has_every_model_file():
    """What `make zip-full` packs (the selection, without writing the 700 MB zip): every file every card names,
    each matching its card (model_data_files refuses otherwise), beside the whole code-only selection."""
    full = {str(rel) for _, rel in build_plugin.package_files(full=True)}
    data = build_plugin.model_data_files()
    assert data and {f"models/{p.name}" for p in data} <= full
    assert _source_files() <= full


def test_pb_tool_cfg_covers_the_package():
    cp = configparser.ConfigParser(interpolation=None)
    cp.read(REPO / "pb_tool.cfg")
    assert cp.get("plugin", "name") == PKG
    python_files = set(cp.get("files", "python_files").split())
    extra_dirs = set(cp.get("files", "extra_dirs").split())
    extras = set(cp.get("files", "extras").split())
    modules = {p.name for p in PKG_DIR.glob("*.py")} | {"resources.py"}
    assert modules <= python_files, f"add to pb_tool.cfg python_files: {sorted(modules - python_files)}"
    subdirs = {p.name for p in PKG_DIR.iterdir() if p.is_dir() and p.name != "__pycache__"
               and any(f.is_file() for f in p.rglob("*"))}
    assert subdirs <= extra_dirs, f"add to pb_tool.cfg extra_dirs: {sorted(subdirs - extra_dirs)}"
    assert {"metadata.txt", "LICENSE"} <= extras
    for f in python_files | extras:
        assert (PKG_DIR / f).exists(), f"pb_tool.cfg lists {f}, which is not in the package"


def test_pb_tool_deploys_the_same_folder_as_the_zip(plugin_zip, tmp_path):
    pb_tool = Path(sys.executable).with_name("pb_tool")
    if not pb_tool.exists():
        pytest.fail("pb_tool is not installed in the venv: run ./scripts/setup.sh")
    proc = subprocess.run([str(pb_tool), "deploy", "-y", "-n", "--config_file", "../pb_tool.cfg", "-p",
                           str(tmp_path)], cwd=PKG_DIR, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    deployed = tmp_path / PKG
    got = {p.relative_to(deployed).as_posix() for p in deployed.rglob("*")
           if p.is_file() and "__pycache__" not in p.parts and not p.name.endswith(".aux.xml")}
    # pb_tool copies models/ whole: the full zip's selection (the code-only zip leaves the model files out)
    expected = {str(rel) for _, rel in build_plugin.package_files(full=True)}
    assert got == expected, f"only pb_tool: {sorted(got - expected)}; only zip: {sorted(expected - got)}"
    assert not (deployed / "metadata.txt").is_symlink()


def test_shell_entry_points_parse():
    for script in ("scripts/setup.sh", "scripts/demo.sh", "scripts/test.sh", ".ci/run"):
        path = REPO / script
        assert os.access(path, os.X_OK), f"{script} is not executable"
        proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert proc.returncode == 0, f"{script}: {proc.stderr}"


# ------------------------------------------------------------------------------------------------ in QGIS
@pytest.mark.qgis_process
def test_zip_installs_and_loads_in_qgis_process(installed_plugin, tmp_path):
    env = _qgis_process_env(installed_plugin, tmp_path / "profile")
    enable = _qgis_process(["plugins", "enable", PKG], env, cwd=tmp_path)
    assert enable.returncode == 0, enable.stdout + enable.stderr
    listing = _qgis_process(["list"], env, cwd=tmp_path)
    assert listing.returncode == 0, listing.stdout + listing.stderr
    for alg in ALGORITHM_IDS:
        assert alg in listing.stdout, f"{alg} not listed by the installed zip:\n{listing.stdout[-3000:]}"


@pytest.mark.xvfb
@pytest.mark.skipif(not (shutil.which("xvfb-run") and shutil.which("qgis")), reason="needs xvfb-run and qgis")
def test_qgis_installs_the_zip_like_a_user(plugin_zip, tmp_path):
    """The real QGIS desktop (under Xvfb), fresh profile: Plugins > Install from ZIP's own code installs the zip,
    starts the plugin from the profile's plugin folder, and its algorithms are registered."""
    import json

    facts_path = tmp_path / "facts.json"
    (tmp_path / "xdg").mkdir(mode=0o700)
    (tmp_path / "home").mkdir()
    env = dict(os.environ)
    env.pop("QT_QPA_PLATFORM", None)
    env.pop("QGIS_PLUGINPATH", None)
    env.pop("QGIS_CUSTOM_CONFIG_PATH", None)  # pytest-qgis points it at its own settings folder
    env.update(HOME=str(tmp_path / "home"), XDG_RUNTIME_DIR=str(tmp_path / "xdg"),
               PYTHONPATH=sysconfig.get_paths()["purelib"],
               SAR2EO_INSTALL_ZIP=str(plugin_zip), SAR2EO_INSTALL_JSON=str(facts_path))
    profiles = tmp_path / "profiles"
    cmd = ["xvfb-run", "-a", "qgis", "--nologo", "--noversioncheck", "--profiles-path", str(profiles),
           "--code", str(Path(__file__).with_name("packaging_install_zip_script.py"))]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path,
                          stdin=subprocess.DEVNULL)
    log = (proc.stdout or "")[-3000:] + (proc.stderr or "")[-3000:]
    assert facts_path.is_file(), f"QGIS wrote no facts (rc {proc.returncode}):\n{log}"
    facts = json.loads(facts_path.read_text(encoding="utf-8"))
    assert facts["errors"] == [], facts["errors"]
    assert facts["installed"] and facts["active"], facts
    assert str(profiles) in facts["home_plugin_path"], facts["home_plugin_path"]
    assert facts["loaded_from"].startswith(facts["home_plugin_path"]), facts["loaded_from"]
    meta = _metadata(REPO / "metadata.txt")
    assert (facts["name"], facts["version"], facts["icon"]) == (meta["name"], meta["version"], meta["icon"])
    assert set(ALGORITHM_IDS) <= set(facts["algorithms"]), facts["algorithms"]


@pytest.mark.qgis_process
def test_installed_zip_translates_the_real_sample(installed_plugin, tiny_models, tmp_path):
    """The unpacked zip runs end to end (with a GENERATED test model: checks the mechanics, not quality)."""
    import rasterio

    env = _qgis_process_env(installed_plugin, tmp_path / "profile")
    assert _qgis_process(["plugins", "enable", PKG], env, cwd=tmp_path).returncode == 0
    out = tmp_path / "translated.tif"
    proc = _qgis_process(["run", "sar2eo_cloud:translate_sar_to_eo", "--", f"INPUT={S1_DEMO}", "VV_BAND=1",
                          "VH_BAND=2", "BAND_SET=0", "DEVICE=1", f"MODEL_FILE={tiny_models / 'sar2eo_rgb.json'}",
                          f"OUTPUT={out}"], env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with rasterio.open(out) as dst, rasterio.open(S1_DEMO) as src:
        assert dst.count == 3 and (dst.width, dst.height) == (src.width, src.height)
        assert dst.crs == src.crs and dst.transform == src.transform


@pytest.mark.qgis_process
def test_demo_script_mechanics(tiny_models, tmp_path):
    """scripts/demo.sh (what `make demo` runs) end to end on the real sample, with GENERATED test models in
    place of the bundled ones so it does not depend on trained weights."""
    out = tmp_path / "demo"
    env = dict(os.environ, SKIP_SETUP="1", DEMO_OUT=str(out), DEMO_DEVICE="cpu",
               TRANSLATE_MODEL_FILE=str(tiny_models / "sar2eo_rgb.json"),
               CLOUD_MODEL_FILE=str(tiny_models / "cloudmask.json"))
    proc = subprocess.run([str(REPO / "scripts" / "demo.sh")], env=env, capture_output=True, text=True,
                          timeout=600, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    s1, s2 = S1_DEMO.stem, S2_DEMO.stem
    for name in (f"{s1}_sar2eo_rgb.tif", f"{s2}_cloudmask.tif", f"{s2}_cloudprob.tif", f"{s2}_clouds.gpkg",
                 "translate.log", "cloudmask.log", "quicklook.png"):
        assert (out / name).is_file(), f"demo did not write {name}:\n{proc.stdout[-3000:]}"
    assert "Size is 120, 120" in proc.stdout and "EPSG:32633" in proc.stdout
    assert "using the model file" in proc.stdout

"""Installing the plugin's Python dependencies into a plugin-owned folder (QGIS-free; the dock runs it).

QGIS users should not have to open a shell: the dock's **Install** button runs pip with the plugin's pins
into ``<QGIS profile>/sar2eo_cloud/python<X.Y>`` (``pip install --target``), a folder the plugin puts on
``sys.path`` when it starts (:func:`activate`). Nothing is written into QGIS's own Python.

* The network runtime is ONNX Runtime, for the CPU (``onnxruntime``) or for NVIDIA GPUs
  (``onnxruntime-gpu``), as the user chooses; PyTorch (several GB) is optional.
* Packages already usable in QGIS's Python are not installed again (:func:`requirements` asks
  :mod:`.deps`); the folder goes at the END of ``sys.path``, so QGIS's own numpy (which GDAL was built
  against) keeps precedence over any copy pip put in the folder.
* pip's failures are explained in words (:func:`explain_failure`): no network, a proxy, no space, no
  permission, TLS, no pip — never a traceback.

The GUI (``gui/installer.py``) runs :func:`pip_command` as a QProcess and shows its log.
"""
from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from .deps import FEATURES, REQUIREMENTS, RUNTIMES, DependencyReport

SUBDIR = "sar2eo_cloud"
# The ONNX Runtime build per choice: deps.py's pin, for the CPU package or its GPU twin of the same version.
ONNXRUNTIME = {"cpu": REQUIREMENTS["onnxruntime"].pip,
               "gpu": REQUIREMENTS["onnxruntime"].pip.replace("onnxruntime", "onnxruntime-gpu", 1)}
RUNTIME_LABELS = {"cpu": "ONNX Runtime for the CPU (about 30 MB)",
                  "gpu": "ONNX Runtime for NVIDIA GPUs (CUDA 12; about 300 MB)"}
# Always needed beside the network runtime (deps.REQUIREMENTS keys), then what only the torch runtime needs: both
# from the tasks' declarations (core/tasks.py through deps), so a package added to a task reaches the installer.
BASE_KEYS = tuple(dict.fromkeys(k for packages in FEATURES.values() for k in packages))
TORCH_KEYS = tuple(dict.fromkeys(k for runtimes in RUNTIMES.values() for r in runtimes if "torch" in r for k in r))
# Optional extra: onnx, for installing the ukis-csmask models from their PyPI wheel (core/ukis.py).
ONNX_KEYS = ("onnx",)
ONNX_LABEL = "Also install onnx (optional, about 30 MB: for the ukis-csmask models from PyPI)"
# rasterio's dependency affine: 3.x breaks rasterio on Python 3.11 (functools.cached_property on its slotted
# Affine: "No '__dict__' attribute on 'Affine' instance", seen with QGIS 3.22's Python 3.11.2, Debian 12);
# requirements/debian12.txt holds the same pin for the developers' venv.
RASTERIO_COMPANIONS = ("affine<3",) if sys.version_info < (3, 12) else ()
PYTHON_ENV = "SAR2EO_CLOUD_PIP_PYTHON"   # a Python with pip to run instead of QGIS's own (tests, odd installs)


def target_dir(profile_dir: os.PathLike) -> Path:
    """``<profile>/sar2eo_cloud/python<X.Y>``: per Python version, since compiled wheels only fit one."""
    return Path(profile_dir) / SUBDIR / f"python{sys.version_info.major}.{sys.version_info.minor}"


def activate(folder: os.PathLike) -> bool:
    """Put ``folder`` at the end of ``sys.path`` (when it exists); True when it was added now."""
    path = os.fspath(folder)
    if not os.path.isdir(path) or path in sys.path:
        return False
    sys.path.append(path)
    import importlib

    importlib.invalidate_caches()   # find_spec must see what pip just put there
    return True


def requirements(runtime: str = "cpu", with_torch: bool = False,
                 report: Optional[DependencyReport] = None, with_onnx: bool = False) -> List[str]:
    """The pip requirement strings to install: the runtime's ONNX Runtime, the base packages and (when asked)
    the torch stack and the onnx extra, leaving out what ``report`` says is already usable."""
    if runtime not in ONNXRUNTIME:
        raise ValueError(f"unknown runtime {runtime!r} (use {' or '.join(ONNXRUNTIME)})")
    keys = list(BASE_KEYS) + (list(TORCH_KEYS) if with_torch else []) + (list(ONNX_KEYS) if with_onnx else [])
    specs: List[str] = [ONNXRUNTIME[runtime]]   # always: also replaces a CPU build with the GPU one
    for key in keys:
        status = report.packages.get(key) if report is not None else None
        if status is not None and status.ok:
            continue
        for spec in REQUIREMENTS[key].pip.split():
            spec = spec.strip('"')
            if spec not in specs:
                specs.append(spec)
    # numpy must stay of the major version QGIS's GDAL was built with, even when pulled in as a dependency.
    numpy_pin = REQUIREMENTS["numpy"].pip.strip('"')
    if numpy_pin != "numpy" and numpy_pin not in specs:
        specs.append(numpy_pin)
    if any(s.startswith("rasterio") for s in specs):
        specs.extend(s for s in RASTERIO_COMPANIONS if s not in specs)
    return specs


def python_executable() -> Optional[str]:
    """A Python interpreter of the running version with which to run pip. Inside QGIS ``sys.executable`` is
    often QGIS itself, so look beside the prefix (Linux, macOS, OSGeo4W) and on PATH."""
    override = os.environ.get(PYTHON_ENV, "").strip()
    if override:
        return override
    # The interpreter of this very installation first (sys.prefix): sys.executable inside QGIS is QGIS
    # itself, or whatever "python3" is first on PATH (e.g. a pyenv shim of another Python).
    ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (Path(sys.prefix) / "bin" / f"python{ver}", Path(sys.prefix) / "bin" / "python3",
                      Path(sys.prefix) / "python.exe", Path(sys.exec_prefix) / "python.exe"):
        if candidate.is_file():
            return str(candidate)
    exe = Path(sys.executable or "")
    if exe.name.lower().startswith("python") and exe.is_file():
        return str(exe)
    return shutil.which(f"python{ver}") or None


def pip_command(target: os.PathLike, specs: Sequence[str], python: Optional[str] = None,
                find_links: Optional[os.PathLike] = None, no_index: bool = False) -> List[str]:
    """The argv that installs ``specs`` into ``target``. ``find_links`` + ``no_index``: from a local folder
    of wheels only (offline installs, and the tests)."""
    exe = python or python_executable()
    if not exe:
        raise RuntimeError("No Python interpreter with pip was found beside QGIS.")
    argv = [exe, "-m", "pip", "install", "--target", os.fspath(target), "--upgrade", "--only-binary=:all:",
            "--disable-pip-version-check", "--no-input", "--no-warn-script-location", "--progress-bar", "off"]
    if no_index:
        argv.append("--no-index")
    if find_links:
        argv += ["--find-links", os.fspath(find_links)]
    return argv + list(specs)


# (pattern in pip's output, what to tell the user); the first that matches wins.
_FAILURES = (
    (r"No space left on device|\[Errno 28\]",
     "There is no space left on the disk holding {target}: free some space and press Install again."),
    (r"ProxyError|Cannot connect to proxy|407 Proxy Authentication",
     "pip could not get through the proxy: check the proxy (QGIS Settings > Options > Network, or the "
     "https_proxy variable) and press Install again."),
    (r"CERTIFICATE_VERIFY_FAILED|SSLError|SSL: ",
     "The secure (TLS) connection to the package index failed: the system's certificates may be out of date, "
     "or a firewall is intercepting the connection."),
    (r"Temporary failure in name resolution|Name or service not known|getaddrinfo failed|Network is unreachable"
     r"|Failed to establish a new connection|Connection refused|Read timed out|ConnectTimeout",
     "No network: pip could not reach the package index. Connect to the internet and press Install again."),
    (r"Permission denied|\[Errno 13\]|Access is denied",
     "No permission to write in {target}: check the folder's permissions."),
    (r"No module named pip",
     "QGIS's Python has no pip: install it (Debian/Ubuntu: sudo apt install python3-pip; OSGeo4W: the "
     "python3-pip package) and press Install again."),
    (r"No matching distribution found|Could not find a version that satisfies",
     "pip found no package that fits this QGIS's Python ({python}) and system: {detail}"),
)


def explain_failure(output: str, returncode: int, target: os.PathLike = "", python: str = "") -> str:
    """One or two sentences for a failed pip run, from its output (never the traceback itself)."""
    for pattern, text in _FAILURES:
        match = re.search(pattern, output)
        if match:
            line = next((ln.strip() for ln in output.splitlines() if re.search(pattern, ln)), match.group(0))
            return text.format(target=target, python=python or sys.version.split()[0], detail=line)
    last = next((ln.strip() for ln in reversed(output.splitlines()) if ln.strip().startswith("ERROR")), "")
    return (f"pip stopped with exit code {returncode}" + (f": {last}" if last else "") +
            ". The log above has the details.")

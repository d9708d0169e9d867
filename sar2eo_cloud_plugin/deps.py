"""The plugin's one dependency check (QGIS-free, imports nothing heavy).

Run when the plugin loads (message bar, dock, layer actions) and by every Processing algorithm's
``canExecute``/``processAlgorithm`` (``processing/common.py`` only asks it), so the desktop and
``qgis_process`` agree on what may run. It looks packages up with :func:`importlib.util.find_spec`
and reads their versions from the installed distribution metadata, so it costs milliseconds:
torch is *not* imported at QGIS start-up.

A feature (a task of :mod:`.core.tasks`) needs its ``packages`` and ONE complete ``runtime`` of
its alternatives (preferred first): a package of a runtime that is not used is not a problem. The
result says, per feature, whether it can run and with which runtime, and builds one message naming
exactly what is missing or too old/new together with the pip command (pinned versions) that fixes it.
"""
from __future__ import annotations

import importlib.util
import os.path
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from .core.tasks import TASKS
from .core.ukis import ONNX_PIP

try:  # Python 3.8+
    from importlib import metadata as _metadata
except ImportError:  # pragma: no cover
    _metadata = None  # type: ignore[assignment]


@dataclass(frozen=True)
class Requirement:
    """One Python package the plugin needs."""

    module: str                 # import name, looked up with find_spec
    dist: str                   # distribution name, for the version and the pip command
    pip: str                    # what to pass to pip (pinned where we verified the pin)
    minimum: Optional[str] = None   # inclusive lower bound
    below: Optional[str] = None     # exclusive upper bound
    why: str = ""


def parse_version(text: str) -> Tuple[int, ...]:
    """'2.14.1+cu121' -> (2, 14, 1); '0.6.0rc1' -> (0, 6, 0); unparsable parts stop the tuple."""
    parts: List[int] = []
    for piece in re.split(r"[.+-]", text.strip()):
        match = re.match(r"\d+", piece)
        if not match:
            break
        parts.append(int(match.group(0)))
        if match.end() != len(piece):  # '0rc1' -> 0, then stop
            break
    return tuple(parts)


def _bindings_numpy_major() -> Optional[int]:
    """The numpy major version that the system's GDAL Python bindings (``osgeo``, which QGIS uses too) were
    built with, read from the numpy distribution installed beside them (Debian: 1.24 on 12, 2.2 on 13); None
    when that cannot be told. Looks at metadata only, imports nothing."""
    if _metadata is None:
        return None
    try:
        spec = importlib.util.find_spec("osgeo")
        locations = list(spec.submodule_search_locations or []) if spec else []
        if not locations:
            return None
        site = os.path.dirname(os.path.normpath(locations[0]))
        for dist in _metadata.distributions(name="numpy", path=[site]):
            major = parse_version(dist.version or "")[:1]
            if major:
                return major[0]
    except Exception:  # a broken installation must not stop the plugin loading
        return None
    return None


def _numpy_requirement(major: Optional[int]) -> "Requirement":
    """numpy of the same major version as the one the GDAL/QGIS bindings were built against: modules built
    against numpy 1.x do not load under 2.x, and Debian 13's, built against 2.x, require numpy 2."""
    if major is not None and major <= 1:
        return Requirement("numpy", "numpy", '"numpy<2"', minimum="1.21", below="2",
                           why="QGIS/GDAL Python bindings are built against numpy 1.x")
    if major == 2:
        return Requirement("numpy", "numpy", '"numpy>=2,<3"', minimum="2", below="3",
                           why="QGIS/GDAL Python bindings are built against numpy 2.x")
    return Requirement("numpy", "numpy", "numpy", minimum="1.21")


# Pins verified on Debian 12 + QGIS 3.22 and Debian 13 + QGIS 3.40 (see requirements/debian12.txt, debian13.txt).
REQUIREMENTS: Dict[str, Requirement] = {
    "numpy": _numpy_requirement(_bindings_numpy_major()),
    "torch": Requirement("torch", "torch", "torch==2.14.1 torchvision==0.29.1", minimum="1.13",
                         why="runs the neural networks"),
    # The preferred network runtime (core/runtime.py); the version the parity tests and benchmarks ran with.
    "onnxruntime": Requirement("onnxruntime", "onnxruntime", "onnxruntime==1.32.0", minimum="1.16",
                               why="runs the neural networks (ONNX Runtime; or PyTorch instead)"),
    # Optional, in no feature: only installing a ukis-csmask model from its PyPI wheel needs it (core/ukis.py).
    "onnx": Requirement("onnx", "onnx", ONNX_PIP, minimum="1.14",
                        why="converts the ukis-csmask models from the PyPI wheel (optional)"),
    "rasterio": Requirement("rasterio", "rasterio", "rasterio==1.4.4", minimum="1.3",
                            why="reads and writes the rasters tile by tile"),
    "safetensors": Requirement("safetensors", "safetensors", "safetensors", minimum="0.3",
                               why="reads the model weight files"),
    # segmentation-models-pytorch imports torchvision; it must match torch (pip would otherwise pull the
    # newest torchvision and, with it, another torch).
    "torchvision": Requirement("torchvision", "torchvision", "torch==2.14.1 torchvision==0.29.1", minimum="0.14",
                               why="needed by segmentation-models-pytorch"),
    "segmentation_models_pytorch": Requirement(
        "segmentation_models_pytorch", "segmentation-models-pytorch", "segmentation-models-pytorch==0.6.0",
        minimum="0.3", why="builds the cloud-mask U-Net"),
}

# What each feature (task key) needs: always (FEATURES), and one of (RUNTIMES, preferred first).
FEATURES: Dict[str, Tuple[str, ...]] = {t.key: t.packages for t in TASKS}
RUNTIMES: Dict[str, Tuple[Tuple[str, ...], ...]] = {t.key: t.runtimes for t in TASKS}
FEATURE_LABELS: Dict[str, str] = {t.key: t.label for t in TASKS}


def _cmp(a: Tuple[int, ...], b: Tuple[int, ...]) -> int:
    n = max(len(a), len(b))
    a, b = a + (0,) * (n - len(a)), b + (0,) * (n - len(b))
    return (a > b) - (a < b)


def installed_version(req: Requirement) -> Optional[str]:
    if _metadata is None:
        return None
    for name in (req.dist, req.module):
        try:
            return _metadata.version(name)
        except Exception:  # PackageNotFoundError and broken metadata alike
            continue
    return None


@dataclass
class PackageStatus:
    key: str
    found: bool
    version: Optional[str]
    problem: Optional[str]      # None when usable

    @property
    def ok(self) -> bool:
        return self.problem is None


def check_package(key: str) -> PackageStatus:
    req = REQUIREMENTS[key]
    try:
        spec = importlib.util.find_spec(req.module)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return PackageStatus(key, False, None, f"{req.dist} is not installed ({req.why})")
    version = installed_version(req)
    if version is None:  # importable but no metadata (e.g. vendored): accept
        return PackageStatus(key, True, None, None)
    v = parse_version(version)
    if req.minimum and _cmp(v, parse_version(req.minimum)) < 0:
        return PackageStatus(key, True, version, f"{req.dist} {version} is too old (need >= {req.minimum})")
    if req.below and _cmp(v, parse_version(req.below)) >= 0:
        return PackageStatus(key, True, version,
                             f"{req.dist} {version} is not supported (need < {req.below}: {req.why})")
    return PackageStatus(key, True, version, None)


@dataclass
class DependencyReport:
    packages: Dict[str, PackageStatus] = field(default_factory=dict)

    def _usable(self, key: str) -> bool:
        return self.packages[key].ok

    def runtime(self, feature: str) -> Optional[Tuple[str, ...]]:
        """The first of the feature's runtimes whose packages are all usable (None: none is)."""
        for runtime in RUNTIMES[feature]:
            if all(self._usable(k) for k in runtime):
                return runtime
        return None

    def blocking(self, feature: str) -> List[str]:
        """Keys whose problem stops ``feature``: its own packages, and when no runtime is complete
        the preferred runtime's (what to install; another runtime's gaps are not a problem)."""
        keys = [k for k in FEATURES[feature] if not self._usable(k)]
        runtimes = RUNTIMES[feature]
        if runtimes and self.runtime(feature) is None:
            keys += [k for k in runtimes[0] if not self._usable(k) and k not in keys]
        return keys

    @property
    def problems(self) -> List[PackageStatus]:
        """Statuses of the packages that stop some feature (in REQUIREMENTS order)."""
        blocking = {k for f in FEATURES for k in self.blocking(f)}
        return [p for p in self.packages.values() if p.key in blocking]

    @property
    def ok(self) -> bool:
        return not self.problems

    def missing(self) -> List[str]:
        """Distribution names that are missing or of an unusable version (and stop a feature)."""
        return [REQUIREMENTS[p.key].dist for p in self.problems]

    def can_run(self, feature: str) -> bool:
        return not self.blocking(feature)

    def blocked_features(self) -> List[str]:
        return [f for f in FEATURES if not self.can_run(f)]

    def pip_command(self, feature: Optional[str] = None) -> str:
        """The pip command that installs exactly what is missing (for ``feature``, or for all), pinned."""
        keys = self.blocking(feature) if feature else [p.key for p in self.problems]
        args: List[str] = []
        for key in keys:
            args.extend(a for a in REQUIREMENTS[key].pip.split() if a not in args)
        if not args:
            return ""
        return "python3 -m pip install " + " ".join(args)

    def message(self, feature: Optional[str] = None) -> str:
        """One paragraph for the message bar, the log or a Processing error ('' when all is well): for
        ``feature`` alone, or for every feature."""
        keys = self.blocking(feature) if feature else [p.key for p in self.problems]
        if not keys:
            return ""
        what = "; ".join(self.packages[k].problem or "" for k in keys)
        install = ("Install into the Python that QGIS uses (OSGeo4W Shell on Windows), then restart QGIS: "
                   f"{self.pip_command(feature)}")
        if feature:
            return f"{FEATURE_LABELS[feature]} cannot run: {what}. {install}"
        blocked = ", ".join(FEATURE_LABELS[f] for f in self.blocked_features()) or "nothing"
        return f"SAR2EO & Cloud: {what}. Disabled until fixed: {blocked}. {install}"


def check_dependencies(keys: Optional[Sequence[str]] = None) -> DependencyReport:
    """The status of ``keys`` (default: every REQUIREMENTS entry, as it is at call time)."""
    return DependencyReport({k: check_package(k) for k in (REQUIREMENTS if keys is None else keys)})

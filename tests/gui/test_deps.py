"""Dependency check (QGIS-free): what is reported when a package is hidden or of a wrong version."""
from __future__ import annotations

import importlib.util

import pytest

from sar2eo_cloud_plugin import deps

REAL_FIND_SPEC = importlib.util.find_spec


def hide(monkeypatch, *modules):
    real = REAL_FIND_SPEC

    def fake(name, *args, **kwargs):
        if name in modules:
            return None
        return real(name, *args, **kwargs)

    monkeypatch.setattr(deps.importlib.util, "find_spec", fake)


@pytest.fixture
def torch_only(monkeypatch):
    """Each task with its torch runtime only (as before onnxruntime was a runtime), for the tests of
    what the check says about the torch packages."""
    from sar2eo_cloud_plugin.core.tasks import TASKS, TORCH_RUNTIME

    for t in TASKS:
        torch = tuple(r for r in t.runtimes if r[:len(TORCH_RUNTIME)] == TORCH_RUNTIME)
        monkeypatch.setitem(deps.RUNTIMES, t.key, torch)


def test_everything_present_here():
    report = deps.check_dependencies()
    assert report.ok, report.message()
    assert report.message() == "" and report.pip_command() == ""
    assert report.can_run("translate") and report.can_run("cloud_mask")


def test_with_onnxruntime_no_torch_package_is_needed(monkeypatch):
    """ONNX Runtime is the preferred runtime of both tasks: without torch, torchvision, safetensors and smp both
    still run, and nothing is reported missing."""
    hide(monkeypatch, "torch", "torchvision", "safetensors", "segmentation_models_pytorch")
    report = deps.check_dependencies()
    assert report.can_run("translate") and report.can_run("cloud_mask") and report.blocked_features() == []
    assert report.runtime("translate") == ("onnxruntime",) and report.runtime("cloud_mask") == ("onnxruntime",)


def test_missing_smp_blocks_only_cloud_mask(monkeypatch, torch_only):
    hide(monkeypatch, "segmentation_models_pytorch")
    report = deps.check_dependencies()
    assert report.missing() == ["segmentation-models-pytorch"]
    assert report.can_run("translate") and not report.can_run("cloud_mask")
    assert report.blocked_features() == ["cloud_mask"]
    msg = report.message()
    assert "segmentation-models-pytorch is not installed" in msg
    assert "Cloud mask" in msg and "Translate SAR to EO" not in msg.split("Disabled until fixed:")[1].split(".")[0]
    assert report.pip_command() == "python3 -m pip install segmentation-models-pytorch==0.6.0"


def test_missing_torch_blocks_both_and_pins_versions(monkeypatch, torch_only):
    hide(monkeypatch, "torch", "rasterio")
    report = deps.check_dependencies()
    assert set(report.missing()) == {"torch", "rasterio"}
    assert report.blocked_features() == ["translate", "cloud_mask"]
    cmd = report.pip_command()
    assert "torch==2.14.1 torchvision==0.29.1" in cmd and "rasterio==1.4.4" in cmd


def test_missing_torchvision_blocks_cloud_mask_with_matching_pins(monkeypatch, torch_only):
    hide(monkeypatch, "torchvision", "torch")
    report = deps.check_dependencies()
    assert report.blocked_features() == ["translate", "cloud_mask"]
    assert report.pip_command() == "python3 -m pip install torch==2.14.1 torchvision==0.29.1"
    monkeypatch.setattr(deps.importlib.util, "find_spec", REAL_FIND_SPEC)
    hide(monkeypatch, "torchvision")
    report = deps.check_dependencies()
    assert report.blocked_features() == ["cloud_mask"]
    assert "torchvision is not installed (needed by segmentation-models-pytorch)" in report.message()


def test_numpy_of_the_other_major_than_the_bindings_is_refused(monkeypatch):
    """numpy must be of the major version the system's GDAL/QGIS bindings were built against: 1.x on
    Debian 12 (python3-numpy 1.24), 2.x on Debian 13 (python3-numpy 2.2)."""
    major = deps._bindings_numpy_major()
    assert major in (1, 2), "no numpy found beside the system's osgeo (GDAL) bindings"
    assert deps.REQUIREMENTS["numpy"] == deps._numpy_requirement(major)
    wrong, problem, pin = (("2.1.0", "numpy 2.1.0 is not supported (need < 2", '"numpy<2"') if major == 1 else
                           ("1.26.4", "numpy 1.26.4 is too old (need >= 2)", '"numpy>=2,<3"'))
    real = deps.installed_version
    monkeypatch.setattr(deps, "installed_version",
                        lambda req: wrong if req.dist == "numpy" else real(req))
    report = deps.check_dependencies()
    assert report.missing() == ["numpy"]
    assert problem in report.message()
    assert pin in report.pip_command()


@pytest.mark.parametrize("major,ok,refused", [(1, "1.26.4", "2.1.0"), (2, "2.2.4", "1.26.4"), (None, "1.26.4", "1.7")])
def test_numpy_requirement_follows_the_bindings(major, ok, refused):
    req = deps._numpy_requirement(major)
    version = deps.parse_version
    assert deps._cmp(version(ok), version(req.minimum)) >= 0
    assert req.below is None or deps._cmp(version(ok), version(req.below)) < 0
    assert (deps._cmp(version(refused), version(req.minimum)) < 0
            or (req.below is not None and deps._cmp(version(refused), version(req.below)) >= 0))


def test_too_old_torch(monkeypatch, torch_only):
    real = deps.installed_version
    monkeypatch.setattr(deps, "installed_version",
                        lambda req: "1.7.1+cpu" if req.dist == "torch" else real(req))
    report = deps.check_dependencies()
    assert "torch 1.7.1+cpu is too old" in report.message()


@pytest.mark.parametrize("text,expected", [("2.14.1+cu121", (2, 14, 1)), ("0.6.0rc1", (0, 6, 0)),
                                           ("1.26.4", (1, 26, 4)), ("2", (2,)), ("dev", ())])
def test_parse_version(text, expected):
    assert deps.parse_version(text) == expected


def test_check_imports_none_of_the_heavy_packages():
    """What makes the check fast at QGIS start-up: it looks packages up, it imports none of them."""
    import subprocess
    import sys
    from pathlib import Path

    heavy = ("torch", "torchvision", "segmentation_models_pytorch", "rasterio", "safetensors", "numpy")
    code = ("import sys; from sar2eo_cloud_plugin import deps; r = deps.check_dependencies(); "
            f"print(sorted(m for m in {heavy!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(Path(__file__).resolve().parents[2])).stdout.strip()
    assert out == "[]"


@pytest.fixture
def other_runtime(monkeypatch, torch_only):
    """A second runtime for translation, preferred first, as onnxruntime would be: a made-up
    requirement whose module is the standard library's json (always importable, no metadata)."""
    monkeypatch.setitem(deps.REQUIREMENTS, "fake_rt", deps.Requirement("json", "fake-rt", "fake-rt==1.0",
                                                                      why="runs the networks another way"))
    monkeypatch.setitem(deps.RUNTIMES, "translate", (("fake_rt",), ("torch", "safetensors")))
    return "fake_rt"


def test_a_task_runs_with_one_of_its_runtimes(monkeypatch, torch_only, other_runtime):
    hide(monkeypatch, "torch")
    report = deps.check_dependencies()
    assert report.can_run("translate") and report.runtime("translate") == ("fake_rt",)
    assert report.message("translate") == "" and report.pip_command("translate") == ""
    # torch is only a problem for the task that has no other runtime
    assert report.blocked_features() == ["cloud_mask"] and report.missing() == ["torch"]


def test_without_any_runtime_the_preferred_one_is_asked_for(monkeypatch, other_runtime):
    hide(monkeypatch, "torch", "json")
    report = deps.check_dependencies()
    assert not report.can_run("translate") and report.runtime("translate") is None
    assert report.blocking("translate") == ["fake_rt"]
    assert report.pip_command("translate") == "python3 -m pip install fake-rt==1.0"
    msg = report.message("translate")
    assert msg.startswith("Translate SAR to EO cannot run: fake-rt is not installed") and "torch" not in msg


def test_torch_runtime_is_used_when_it_is_the_only_complete_one(monkeypatch, other_runtime):
    hide(monkeypatch, "json")
    report = deps.check_dependencies()
    assert report.runtime("translate") == ("torch", "safetensors") and report.ok


def test_onnxruntime_is_enough_without_torch(monkeypatch):
    """The plugin's runtimes as declared: ONNX Runtime runs both tasks without torch; with neither, the
    check asks for ONNX Runtime (the preferred, small one), pinned."""
    hide(monkeypatch, "torch", "torchvision", "segmentation_models_pytorch", "safetensors")
    report = deps.check_dependencies()
    assert report.ok and report.runtime("translate") == ("onnxruntime",) == report.runtime("cloud_mask")
    monkeypatch.setattr(deps.importlib.util, "find_spec", REAL_FIND_SPEC)
    hide(monkeypatch, "torch", "onnxruntime")
    report = deps.check_dependencies()
    assert report.blocked_features() == ["translate", "cloud_mask"] and report.missing() == ["onnxruntime"]
    assert report.pip_command() == "python3 -m pip install onnxruntime==1.32.0"

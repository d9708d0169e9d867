"""The dependency installer (sar2eo_cloud_plugin/installer.py) run for real with pip, offline, against a
local wheelhouse (--no-index --find-links), and its failures told in words."""
from __future__ import annotations

import subprocess
import sys

import pytest
from wheelhouse import clean_pip_env, ensure_wheelhouse

from sar2eo_cloud_plugin import deps, installer
from sar2eo_cloud_plugin.core import ukis


@pytest.fixture(scope="module")
def wheelhouse():
    return ensure_wheelhouse()


def test_requirements_choices():
    cpu = installer.requirements("cpu")
    assert cpu[0] == installer.ONNXRUNTIME["cpu"] and not any(s.startswith("torch") for s in cpu)
    gpu = installer.requirements("gpu", with_torch=True)
    assert gpu[0] == installer.ONNXRUNTIME["gpu"] and any(s.startswith("torch==") for s in gpu)
    assert any(s.startswith("segmentation-models-pytorch") for s in gpu)
    with pytest.raises(ValueError):
        installer.requirements("tpu")
    # the optional extra for the ukis-csmask models from PyPI: onnx at core/ukis.py's pin, only when asked
    assert ukis.ONNX_PIP in installer.requirements("cpu", with_onnx=True) and ukis.ONNX_PIP not in cpu


def test_requirements_leave_out_what_is_usable():
    report = deps.check_dependencies()      # this venv has numpy and rasterio
    specs = installer.requirements("cpu", report=report)
    assert not any(s.startswith("rasterio") for s in specs)


def test_install_into_target_offline(wheelhouse, tmp_path):
    target = installer.target_dir(tmp_path / "profile")
    assert target.name == f"python{sys.version_info.major}.{sys.version_info.minor}"
    argv = installer.pip_command(target, [installer.ONNXRUNTIME["cpu"]], python=sys.executable,
                                 find_links=wheelhouse, no_index=True)
    proc = subprocess.run(argv, capture_output=True, text=True, env=clean_pip_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (target / "onnxruntime" / "__init__.py").is_file()
    # a Python that puts the folder on sys.path as the plugin does imports onnxruntime from there
    code = ("import sys; from sar2eo_cloud_plugin import installer; installer.activate(sys.argv[1]); "
            "import onnxruntime; print(onnxruntime.__file__)")
    out = subprocess.run([sys.executable, "-S", "-c", code, str(target)], capture_output=True, text=True,
                         cwd=str(wheelhouse.parents[1]))
    # -S: no site-packages, so the venv's own onnxruntime cannot answer instead
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith(str(target))


def test_missing_package_in_words(tmp_path):
    empty = tmp_path / "wheels"
    empty.mkdir()
    argv = installer.pip_command(tmp_path / "t", ["onnxruntime==1.32.0"], python=sys.executable,
                                 find_links=empty, no_index=True)
    proc = subprocess.run(argv, capture_output=True, text=True, env=clean_pip_env())
    assert proc.returncode != 0
    text = installer.explain_failure(proc.stdout + proc.stderr, proc.returncode, tmp_path / "t")
    assert text.startswith("pip found no package that fits") and "Traceback" not in text


def test_no_network_in_words(tmp_path):
    import socket

    with socket.socket() as s:             # a port on 127.0.0.1 that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = installer.pip_command(tmp_path / "t", ["onnxruntime==1.32.0"], python=sys.executable)
    argv[4:4] = ["--index-url", f"http://127.0.0.1:{port}/simple", "--retries", "1", "--timeout", "2"]
    proc = subprocess.run(argv, capture_output=True, text=True, env=clean_pip_env())
    assert proc.returncode != 0
    assert installer.explain_failure(proc.stdout + proc.stderr, proc.returncode).startswith("No network")


@pytest.mark.parametrize("line, words", [
    ("ERROR: Could not install packages due to an OSError: [Errno 28] No space left on device", "no space left"),
    ("WARNING: Retrying ... ProxyError('Cannot connect to proxy.', OSError('Tunnel connection failed: 407'))",
     "through the proxy"),
    ("ERROR: Could not install packages due to an OSError: [Errno 13] Permission denied: '/x'", "No permission"),
    ("/usr/bin/python3: No module named pip", "has no pip"),
])
def test_failures_in_words(line, words):
    assert words in installer.explain_failure("Collecting onnxruntime\n" + line + "\n", 1, "/p/sar2eo_cloud")


def test_activate_appends_once(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert not installer.activate(tmp_path / "absent")
    assert installer.activate(tmp_path) and sys.path[-1] == str(tmp_path)
    assert not installer.activate(tmp_path)


def test_pip_runs_with_this_installation_python(tmp_path, monkeypatch):
    """Inside QGIS, sys.executable is QGIS or whatever python3 is first on PATH (a pyenv shim was, here):
    the Python beside sys.prefix, the running installation's own, is preferred."""
    ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    own = tmp_path / "bin" / f"python{ver}"
    own.parent.mkdir()
    own.write_text("")
    monkeypatch.delenv(installer.PYTHON_ENV, raising=False)
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    monkeypatch.setattr(sys, "executable", "/somewhere/else/python3")
    assert installer.python_executable() == str(own)
    monkeypatch.setenv(installer.PYTHON_ENV, "/chosen/python")
    assert installer.python_executable() == "/chosen/python"

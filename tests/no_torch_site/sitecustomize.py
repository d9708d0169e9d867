"""Makes torch and every torch-only package unimportable in this Python process (a test aid, never shipped).

Put this folder first on PYTHONPATH and Python imports it at start-up (``sitecustomize``), before the plugin or
QGIS load anything: ``tests/core/test_no_torch.py`` and ``tests/qgis/test_no_torch_qgis_process.py`` use it to
run both tasks as in a QGIS whose Python has numpy, rasterio and onnxruntime but no PyTorch. A meta-path
finder refuses the packages (``importlib.util.find_spec`` raises ImportError, as for a missing package) and
``sys.modules`` holds None for them, so neither an import nor a look-up can reach the installed ones.
"""
import importlib.abc
import sys

BLOCKED = ("torch", "torchvision", "safetensors", "segmentation_models_pytorch", "timm", "triton")


class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in BLOCKED:
            raise ImportError(f"{fullname} is blocked (tests/no_torch_site: a Python without PyTorch)")
        return None


sys.meta_path.insert(0, _NoTorch())
for _name in BLOCKED:
    sys.modules[_name] = None  # type: ignore[assignment]

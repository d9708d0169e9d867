"""QGIS 4 (Qt 6) readiness: every Qt / QGIS enum value in the plugin is written fully qualified
(``QgsProcessingParameterNumber.Type.Integer``, not ``QgsProcessingParameterNumber.Integer``), the only form
PyQt6 accepts. The check resolves each ``Name.Attr`` of the plugin's code against the imported Qt/QGIS classes
and fails where ``Attr`` is an enum member reached through its class instead of through its enum type."""
from __future__ import annotations

import ast
import enum
from pathlib import Path

PLUGIN = Path(__file__).resolve().parents[1] / "sar2eo_cloud_plugin"


def _enum_member(value) -> bool:
    """A sip (PyQt5) or Python enum member: an int-like value whose type is an enum, not the class itself."""
    if isinstance(value, enum.Enum):
        return True
    kind = type(value)
    return isinstance(value, int) and not isinstance(value, bool) and kind.__module__.startswith(("qgis", "PyQt"))


def _qt_names(tree: ast.Module) -> dict:
    """Names the module imports from qgis.* / qgis.PyQt.* / PyQt5.*, resolved to the real objects."""
    import importlib

    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("qgis", "PyQt5"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                if hasattr(module, alias.name):
                    names[alias.asname or alias.name] = getattr(module, alias.name)
    return names


def short_form_enums(path: Path) -> list:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = _qt_names(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in names:
            owner = names[node.value.id]
            value = getattr(owner, node.attr, None)
            if value is not None and _enum_member(value) and type(value) is not owner:
                found.append(f"{path.relative_to(PLUGIN.parent)}:{node.lineno}: {node.value.id}.{node.attr} -> "
                             f"{node.value.id}.{type(value).__name__}.{node.attr}")
    return found


def test_no_short_form_enums(qgis_app):
    offenders = [line for py in sorted(PLUGIN.rglob("*.py")) if "resources.py" not in py.name
                 for line in short_form_enums(py)]
    assert offenders == [], "short-form enums (PyQt6 refuses them):\n" + "\n".join(offenders)


def test_the_check_sees_a_short_form(qgis_app):
    """The check is not vacuous: a GENERATED module with one short-form and one qualified enum."""
    sample = PLUGIN / "_enum_check_sample.py"
    try:
        sample.write_text("from qgis.core import QgsProcessingParameterNumber\n"
                          "A = QgsProcessingParameterNumber.Integer\n"
                          "B = QgsProcessingParameterNumber.Type.Integer\n", encoding="utf-8")
        found = short_form_enums(sample)
    finally:
        sample.unlink()
    assert len(found) == 1 and "QgsProcessingParameterNumber.Integer" in found[0], found

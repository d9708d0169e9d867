#!/usr/bin/env python3
"""Render the plugin's SVG icons to PNG with Qt's own SVG renderer.

``sar2eo_cloud_plugin/icons/icon.png`` (the ``icon=`` of metadata.txt; plugins.qgis.org and the QGIS plugin
manager show it) is rendered from ``icon.svg`` and committed. Re-run after editing ``icon.svg``:

    QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/render_icons.py [--preview DIR]

``--preview DIR`` also writes every SVG as a 64 px PNG into DIR, to eyeball them.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ICONS = Path(__file__).resolve().parents[1] / "sar2eo_cloud_plugin" / "icons"


def render(svg: Path, png: Path, size: int) -> None:
    from PyQt5.QtCore import Qt
    from PyQt5.QtGui import QImage, QPainter
    from PyQt5.QtSvg import QSvgRenderer

    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise SystemExit(f"invalid SVG: {svg}")
    image = QImage(size, size, QImage.Format_ARGB32)
    image.fill(Qt.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.Antialiasing)
    renderer.render(painter)
    painter.end()
    if not image.save(str(png), "PNG"):
        raise SystemExit(f"could not write {png}")
    print(f"{svg.name} -> {png} ({size} px)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preview", type=Path, help="also render every SVG into this folder")
    args = ap.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PyQt5.QtGui import QGuiApplication

    app = QGuiApplication(sys.argv[:1])  # noqa: F841 (QImage/QPainter need an application)
    render(ICONS / "icon.svg", ICONS / "icon.png", 64)
    if args.preview:
        args.preview.mkdir(parents=True, exist_ok=True)
        for svg in sorted(ICONS.glob("*.svg")):
            render(svg, args.preview / (svg.stem + ".png"), 64)
    return 0


if __name__ == "__main__":
    sys.exit(main())

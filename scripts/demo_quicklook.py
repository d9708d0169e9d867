#!/usr/bin/env python3
"""Side-by-side picture of the demo's real inputs and its outputs (scripts/demo.sh writes it).

    python scripts/demo_quicklook.py S1.tif TRANSLATED.tif S2.tif MASK.tif OUT.png [--note TEXT]

Panels: Sentinel-1 VV (dB), the translated Sentinel-2-like image, the real Sentinel-2 true colour (B4, B3, B2),
and that image with the cloud mask over it. Every optical panel gets the same 2-98 % stretch per band.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np


def _stretch(rgb: np.ndarray, valid: np.ndarray) -> np.ndarray:
    out = np.zeros(rgb.shape[1:] + (3,), dtype=np.float32)
    for i in range(3):
        band = rgb[i].astype(np.float32)
        vals = band[valid]
        lo, hi = (np.percentile(vals, (2, 98)) if vals.size else (0.0, 1.0))
        out[..., i] = np.clip((band - lo) / max(hi - lo, 1e-6), 0, 1)
    out[~valid] = 1.0
    return out


def _band_index(ds, name: str, default: int) -> int:
    for i, desc in enumerate(ds.descriptions, start=1):
        if desc and desc.strip().upper() == name:
            return i
    return default


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("s1", "translated", "s2", "mask", "out"):
        ap.add_argument(name)
    ap.add_argument("--note", default="", help="caption line (e.g. which model files were used)")
    args = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import rasterio

    with rasterio.open(args.s1) as ds:
        vv = ds.read(1).astype(np.float32)
    with rasterio.open(args.translated) as ds:
        bands = [_band_index(ds, b, i) for i, b in ((1, "B4"), (2, "B3"), (3, "B2"))]
        tr = ds.read(bands)
        tr_valid = ds.read_masks(1) > 0
        tr_title = "Translated (" + ", ".join(ds.descriptions[i - 1] or f"band {i}" for i in bands) + ")"
    with rasterio.open(args.s2) as ds:
        s2 = ds.read([_band_index(ds, b, d) for b, d in (("B4", 4), ("B3", 3), ("B2", 2))])
    with rasterio.open(args.mask) as ds:
        mask = ds.read(1)

    s2_rgb = _stretch(s2, np.ones(s2.shape[1:], bool))
    overlay = s2_rgb.copy()
    cloud, shadow = mask == 1, mask == 2
    overlay[cloud] = 0.5 * overlay[cloud] + 0.5 * np.array([1.0, 0.85, 0.0])
    overlay[shadow] = 0.5 * overlay[shadow] + 0.5 * np.array([0.0, 0.4, 1.0])
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.6))
    lo, hi = np.percentile(vv[np.isfinite(vv)], (2, 98))
    panels = [
        (np.clip((vv - lo) / max(hi - lo, 1e-6), 0, 1), "Sentinel-1 VV (dB), real", "gray"),
        (_stretch(tr, tr_valid), tr_title, None),
        (s2_rgb, "Sentinel-2 B4/B3/B2, real", None),
        (overlay, f"Cloud (yellow) {100 * cloud.mean():.1f} %, shadow (blue) {100 * shadow.mean():.1f} %", None),
    ]
    for ax, (img, title, cmap) in zip(axes, panels):
        ax.imshow(img, cmap=cmap, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
    if args.note:
        fig.suptitle(args.note, fontsize=10, color="#b00020")
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"quicklook: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

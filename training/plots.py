"""Figures (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Sequence, Tuple

import numpy as np

# false-colour composites: which bands go to R, G, B
COMPOSITES = {"rgb": ("B4", "B3", "B2"), "nir_swir_re": ("B8", "B11", "B5"), "rgbn": ("B8", "B4", "B3")}


def _mpl():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path, title: str = "") -> Path:
    """Title, lay out and write a figure (folders created), then free it."""
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _stretch(img: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return np.clip((img - lo[:, None, None]) / np.maximum(hi - lo, 1e-6)[:, None, None], 0, 1).transpose(1, 2, 0)


def sar_composite(sar_norm: np.ndarray) -> np.ndarray:
    """(2, H, W) normalised VV, VH -> RGB (VV, VH, VV-VH) for display."""
    vv, vh = (sar_norm + 1) / 2
    return np.clip(np.stack([vv, vh, np.clip(vv - vh + 0.5, 0, 1)], -1), 0, 1)


def translation_pairs_png(path: Path, rows: Sequence[Tuple[np.ndarray, np.ndarray, np.ndarray]],
                          band_set_key: str, bands: Sequence[str], gap: int = 2) -> Path:
    """A small PNG for the README: one row per validation patch, panels real S1 (VV, VH, VV-VH) | translation |
    real S2, at the data's own 10 m pixels. ``rows`` hold (normalised S1 (2,H,W), prediction, target) with
    reflectance (C,H,W). The translation and the real image share one stretch (the real image's 2-98 %), so
    their brightness compares. Written as a 256-colour PNG to stay small enough to commit."""
    from PIL import Image

    idx = [list(bands).index(b) for b in COMPOSITES[band_set_key]]
    h, w = rows[0][2].shape[-2:]
    canvas = np.full((len(rows) * (h + gap) - gap, 3 * (w + gap) - gap, 3), 255, np.uint8)
    for r, (sar, pred, target) in enumerate(rows):
        lo = np.percentile(target[idx], 2, axis=(1, 2))
        hi = np.percentile(target[idx], 98, axis=(1, 2))
        for c, img in enumerate((sar_composite(sar), _stretch(pred[idx], lo, hi), _stretch(target[idx], lo, hi))):
            y, x = r * (h + gap), c * (w + gap)
            canvas[y:y + h, x:x + w] = np.rint(np.asarray(img)[:h, :w] * 255).astype(np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).quantize(256).save(path, optimize=True)
    return path


def cloud_figure(path: Path, items: Sequence[Dict[str, np.ndarray]], title: str = "") -> Path:
    """Rows of RGB / ground truth / probability / prediction. items: {"rgb_dn", "target", "prob", "pred", "name"}."""
    plt = _mpl()
    rows = max(1, len(items))
    fig, axes = plt.subplots(rows, 4, figsize=(12, 3.1 * rows), squeeze=False)
    for r, it in enumerate(items):
        rgb = np.clip(it["rgb_dn"].astype(np.float32) / 4000.0, 0, 1).transpose(1, 2, 0)
        lo, hi = np.percentile(rgb, 2), np.percentile(rgb, 98)
        panels = [(f"RGB {it.get('name', '')}", np.clip((rgb - lo) / max(hi - lo, 1e-6), 0, 1), None),
                  ("label", it["target"], "gray"), ("probability", it["prob"], "viridis"),
                  ("prediction", it["pred"], "gray")]
        for ax, (t, im, cmap) in zip(axes[r], panels):
            ax.imshow(im, cmap=cmap, vmin=0 if cmap else None, vmax=1 if cmap else None)
            ax.set_title(t, fontsize=9)
            ax.axis("off")
    return _save(plt, fig, path, title)

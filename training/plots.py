"""Figures (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Sequence

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


def translation_figure(path: Path, sar_norm: np.ndarray, pred: np.ndarray, target: np.ndarray,
                       baseline: np.ndarray, bands: Sequence[str], band_set_key: str, title: str = "") -> Path:
    """Input / prediction / target / baseline false-colour panels and per-band histograms."""
    plt = _mpl()
    comp = COMPOSITES[band_set_key]
    idx = [list(bands).index(b) for b in comp]
    lo = np.percentile(target[idx], 2, axis=(1, 2))
    hi = np.percentile(target[idx], 98, axis=(1, 2))
    n = len(bands)
    fig, axes = plt.subplots(2, max(4, n), figsize=(3.2 * max(4, n), 6.4))
    panels = [("S1 input (VV, VH, VV-VH)", sar_composite(sar_norm)),
              (f"prediction ({','.join(comp)})", _stretch(pred[idx], lo, hi)),
              (f"target ({','.join(comp)})", _stretch(target[idx], lo, hi)),
              ("baseline (train mean)", _stretch(baseline[idx], lo, hi))]
    for ax, (t, im) in zip(axes[0], panels):
        ax.imshow(im)
        ax.set_title(t, fontsize=9)
        ax.axis("off")
    for ax in axes[0][len(panels):]:
        ax.axis("off")
    for b in range(max(4, n)):
        ax = axes[1][b]
        if b >= n:
            ax.axis("off")
            continue
        rng = (0, float(max(np.percentile(target[b], 99.5), np.percentile(pred[b], 99.5), 1e-3)))
        ax.hist(target[b].ravel(), bins=50, range=rng, alpha=0.6, label="target")
        ax.hist(pred[b].ravel(), bins=50, range=rng, alpha=0.6, label="prediction")
        ax.axvline(float(baseline[b].mean()), color="k", ls="--", lw=1, label="baseline")
        ax.set_title(f"{bands[b]} reflectance", fontsize=9)
        ax.legend(fontsize=7)
    return _save(plt, fig, path, title)


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

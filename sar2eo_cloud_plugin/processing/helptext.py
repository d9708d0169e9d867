"""Help texts, icons and the help URL of the algorithms (JSON and metadata only: no torch)."""
from __future__ import annotations

import configparser
import functools
import html
from pathlib import Path

from ..core.tasks import TaskSpec


def icon_path(name: str) -> str:
    return str(Path(__file__).resolve().parent.parent / "icons" / name)


@functools.lru_cache(maxsize=1)
def help_url() -> str:
    """The plugin's homepage from its metadata.txt ('' when it cannot be read)."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(Path(__file__).resolve().parent.parent / "metadata.txt", encoding="utf-8")
        return parser.get("general", "homepage", fallback="") or parser.get("general", "repository", fallback="")
    except (configparser.Error, OSError, UnicodeDecodeError):
        return ""


def bundled_models_help(task: "TaskSpec") -> str:
    """An HTML paragraph listing the bundled models of ``task`` from their cards: training data,
    measured metrics, or that no weights are bundled yet. Reads JSON only (no torch)."""
    from ..core import modelfile

    items = []
    for name in task.bundled_models():
        card_file = Path(modelfile.BUNDLED_DIR) / f"{name}.json"
        if not card_file.is_file():
            items.append(f"<li><b>{name}</b>: no weights bundled in this build (use a model file, "
                         "or train and export one — see the README).</li>")
            continue
        try:
            card = modelfile.read_card(card_file)
        except Exception as exc:  # noqa: BLE001 - help must never fail
            items.append(f"<li><b>{name}</b>: card unreadable ({exc})</li>")
            continue
        data = card.training.get("data") or "see the model card"
        shown = ("psnr_db", "ssim", "iou", "f1", "pixel_accuracy", "threshold")
        metrics = ", ".join(f"{k} {card.metrics[k]:.3g}" for k in shown
                            if isinstance(card.metrics.get(k), (int, float)))
        held_out = card.metrics.get("held_out")
        where = f" ({held_out})" if isinstance(held_out, str) else ""
        labelled = card.metrics.get("hand_labelled", {}).get("sentinel2_north")
        if isinstance(labelled, dict):   # cloud models: the hand-labelled Sentinel-2 scene (README, Results)
            where = " (hand-labelled Sentinel-2 scene, beside 'all clear': cloud IoU 0)"
            metrics = ", ".join(f"{k.replace('_', ' ')} {labelled[k]:.3f}" for k in ("cloud_iou", "shadow_iou",
                                                                                   "three_class_accuracy")
                                if isinstance(labelled.get(k), (int, float)))
        items.append(f"<li><b>{name}</b>: trained on {html.escape(str(data))}"
                     + (f"; measured on held-out data{html.escape(where)}: {metrics}" if metrics else "")
                     + (f". {html.escape(card.notes)}" if card.notes else "") + "</li>")
    return ("<h3>Bundled models</h3><ul>" + "".join(items) + "</ul>"
            "<p>Each model's card (.json in the plugin's <i>models</i> folder) records its training data, "
            "normalisation and metrics.</p>")

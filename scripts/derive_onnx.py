#!/usr/bin/env python3
"""Derive the ONNX graphs of the project's own models from their committed safetensors weights.

    .venv/bin/python scripts/derive_onnx.py [--check] [--update-cards] [--models-dir DIR]

(``scripts/setup.sh`` runs it after the ukis import; it is idempotent.)

The graphs (``sar2eo_cloud_plugin/models/<stem>.onnx``, float32, 40-80 MB each) are not committed: they would
add their full size to the repository at every retraining. Each card carries the graph's ``onnx`` entry
(file, sha256, bytes); the export is byte-identical across processes (``core.onnxexport``), so a graph derived
here must match that entry, or it is refused and nothing is installed.

For every card in the models folder that has safetensors weights:
* its graph is present and matches the card's ``onnx`` entry: nothing to do (no torch is imported);
* the card has no ``onnx`` entry (a model exported before graphs existed): the graph is exported and the entry
  added to the card (commit the card);
* the graph is missing or differs: it is exported; a result that differs from the card's entry is an error
  (``--update-cards`` writes the new entry instead, e.g. after a deliberate torch upgrade).
Cards whose graph comes from elsewhere (``source.file`` is an ``.onnx``, e.g. the ukis-csmask models, which
``scripts/import_ukis_models.py`` installs from the pinned wheel) are left alone.
``--check`` only reports, exporting nothing; it exits 1 when something would change.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import List, Optional

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from sar2eo_cloud_plugin.core import modelfile  # noqa: E402  (QGIS-free; no torch at import time)
from sar2eo_cloud_plugin.core.errors import ModelFileError  # noqa: E402


def log(msg: str) -> None:
    print(f"[derive_onnx] {msg}", flush=True)


def derived_cards(models_dir: Path) -> List[Path]:
    """Cards whose graph this script derives: those with weights, whose graph is not imported from elsewhere."""
    cards = []
    for card_file in sorted(Path(models_dir).glob("*.json")):
        try:
            card = modelfile.read_card(card_file)
        except ModelFileError:
            continue          # not a model card (or a broken one, which the plugin reports when it is used)
        if not card.weights or str(card.source.get("file", "")).endswith(".onnx"):
            continue
        cards.append(card_file)
    return cards


def up_to_date(card_file: Path) -> bool:
    card = modelfile.read_card(card_file)
    if not card.onnx:
        return False
    try:
        modelfile.verify_onnx(card_file, card)
    except ModelFileError:
        return False
    return True


def run(models_dir: Path = modelfile.BUNDLED_DIR, check: bool = False, update_cards: bool = False) -> int:
    t0 = time.perf_counter()
    todo = [c for c in derived_cards(models_dir) if not up_to_date(c)]
    if not todo:
        log(f"ONNX graphs up to date in {models_dir} ({time.perf_counter() - t0:.2f} s)")
        return 0
    if check:
        log("would export: " + ", ".join(c.stem for c in todo))
        return 1
    import os

    import torch

    from sar2eo_cloud_plugin.core.onnxexport import export_card_onnx

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    for card_file in todo:
        t = time.perf_counter()
        had_entry = bool(modelfile.read_card(card_file).onnx)
        entry = export_card_onnx(card_file, update_card=update_cards or not had_entry)
        what = "card's onnx entry added (commit the card)" if not had_entry else "matches its card"
        log(f"{card_file.stem}: {entry['file']} {entry['bytes'] / 1e6:.1f} MB sha256 {entry['sha256'][:12]}… — {what} "
            f"({time.perf_counter() - t:.1f} s)")
    return 0


def main(argv: Optional[list] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models-dir", type=Path, default=modelfile.BUNDLED_DIR)
    ap.add_argument("--check", action="store_true", help="report what would be exported; exit 1 if anything")
    ap.add_argument("--update-cards", action="store_true", help="write a changed graph's entry into its card")
    args = ap.parse_args(argv)
    try:
        return run(args.models_dir, check=args.check, update_cards=args.update_cards)
    except ModelFileError as exc:
        print(f"[derive_onnx] ERROR: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())

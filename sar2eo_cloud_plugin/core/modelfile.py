"""Model files: a small JSON card beside safetensors weights, an ONNX graph, or both.

A model is files with one stem: ``<stem>.json`` (the card), ``<stem>.safetensors`` (the weights, for
the torch runtime) and/or ``<stem>.onnx`` (the same network as an ONNX graph, for ONNX Runtime; see
:mod:`.runtime`). The card says what the model is for and how to feed it; it also holds each file's
size and sha256 (``weights`` and ``onnx`` entries) so that a truncated or tampered file is refused
before a single byte of it is used. ``weights`` may be absent when ``onnx`` is present (a model shipped
as a graph only). Weights are read with safetensors only: nothing is ever unpickled; graphs are read
by onnxruntime.

Weights may be stored as float16 to keep the repository lean; they are converted
back to float32 when loaded.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

from .cardschema import CARD_FORMAT, TASKS, check_weight_shapes, validate_card
from .errors import CancelledError, ModelFileError, NoBundledWeightsError

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "models"

PathLike = Union[str, os.PathLike]


@dataclass
class ModelCard:
    """What a model is, how to feed it and how good it measured."""

    task: str                                   # "sar2eo" | "cloudmask"
    name: str                                   # stem of the files, e.g. "sar2eo_rgb"
    architecture: str                           # key of networks.ARCHITECTURES
    architecture_args: Dict[str, Any]
    input: Dict[str, Any]                       # bands, units
    normalisation: Dict[str, Any]               # ranges / mean-std used on both sides
    output: Dict[str, Any]                      # bands, scaling, dtype, threshold
    tiling: Dict[str, Any] = field(default_factory=lambda: {"tile_size": 256, "overlap": 32})
    training: Dict[str, Any] = field(default_factory=dict)   # data, epochs, command
    metrics: Dict[str, Any] = field(default_factory=dict)    # measured on held-out data
    weights: Dict[str, Any] = field(default_factory=dict)    # file, sha256, bytes, dtype ({} : no weights)
    onnx: Dict[str, Any] = field(default_factory=dict)       # file, sha256, bytes of the ONNX graph ({} : none)
    # Where weights made elsewhere came from: package, version, licence, citation (docs/model_cards.md).
    source: Dict[str, Any] = field(default_factory=dict)
    format: int = CARD_FORMAT
    notes: str = ""

    def to_json(self) -> str:
        data = asdict(self)
        if not data["onnx"]:        # cards without a graph stay as they were
            del data["onnx"]
        return json.dumps(data, indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: Dict[str, Any], source: str = "card") -> "ModelCard":
        validate_card(data, source)   # every field checked before anything is built from the card
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def sha256_of(path: PathLike, cancel: Optional[Callable[[], bool]] = None) -> str:
    """The file's sha256 (hex). ``cancel`` is asked between 1 MiB chunks (hashing a large
    download must stay cancellable); when it answers True, :class:`CancelledError` is raised."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            if cancel is not None and cancel():
                raise CancelledError(f"Checking {path} was cancelled.")
            digest.update(chunk)
    return digest.hexdigest()


def file_matches(path: PathLike, sha256: str, size: Optional[int] = None,
                 cancel: Optional[Callable[[], bool]] = None) -> bool:
    """Whether ``path`` is a file of ``size`` bytes (when given; checked first, it is free) whose
    sha256 is ``sha256``. The one "file matches its card / index entry" check."""
    p = Path(path)
    if not p.is_file():
        return False
    if size is not None and p.stat().st_size != int(size):
        return False
    return sha256_of(p, cancel) == sha256


def card_path_for(path: PathLike) -> Path:
    """Accept the card, the weights or the bare stem and return the card's path."""
    p = Path(path)
    if p.suffix in (".json", ".safetensors", ".onnx"):
        p = p.with_suffix("")
    return p.with_suffix(".json")


def read_card(path: PathLike, expected_task: Optional[str] = None) -> ModelCard:
    """Read and check a model card (not the weights)."""
    card_file = card_path_for(path)
    if not card_file.is_file():
        raise ModelFileError(f"Model card not found: {card_file}")
    try:
        data = json.loads(card_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"Model card {card_file} is not readable JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelFileError(f"Model card {card_file} is not a JSON object.")
    card = ModelCard.from_dict(data, str(card_file))
    if card.task not in TASKS:
        raise ModelFileError(f"Model card {card_file} is for unknown task '{card.task}'.")
    if expected_task is not None and card.task != expected_task:
        raise ModelFileError(f"Model file {card_file} is a '{card.task}' model, not a '{expected_task}' model.")
    return card


def _member_path(card_file: PathLike, entry: Dict[str, Any], default: str, what: str) -> Path:
    name = entry.get("file") or default
    if Path(name).name != name:
        raise ModelFileError(f"Model card {card_file}: {what} file name '{name}' must not contain a folder.")
    return Path(card_file).parent / name


def weights_path(card_file: PathLike, card: ModelCard) -> Path:
    return _member_path(card_file, card.weights, card.name + ".safetensors", "weights")


def onnx_path(card_file: PathLike, card: ModelCard) -> Path:
    return _member_path(card_file, card.onnx, card.name + ".onnx", "onnx")


def weights_present(card_file: PathLike, card: ModelCard) -> bool:
    """Whether the card names weights and that file exists (no hashing)."""
    return bool(card.weights) and weights_path(card_file, card).is_file()


def onnx_present(card_file: PathLike, card: ModelCard) -> bool:
    """Whether the card names an ONNX graph and that file exists (no hashing)."""
    return bool(card.onnx) and onnx_path(card_file, card).is_file()


def _verify_file(path: Path, entry: Dict[str, Any], card_file: PathLike, what: str, fix: str) -> Path:
    """``path`` exists and matches ``entry``'s bytes and sha256, or a :class:`ModelFileError` naming it."""
    if not path.is_file():   # (a model the plugin downloads: runtime.select_model_file said how to get it first)
        raise ModelFileError(f"{what} missing: {path} (named by {card_file}).")
    expected_size = entry.get("bytes")
    size = path.stat().st_size
    if expected_size is not None and size != int(expected_size):
        raise ModelFileError(f"{what} {path} is {size} bytes but its card says {expected_size}: the file is "
                             f"truncated or was replaced. {fix}")
    expected = entry.get("sha256")
    if not expected:
        raise ModelFileError(f"Model card {card_file} has no sha256 for its {what.lower()}; refusing to load it.")
    actual = sha256_of(path)
    if actual != expected:
        raise ModelFileError(f"{what} {path} does not match its card (sha256 {actual[:12]}… instead of "
                             f"{expected[:12]}…): it was modified or corrupted. Refusing to load it.")
    return path


def verify_weights(card_file: PathLike, card: ModelCard) -> Path:
    """Check the weights file exists and matches the card's size and sha256."""
    if not card.weights:
        raise ModelFileError(f"Model card {card_file} names no safetensors weights (it is a graph-only model: "
                             "run it with ONNX Runtime).")
    return _verify_file(weights_path(card_file, card), card.weights, card_file, "Weights file",
                        "Reinstall the plugin or re-export the model.")


def verify_onnx(card_file: PathLike, card: ModelCard) -> Path:
    """Check the ONNX graph exists and matches the card's size and sha256."""
    if not card.onnx:
        raise ModelFileError(f"Model card {card_file} names no ONNX graph.")
    return _verify_file(onnx_path(card_file, card), card.onnx, card_file, "ONNX graph",
                        "Run scripts/setup.sh (scripts/derive_onnx.py) or re-export the model.")


def load_model(path: PathLike, expected_task: Optional[str] = None, device: str = "cpu"):
    """Load a model file and return ``(network in eval mode, card)``.

    The network is float32 on ``device`` whatever the stored dtype.
    """
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .networks import build_network

    card_file = card_path_for(path)
    card = read_card(card_file, expected_task)
    wpath = verify_weights(card_file, card)
    # The weights' shapes (from the safetensors header) against the card's network, built on the
    # meta device: a card that does not describe these weights is refused before memory is allocated.
    check_weight_shapes(card_file, card.architecture, dict(card.architecture_args), wpath)
    try:
        state = load_file(str(wpath), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"Weights file {wpath} is not a readable safetensors file: {exc}") from exc
    try:
        net = build_network(card.architecture, dict(card.architecture_args))
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"Model card {card_file}: cannot build '{card.architecture}' with "
                             f"{card.architecture_args}: {exc}") from exc
    state = {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in state.items()}
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(f"Weights in {wpath} do not fit the architecture in its card: "
                             f"{str(exc).splitlines()[0]}") from exc
    net.eval().to(device)
    return net, card


def safetensors_bytes(tensors: Dict[str, Any], metadata: Dict[str, str]) -> bytes:
    """A safetensors file as bytes, identical for identical tensors and metadata in every process.

    safetensors keeps ``__metadata__`` in a Rust HashMap, so its key order (and the file's sha256) changes from one
    process to the next; the header is rewritten here with the metadata keys sorted. Tensor entries and data stay
    as safetensors wrote them (data offsets are relative to the end of the header, so they stay valid)."""
    import struct

    from safetensors.torch import save

    raw = save(tensors, metadata=metadata)
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the format pads the header to a multiple of 8 bytes with spaces
    return struct.pack("<Q", len(text)) + text + raw[8 + n:]


def save_model(net, card: ModelCard, out_dir: PathLike, dtype: str = "float16") -> Path:
    """Write ``<out_dir>/<card.name>.safetensors`` and ``.json``; returns the card path.

    Files are written under temporary names and renamed when complete, so a
    crash never leaves a card that names half-written weights.
    """
    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch_dtype = {"float16": torch.float16, "float32": torch.float32}[dtype]
    state = {k: (v.detach().to("cpu", torch_dtype) if v.is_floating_point() else v.detach().cpu()).contiguous()
             for k, v in net.state_dict().items()}
    wname = card.name + ".safetensors"
    wtmp = out / (wname + ".tmp")
    wtmp.write_bytes(safetensors_bytes(state, {"task": card.task, "name": card.name}))
    card.weights = {"file": wname, "sha256": sha256_of(wtmp), "bytes": wtmp.stat().st_size, "dtype": dtype}
    ctmp = out / (card.name + ".json.tmp")
    ctmp.write_text(card.to_json(), encoding="utf-8")
    os.replace(wtmp, out / wname)
    os.replace(ctmp, out / (card.name + ".json"))
    return out / (card.name + ".json")


def set_card_entry(card_file: PathLike, key: str, entry: Dict[str, Any]) -> None:
    """Set one top-level entry of a card file (e.g. its ``onnx`` entry), keeping every other byte of the JSON as
    it was written (key order, fields this version does not know), placed after ``weights`` when new; the card
    is validated before it replaces the old one, atomically."""
    path = card_path_for(card_file)
    data = json.loads(path.read_text(encoding="utf-8"))
    if key in data:
        data[key] = entry
    else:
        items = list(data.items())
        at = next((i + 1 for i, (k, _v) in enumerate(items) if k == "weights"), len(items))
        data = dict(items[:at] + [(key, entry)] + items[at:])
    validate_card(data, str(path))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def bundled_model_path(name: str, label: Optional[str] = None, models_dir: Optional[PathLike] = None) -> Path:
    """Path of a model's card, from the model store (downloaded models) or the plugin's bundled folder
    (``modelstore.find_card``); raises :class:`NoBundledWeightsError` if there is none (never fall back to
    untrained weights). ``BUNDLED_DIR`` is looked up at call time so tests and packagers can point it
    elsewhere; ``models_dir`` searches that folder only."""
    if models_dir is None:
        from . import modelstore

        found = modelstore.find_card(name)   # the model store (downloads), then BUNDLED_DIR
        if found is not None:
            return found
    card = Path(models_dir if models_dir is not None else BUNDLED_DIR) / f"{name}.json"
    if not card.is_file():
        what = label or name
        raise NoBundledWeightsError(f"No weights bundled for {what}: {card} is not part of this plugin build. "
                                    "Train and export them with the training package "
                                    "(see README, 'Retraining')"
                                    + (", or choose another band set." if name.startswith("sar2eo_") else "."))
    return card

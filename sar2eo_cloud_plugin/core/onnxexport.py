"""Export a model's network as an ONNX graph beside its card (needs torch; the plugin never runs this).

Used by ``scripts/derive_onnx.py`` (set-up: the project's graphs are derived from the committed safetensors
weights, not committed themselves) and meant for ``training export`` (which writes the weights and then calls
:func:`export_card_onnx` so a freshly trained model carries its graph). The graph holds the bare network
(logits; the activation is applied by :mod:`.runtime`), float32, with dynamic batch, height and width.

The export must give the same bytes in every process, or a card's ``onnx.sha256`` would not match a graph
derived elsewhere: the TorchScript exporter is used (deterministic node and initializer names for one torch
version), constant folding on, a fixed opset and a fixed dummy input; ``tests/core/test_onnx_export.py``
exports in two processes and compares the bytes.

BatchNorm stays a node of its own (``TrainingMode.PRESERVE`` on a network in eval mode; ONNX Runtime's graph
optimisations fuse it into the convolution when a session is made). Fusing it at export (``TrainingMode.EVAL``)
computes the fused weights with MKL / oneDNN kernels chosen for the CPU at hand, so the same weights gave graphs
one ULP apart, and a different sha256, on an AVX2 and an AVX-512 machine; the cloud U-Net's card then refused
the graph derived at set-up. The test runs the export with the CPU dispatch narrowed and compares the bytes.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Union

from .errors import ModelFileError

PathLike = Union[str, "os.PathLike[str]"]

OPSET = 17
INPUT_NAME, OUTPUT_NAME = "input", "logits"
DUMMY_SIZE = 64          # spatial size of the tracing input (a multiple of the U-Net's 32)


def graph_bytes(net: Any, in_channels: int) -> bytes:
    """The ONNX serialisation of ``net`` (float32, eval mode, on the CPU), deterministic for one torch."""
    import torch

    net = net.to("cpu", torch.float32).eval()
    # channels_last weights would be traced as extra Transpose nodes: export from contiguous weights.
    net = net.to(memory_format=torch.contiguous_format)
    dummy = torch.zeros(1, in_channels, DUMMY_SIZE, DUMMY_SIZE, dtype=torch.float32)
    buf = io.BytesIO()
    axes = {0: "batch", 2: "height", 3: "width"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")      # TracerWarnings about Python ints in shapes: harmless here
        torch.onnx.export(net, (dummy,), buf, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes}, opset_version=OPSET,
                          do_constant_folding=True, training=torch.onnx.TrainingMode.PRESERVE, dynamo=False)
    return buf.getvalue()


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def export_card_onnx(card_path: PathLike, net: Optional[Any] = None, update_card: bool = True) -> Dict[str, Any]:
    """Write ``<stem>.onnx`` beside the card at ``card_path`` and return its ``onnx`` entry
    {file, sha256, bytes}.

    ``net``: the network (default: loaded from the card's weights, sha256-checked). With ``update_card``
    the card's ``onnx`` entry is set (rewritten atomically); without, a card whose entry differs from the
    fresh graph is a :class:`ModelFileError` and nothing is written (the graph the card names cannot be
    derived here: another torch version?)."""
    import hashlib

    from . import modelfile
    from .runtime import channels_of

    card_file = modelfile.card_path_for(card_path)
    card = modelfile.read_card(card_file)
    if net is None:
        net, card = modelfile.load_model(card_file, card.task, "cpu")
    data = graph_bytes(net, channels_of(card)[0])
    entry: Dict[str, Any] = {"file": f"{card.name}.onnx", "sha256": hashlib.sha256(data).hexdigest(),
                             "bytes": len(data)}
    if card.onnx and dict(card.onnx) != entry and not update_card:
        raise ModelFileError(f"{card_file} names ONNX graph sha256 {card.onnx.get('sha256', '')[:12]}… "
                             f"({card.onnx.get('bytes')} bytes) but exporting its weights here gives "
                             f"{entry['sha256'][:12]}… ({entry['bytes']} bytes): this torch does not reproduce the "
                             "graph the card was made with. Nothing was written.")
    write_atomic(card_file.parent / str(entry["file"]), data)
    if update_card and dict(card.onnx) != entry:
        modelfile.set_card_entry(card_file, "onnx", entry)
    return entry

"""The ukis-csmask wheel's float16 ONNX graphs made float32: the ONE definition of that conversion.

Used by ``scripts/import_ukis_models.py`` (set-up: the cards' ``onnx`` entries are the sha256 of its output)
and by :mod:`.modelstore` (a model installed from the PyPI wheel: extract the member, widen it here, then
check the result against the card's ``onnx`` sha256 before it is put in place). Both must give the same bytes,
so they call the same function; the widening is deterministic (same bytes in every process, tested in
``tests/dist/test_ukis_wheel.py``) for a given ``onnx`` version, hence the pin below.

The ``onnx`` package is imported only inside :func:`widen_graph`: the plugin runs without it, and only
installing a ukis model from the wheel needs it (the dock's dependency installer offers it as an extra).
"""
from __future__ import annotations

import importlib.util

from .errors import ModelFileError

# The onnx version the cards' widened-graph sha256 were made with (requirements.txt pins the same; deps.py's
# REQUIREMENTS["onnx"] and so the dock's installer use this string).
ONNX_PIP = "onnx==1.23.2"
# The index's name for this conversion (model_index.json: a file's archive ``transform``).
TRANSFORM = "ukis_float16_to_float32"


def onnx_available() -> bool:
    """Whether the ``onnx`` package can be imported (looked up, not imported)."""
    try:
        return importlib.util.find_spec("onnx") is not None
    except (ImportError, ValueError):
        return False


def onnx_missing_message(what: str) -> str:
    """What a user is told when ``what`` needs the wheel's graph widened and ``onnx`` is not installed."""
    return (f"{what} needs the Python package 'onnx' to convert the ukis-csmask wheel's float16 graph to float32, "
            f"and it is not installed. Install it with the dock's 'Install dependencies…' (tick 'Also install "
            f"onnx'), or by hand: pip install {ONNX_PIP}.")


def widen_graph(onnx_bytes: bytes) -> bytes:
    """The wheel's float16 graph as a float32 graph, serialised (deterministic: same bytes in every process).

    Every float16 initializer and Constant becomes float32 (exact: float16 values are float32 values), every
    ``Cast(to=float16)`` becomes ``Cast(to=float32)`` (so the casts at the graph's edges and around Resize are
    no-ops), the stale value_info (float16 types) is dropped for onnxruntime to infer again, and the input's and
    output's height and width become dynamic (the wheel fixes them at 256; the plugin runs 512 tiles).
    Raises :class:`ModelFileError` for a graph that is not one input -> one NCHW output."""
    import numpy as np
    import onnx
    from onnx import TensorProto, numpy_helper

    model = onnx.load_model_from_string(onnx_bytes)
    graph = model.graph
    f16, f32 = TensorProto.FLOAT16, TensorProto.FLOAT
    for i, init in enumerate(graph.initializer):
        if init.data_type == f16:
            graph.initializer[i].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float32),
                                                                  init.name))
    for node in graph.node:
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == f16:
                attr.i = f32
            elif attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == f16:
                attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float32), attr.t.name))
    del graph.value_info[:]
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise ModelFileError(f"expected one input and one output, found {len(graph.input)} / {len(graph.output)}")
    for value in (graph.input[0], graph.output[0]):
        dims = value.type.tensor_type.shape.dim
        if len(dims) != 4:
            raise ModelFileError(f"{value.name}: expected NCHW, found {len(dims)} dimensions")
        for dim, name in ((dims[0], "batch"), (dims[2], "height"), (dims[3], "width")):
            dim.Clear()
            dim.dim_param = name
    onnx.checker.check_model(model)
    return model.SerializeToString()

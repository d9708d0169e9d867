"""The model-card schema: every card is checked here before anything is built from it (no QGIS, no torch).

A card drives ``networks.build_network(**architecture_args)``, the normalisation and the output
conversion, so a hostile or broken card must be refused with one clear :class:`ModelFileError`
naming the field before it can make smp contact a model hub (``encoder_weights``), allocate
gigabytes (a huge ``ngf``), raise a traceback (a wrong value type) or produce all-nodata output
reported as success (a degenerate range). The weights' tensor shapes are checked against the
network the card describes by :func:`check_weight_shapes`, from the safetensors header, before
the real network is built.

Cards of both tasks are covered, including the cloud-mask fields of docs/model_cards.md, and the
legacy cloud card (no ``normalisation.method``: the seed's ``clip_dn``/``mean``/``std`` form).
"""
from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

from .errors import ModelFileError
from .tasks import CARD_TASKS, TASKS as TASK_SPECS

CARD_FORMAT = 1
TASKS = CARD_TASKS
ARCHITECTURES_BY_TASK = {t.card_task: t.architectures for t in TASK_SPECS}
SMP_ENCODERS = tuple(f"efficientnet-b{i}" for i in range(8)) + ("resnet18", "resnet34", "resnet50")
S2_BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")
S1_BANDS = ("VV", "VH")
SAR_UNITS = ("dB", "linear")
CLOUD_UNITS = ("reflectance", "dn")
CLOUD_LEVELS = ("L1C", "L2A", "any")
CLOUD_METHODS = ("mean_std", "clip_mean_std")
WEIGHT_DTYPES = ("float16", "float32", "bfloat16")
# Bounds that keep a card from asking for absurd networks (the bundled ones use ngf 64, 9 blocks).
BOUNDS = {"ngf": (1, 128), "n_blocks": (1, 24), "output_nc": (1, 16), "in_channels": (1, 32), "classes": (1, 16),
          "tile_size": (16, 4096), "batch_size": (1, 256), "scale": (1, 8)}
MAX_PARAMETERS = 200_000_000          # checked on the described network's shapes, before it is built
MAX_HEADER_BYTES = 64 * 1024 * 1024

ARGS = {
    "resnet_generator": {"input_nc", "output_nc", "ngf", "n_blocks", "use_dropout"},
    "unet": {"encoder_name", "in_channels", "classes", "encoder_weights"},
}


class _Checker:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, field: str, problem: str) -> None:
        raise ModelFileError(f"Model card {self.source}: field '{field}' {problem}.")

    def dict(self, data: Mapping, field: str, required: bool = True) -> Dict[str, Any]:
        value = _get(data, field)
        if value is _MISSING:
            if required:
                self.fail(field, "is missing")
            return {}
        if not isinstance(value, dict):
            self.fail(field, f"must be an object, not {_type(value)}")
        return value

    def str(self, value: Any, field: str, choices: Optional[Iterable[str]] = None) -> str:
        if not isinstance(value, str) or not value:
            self.fail(field, f"must be a non-empty text, not {_type(value)}")
        if choices is not None and value not in tuple(choices):
            self.fail(field, f"is '{value}'; allowed: {', '.join(choices)}")
        return value

    def int(self, value: Any, field: str, lo: int, hi: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(field, f"must be an integer, not {_type(value)}")
        if not lo <= value <= hi:
            self.fail(field, f"is {value}; it must be between {lo} and {hi}")
        return value

    def num(self, value: Any, field: str, lo: float = -math.inf, hi: float = math.inf,
            open_lo: bool = False, open_hi: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.fail(field, f"must be a finite number, not {_type(value)}")
        if value < lo or value > hi or (open_lo and value == lo) or (open_hi and value == hi):
            lo_s = f"{'>' if open_lo else '>='} {lo:g}" if lo != -math.inf else ""
            hi_s = f"{'<' if open_hi else '<='} {hi:g}" if hi != math.inf else ""
            self.fail(field, f"is {value:g}; it must be {' and '.join(s for s in (lo_s, hi_s) if s)}")
        return float(value)

    def range(self, value: Any, field: str) -> None:
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            self.fail(field, f"must be a [low, high] pair, not {_type(value)}")
        lo = self.num(value[0], f"{field}[0]")
        hi = self.num(value[1], f"{field}[1]")
        if not lo < hi:
            self.fail(field, f"is [{lo:g}, {hi:g}]: low must be below high (an empty range maps everything "
                             "to one value)")

    def bands(self, value: Any, field: str, names: Sequence[str]) -> List[str]:
        if not isinstance(value, list) or not value:
            self.fail(field, f"must be a non-empty list of band names, not {_type(value)}")
        for i, b in enumerate(value):
            if not isinstance(b, str) or b not in names:
                self.fail(f"{field}[{i}]", f"is {b!r}; band names are {', '.join(names)}")
        if len(set(value)) != len(value):
            self.fail(field, f"names a band twice ({value})")
        return list(value)

    def per_band(self, value: Any, field: str, n: int, positive: bool = False) -> None:
        if not isinstance(value, list) or len(value) != n:
            self.fail(field, f"must be a list of {n} numbers (one per input band), not {_type(value)}"
                             + (f" of length {len(value)}" if isinstance(value, list) else ""))
        for i, v in enumerate(value):
            self.num(v, f"{field}[{i}]", lo=0.0 if positive else -math.inf, open_lo=positive)


class _Missing:
    pass


_MISSING = _Missing()


def _get(data: Mapping, dotted: str) -> Any:
    value: Any = data
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _type(value: Any) -> str:
    if isinstance(value, (list, tuple, dict)):
        return type(value).__name__
    return f"{type(value).__name__} {value!r}"[:80]


def validate_card(data: Any, source: str = "card") -> None:
    """Raise :class:`ModelFileError` naming the first field of ``data`` (a parsed card) that is wrong."""
    c = _Checker(source)
    if not isinstance(data, dict):
        raise ModelFileError(f"Model card {source} is not a JSON object.")
    fmt = data.get("format", CARD_FORMAT)
    if fmt != CARD_FORMAT or isinstance(fmt, bool):
        raise ModelFileError(f"Model card {source} has format {fmt!r}; this plugin reads format {CARD_FORMAT}. "
                             "Update the plugin.")
    required = ("task", "name", "architecture", "architecture_args", "input", "normalisation", "output")
    missing = [k for k in required if k not in data]
    if not data.get("weights") and not data.get("onnx"):
        missing.append("weights (or onnx)")
    if missing:
        raise ModelFileError(f"Model card {source} lacks {', '.join(missing)}.")
    task = c.str(data["task"], "task")
    if task not in TASKS:
        raise ModelFileError(f"Model card {source} is for unknown task '{task}' (field 'task'; known: "
                             f"{', '.join(TASKS)}).")
    name = c.str(data["name"], "name")
    if Path(name).name != name or name.startswith("."):
        c.fail("name", f"is '{name}'; it must be a plain file stem")
    arch = c.str(data["architecture"], "architecture", ARCHITECTURES_BY_TASK[task])
    args = c.dict(data, "architecture_args")
    unknown = sorted(set(args) - ARGS[arch])
    if unknown:
        c.fail(f"architecture_args.{unknown[0]}", f"is not an argument of '{arch}' (allowed: "
                                                  f"{', '.join(sorted(ARGS[arch]))})")
    inp = c.dict(data, "input")
    nrm = c.dict(data, "normalisation")
    out = c.dict(data, "output")
    if task == "sar2eo":
        _validate_sar2eo(c, args, inp, nrm, out)
    else:
        _validate_cloudmask(c, args, inp, nrm, out)
    tiling = c.dict(data, "tiling", required=False)
    if tiling:
        ts = c.int(tiling["tile_size"], "tiling.tile_size", *BOUNDS["tile_size"]) if "tile_size" in tiling else 256
        if "overlap" in tiling:
            c.int(tiling["overlap"], "tiling.overlap", 0, ts // 2)
        if "batch_size" in tiling:
            c.int(tiling["batch_size"], "tiling.batch_size", *BOUNDS["batch_size"])
        if "scale" in tiling:
            c.int(tiling["scale"], "tiling.scale", *BOUNDS["scale"])
    for entry in ("weights", "onnx"):
        _validate_file_entry(c, data, entry)
    for key in ("training", "metrics", "source"):
        c.dict(data, key, required=False)
    if "notes" in data and not isinstance(data["notes"], str):
        c.fail("notes", f"must be text, not {_type(data['notes'])}")


def _validate_file_entry(c: _Checker, data: Mapping, entry: str) -> None:
    """``weights`` / ``onnx``: {file, sha256, bytes[, dtype]}; either may be absent, not both (checked above)."""
    files = c.dict(data, entry, required=False)
    if "file" in files:
        name = c.str(files["file"], f"{entry}.file")
        if Path(name).name != name:
            c.fail(f"{entry}.file", f"is '{name}'; it must not contain a folder")
        if entry == "onnx" and not name.endswith(".onnx"):
            c.fail("onnx.file", f"is '{name}'; it must end with .onnx")
    sha = files.get("sha256")
    if sha is not None and (not isinstance(sha, str) or len(sha) != 64
                            or any(ch not in "0123456789abcdef" for ch in sha.lower())):
        c.fail(f"{entry}.sha256", f"must be 64 hexadecimal digits, not {_type(sha)}")
    if "bytes" in files and files["bytes"] is not None:
        c.int(files["bytes"], f"{entry}.bytes", 0, 1 << 40)
    if "dtype" in files:
        c.str(files["dtype"], f"{entry}.dtype", WEIGHT_DTYPES)


def _validate_sar2eo(c: _Checker, args, inp, nrm, out) -> None:
    for key in ("input_nc", "output_nc"):
        if key not in args:
            c.fail(f"architecture_args.{key}", "is missing")
    c.int(args["input_nc"], "architecture_args.input_nc", 2, 2)
    n_out = c.int(args["output_nc"], "architecture_args.output_nc", *BOUNDS["output_nc"])
    if "ngf" in args:
        c.int(args["ngf"], "architecture_args.ngf", *BOUNDS["ngf"])
    if "n_blocks" in args:
        c.int(args["n_blocks"], "architecture_args.n_blocks", *BOUNDS["n_blocks"])
    if "use_dropout" in args and not isinstance(args["use_dropout"], bool):
        c.fail("architecture_args.use_dropout", f"must be true or false, not {_type(args['use_dropout'])}")
    if "bands" in inp and list(c.bands(inp["bands"], "input.bands", S1_BANDS)) != list(S1_BANDS):
        c.fail("input.bands", f"is {inp['bands']}; the translation network reads {list(S1_BANDS)} in that order")
    if "units" in inp:
        c.str(inp["units"], "input.units", SAR_UNITS)
    if "sar_db_ranges" in nrm:
        ranges = nrm["sar_db_ranges"]
        if not isinstance(ranges, dict):
            c.fail("normalisation.sar_db_ranges", f"must be an object, not {_type(ranges)}")
        for pol in S1_BANDS:
            if pol not in ranges:
                c.fail(f"normalisation.sar_db_ranges.{pol}", "is missing")
            c.range(ranges[pol], f"normalisation.sar_db_ranges.{pol}")
    if "optical_range" in nrm:
        c.range(nrm["optical_range"], "normalisation.optical_range")
    if "bands" not in out:
        c.fail("output.bands", "is missing")
    bands = c.bands(out["bands"], "output.bands", S2_BANDS)
    if len(bands) != n_out:
        c.fail("output.bands", f"names {len(bands)} band(s) but architecture_args.output_nc is {n_out}")
    if "activation" in out:
        c.str(out["activation"], "output.activation", ("tanh",))


def _validate_cloudmask(c: _Checker, args, inp, nrm, out) -> None:
    for key in ("encoder_name", "in_channels", "classes"):
        if key not in args:
            c.fail(f"architecture_args.{key}", "is missing")
    c.str(args["encoder_name"], "architecture_args.encoder_name", SMP_ENCODERS)
    n_in = c.int(args["in_channels"], "architecture_args.in_channels", *BOUNDS["in_channels"])
    n_cls = c.int(args["classes"], "architecture_args.classes", *BOUNDS["classes"])
    if args.get("encoder_weights", None) is not None:
        c.fail("architecture_args.encoder_weights", f"is {args['encoder_weights']!r}; it must be absent or null "
               "(the weights file holds every weight; nothing is ever downloaded)")
    if "bands" not in inp:
        c.fail("input.bands", "is missing")
    bands = c.bands(inp["bands"], "input.bands", S2_BANDS)
    if len(bands) != n_in:
        c.fail("input.bands", f"names {len(bands)} band(s) but architecture_args.in_channels is {n_in}")
    legacy = "method" not in nrm
    if legacy:
        # The seed's card: DN clipped at clip_dn, scaled to 0..scale_to, then ImageNet mean/std.
        if "units" in inp and not isinstance(inp["units"], str):
            c.fail("input.units", f"must be text, not {_type(inp['units'])}")
        c.num(nrm.get("clip_dn", 4000.0), "normalisation.clip_dn", lo=0.0, open_lo=True)
        if "scale_to" in nrm:
            c.num(nrm["scale_to"], "normalisation.scale_to", lo=0.0, open_lo=True)
        for key in ("mean", "std"):
            if key in nrm:
                c.per_band(nrm[key], f"normalisation.{key}", n_in, positive=(key == "std"))
    else:
        if "units" not in inp:
            c.fail("input.units", "is missing")
        c.str(inp["units"], "input.units", CLOUD_UNITS)
        method = c.str(nrm["method"], "normalisation.method", CLOUD_METHODS)
        for key in ("mean", "std") + (("clip",) if method == "clip_mean_std" else ()):
            if key not in nrm:
                c.fail(f"normalisation.{key}", "is missing")
            c.per_band(nrm[key], f"normalisation.{key}", n_in, positive=(key in ("std", "clip")))
    if "level" in inp:
        c.str(inp["level"], "input.level", CLOUD_LEVELS)
    if inp.get("resolution_m") is not None:
        c.num(inp["resolution_m"], "input.resolution_m", 1.0, 1000.0)
    activation = c.str(out.get("activation", "sigmoid"), "output.activation", ("sigmoid", "softmax"))
    if activation == "sigmoid" and n_cls != 1:
        c.fail("architecture_args.classes", f"is {n_cls}; a sigmoid model has 1 output channel")
    if activation == "softmax" and n_cls < 2:
        c.fail("architecture_args.classes", f"is {n_cls}; a softmax model needs at least 2 classes")
    classes = out.get("classes")
    if isinstance(classes, list):
        values = []
        for i, item in enumerate(classes):
            if not isinstance(item, dict) or "value" not in item or "name" not in item:
                c.fail(f"output.classes[{i}]", "must be {\"value\": <0..254>, \"name\": <text>}")
            values.append(c.int(item["value"], f"output.classes[{i}].value", 0, 254))
            c.str(item["name"], f"output.classes[{i}].name")
        if len(set(values)) != len(values):
            c.fail("output.classes", f"gives a value twice ({values})")
        if activation == "softmax" and len(classes) != n_cls:
            c.fail("output.classes", f"lists {len(classes)} class(es) but architecture_args.classes is {n_cls}")
    elif classes is not None and not isinstance(classes, dict):
        c.fail("output.classes", f"must be a list of classes, not {_type(classes)}")
    if "threshold" in out:
        c.num(out["threshold"], "output.threshold", 0.0, 1.0, open_lo=True, open_hi=True)


# --------------------------------------------------------------------------- weights vs card
def safetensors_shapes(path) -> Dict[str, tuple]:
    """Tensor name -> shape from a safetensors file's header (8-byte length + JSON; no tensor is read)."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) != 8:
            raise ModelFileError(f"Weights file {path} is too short to be a safetensors file.")
        (n,) = struct.unpack("<Q", head)
        if n > min(MAX_HEADER_BYTES, size - 8):
            raise ModelFileError(f"Weights file {path} is not a readable safetensors file (header length {n}).")
        try:
            header = json.loads(fh.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelFileError(f"Weights file {path} has an unreadable safetensors header: {exc}") from exc
    if not isinstance(header, dict):
        raise ModelFileError(f"Weights file {path} has an unreadable safetensors header.")
    shapes = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        if not isinstance(info, dict) or not isinstance(info.get("shape"), list):
            raise ModelFileError(f"Weights file {path}: tensor '{key}' has no shape in the header.")
        shapes[key] = tuple(int(v) for v in info["shape"])
    return shapes


def expected_shapes(architecture: str, args: Dict[str, Any]) -> Dict[str, tuple]:
    """Tensor name -> shape of the network a (validated) card describes, built on torch's ``meta``
    device: no memory is allocated for the weights and nothing is downloaded."""
    import torch

    from .networks import build_network

    with torch.device("meta"):
        net = build_network(architecture, dict(args))
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def check_weight_shapes(card_file, architecture: str, args: Dict[str, Any], weights_file) -> None:
    """Raise :class:`ModelFileError` when the weights do not fit the network the card describes."""
    got = safetensors_shapes(weights_file)
    want = expected_shapes(architecture, args)
    n_params = sum(math.prod(s) for s in want.values())
    if n_params > MAX_PARAMETERS:
        raise ModelFileError(f"Model card {card_file}: '{architecture}' with {args} has {n_params:,} parameters, "
                             f"more than the {MAX_PARAMETERS:,} this plugin accepts.")
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    if missing or extra:
        what = (f"lacks {len(missing)} tensor(s) the card's network needs (e.g. '{missing[0]}')" if missing
                else f"holds {len(extra)} tensor(s) the card's network does not have (e.g. '{extra[0]}')")
        raise ModelFileError(f"Weights in {weights_file} do not fit the architecture in {card_file}: the file {what}.")
    for key in sorted(want):
        if tuple(got[key]) != tuple(want[key]):
            raise ModelFileError(f"Weights in {weights_file} do not fit the architecture in {card_file}: tensor "
                                 f"'{key}' has shape {list(got[key])}, the card's network needs {list(want[key])} "
                                 "(check architecture_args).")

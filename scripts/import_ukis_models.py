#!/usr/bin/env python3
"""Import the four pretrained ukis-csmask cloud / cloud-shadow U-Nets as plugin model files.

    .venv/bin/python scripts/import_ukis_models.py [--force] [--cache-dir DIR]

(``scripts/setup.sh`` runs it after the pip step; it is idempotent.)

Source: PyPI ``ukis-csmask==1.0.0`` (German Aerospace Center (DLR), Apache-2.0), pinned by the wheel's sha256
below. The wheel ships ``ukis_csmask/model_{4b,6b}_{l1c,l2a}.onnx``: segmentation-models-pytorch
``Unet(encoder_name="efficientnet-b4", in_channels=4|6, classes=3)`` exported by torch.onnx and then converted
to float16 (``onnxconverter-common`` style: every initializer is float16, the graph computes in float16 and
casts its float32 input / output at the edges). Beside each ``.onnx`` a ``.json`` holds the per-band mean / std
(``data.dataset_statistics.img``), the band names and the model version.

What this script does, for each model ``ukis_csmask_<4b|6b>_<l1c|l2a>``:

1. the wheel: ``<python> -m pip download --no-deps ukis-csmask==1.0.0 -d data-cache/ukis-csmask`` (only when the
   cached wheel is missing; ``data-cache/`` is git-ignored and survives ``make clean``); its sha256 must equal
   ``WHEEL_SHA256`` or nothing is written;
2. the ONNX graph's initializers -> numpy (read from the wheel in memory, with the ``onnx`` package; the plugin
   itself never imports onnx). The mapping to smp state-dict keys is found, not assumed: the exporter's prefix
   (``model.``) is stripped; folded BatchNorm or renamed (``onnx::Conv_123``) weights are refused with the names;
3. the key check (``map_to_state_dict``): every key of a freshly built smp network must come from the ONNX with
   the same shape, except the keys under ``encoder._conv_head.`` and ``encoder._bn1.`` (EfficientNet's
   classification head, which smp's U-Net never runs, so torch.onnx drops it) and BatchNorm's integer
   ``num_batches_tracked`` step counters (a training-only buffer torch.onnx never exports). Those are filled from
   the fresh network's defaults (BN: weight 1, bias 0, mean 0, var 1, counter 0; the head's randomly initialised
   conv weight is zero-filled so the conversion is deterministic). Anything else missing, extra or mis-shaped is
   an error naming the key;
4. float16 storage iff it is lossless: every ONNX initializer is already float16 (and the filled defaults are
   exact in float16), so the float16 file holds bit-for-bit the ukis weights and behaves exactly like a float32
   one; should a future wheel carry float32 values that float16 cannot hold exactly, float32 is stored instead;
5. ``sar2eo_cloud_plugin/models/<stem>.safetensors`` (generated, git-ignored) via ``modelfile.save_model``, whose
   header keeps its metadata entries in sorted order (safetensors writes them in a per-process random order, which
   would make the sha256 random: ``modelfile.safetensors_bytes``), and ``<stem>.json`` (the card, committed;
   docs/model_cards.md). When the card already exists it is KEPT (later steps
   add measured metrics to it) and the fresh weights must match its sha256 and byte count, or this script fails
   loudly and installs nothing;
6. ``sar2eo_cloud_plugin/models/<stem>.onnx`` (generated, git-ignored), the wheel's graph widened to float32
   (``core/ukis.widen_graph``, which the plugin's model store runs too: float16 initializers and constants to
   float32, casts to float16 made casts to float32, height and width made dynamic, as ONNX Runtime runs it
   beside the torch network of the same weights); its size and sha256 are the card's ``onnx`` entry (added to a
   committed card that lacks it, else it must match);
7. ``models/LICENSE-ukis-csmask-Apache-2.0.txt`` (the wheel's licence text) and ``models/NOTICE-ukis-csmask.txt``
   (what was taken, from where, how it was converted, copyright, citation): committed attribution files.

Fast path: when every card, its weights and graph (size + sha256 as the card says) and the two text files are in place,
nothing else happens: no pip, no torch, no onnx (a second set-up run takes well under 2 s for this step).
``--force`` regenerates and re-verifies everything (still keeping existing cards).

Parity of the conversion against onnxruntime on real patches: tests/core/test_ukis_import.py.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from sar2eo_cloud_plugin.core import modelfile, onnxexport, ukis  # noqa: E402  (QGIS-free; no torch/onnx at import time)
from sar2eo_cloud_plugin.core.errors import ModelFileError  # noqa: E402

PACKAGE = "ukis-csmask"
VERSION = "1.0.0"
WHEEL_NAME = "ukis_csmask-1.0.0-py3-none-any.whl"
WHEEL_SHA256 = "898d6efe59b3908ec92aabad3f61a56394ff81d997a2ebe5675732503a18d1f1"
HOMEPAGE = "https://github.com/dlr-eoc/ukis-csmask"
PYPI_URL = "https://pypi.org/project/ukis-csmask/1.0.0/"
DEFAULT_CACHE = REPO / "data-cache" / "ukis-csmask"
MODELS_DIR = modelfile.BUNDLED_DIR
LICENSE_NAME = "LICENSE-ukis-csmask-Apache-2.0.txt"
NOTICE_NAME = "NOTICE-ukis-csmask.txt"
WHEEL_LICENSE = "ukis_csmask-1.0.0.dist-info/licenses/LICENSE"

ENCODER = "efficientnet-b4"
N_CLASSES = 3
# ukis band names (the .json's data.dataset_statistics.band_names) -> Sentinel-2 band names, in network order.
UKIS_TO_S2 = {"blue": "B2", "green": "B3", "red": "B4", "nir": "B8", "swir16": "B11", "swir22": "B12"}
BANDS = {"4b": ["B2", "B3", "B4", "B8"], "6b": ["B2", "B3", "B4", "B8", "B11", "B12"]}
VARIANTS = tuple(f"{b}_{lvl}" for b in ("4b", "6b") for lvl in ("l1c", "l2a"))  # 4b_l1c, 4b_l2a, 6b_l1c, 6b_l2a

# smp state-dict keys the ONNX may lack (see the module docstring): only these.
ALLOWED_MISSING_PREFIXES = ("encoder._conv_head.", "encoder._bn1.")
ALLOWED_MISSING_SUFFIX = ".num_batches_tracked"

CITATION = ("Wieland, M., Li, Y., Martinis, S. (2019): Multi-sensor cloud and cloud shadow segmentation with a "
            "convolutional neural network. Remote Sensing of Environment 230, 111203. "
            "https://doi.org/10.1016/j.rse.2019.05.022")
TRAINING_DATA = ("ukis-csmask v1.0.0 models: trained by DLR on SPARCS (USGS Spatial Procedures for Automated "
                 "Removal of Cloud and Shadow validation data, Landsat 8), CloudSEN12+ (Sentinel-2) and some "
                 "additional custom samples; both datasets natively provide L1C only, so DLR compiled a "
                 "corresponding L2A image for each sample (L1C models on TOA, L2A models on surface reflectance); "
                 "see the wheel's METADATA / README, 'Accuracy assessment'. Package paper: Wieland, M., Fichtner, "
                 "F., Martinis, S. (2022): UKIS-CSMASK: a Python package for multi-sensor cloud and cloud shadow "
                 "segmentation. ISPRS Archives XLIII-B3-2022, 217-222.")
COPYRIGHT = ("Copyright (c) 2020 German Aerospace Center (DLR) * German Remote Sensing Data Center * "
             "Department: Geo-Risks and Civil Security")


class UkisImportError(RuntimeError):
    """The wheel, an ONNX graph or an existing card does not fit what this importer expects."""


def log(msg: str) -> None:
    print(f"[import_ukis] {msg}", flush=True)


def stem_for(variant: str) -> str:
    return f"ukis_csmask_{variant}"


def onnx_member(variant: str) -> str:
    return f"ukis_csmask/model_{variant}.onnx"


def json_member(variant: str) -> str:
    return f"ukis_csmask/model_{variant}.json"


# --------------------------------------------------------------------------------------------- the wheel
def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cached_wheel(cache_dir: Path = DEFAULT_CACHE) -> Path:
    return Path(cache_dir) / WHEEL_NAME


def ensure_wheel(cache_dir: Path = DEFAULT_CACHE, python: str = sys.executable) -> Path:
    """The pinned wheel in ``cache_dir`` (downloaded with pip only if absent); refuses a sha256 mismatch."""
    wheel = cached_wheel(cache_dir)
    if not wheel.is_file():
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        log(f"pip download --no-deps {PACKAGE}=={VERSION} -> {cache_dir}")
        env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
        subprocess.run([python, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--progress-bar",
                        "off", f"{PACKAGE}=={VERSION}", "-d", str(cache_dir)], check=True, env=env)
        if not wheel.is_file():
            raise UkisImportError(f"pip download did not produce {wheel}")
    actual = modelfile.sha256_of(wheel)
    if actual != WHEEL_SHA256:
        raise UkisImportError(f"{wheel} has sha256 {actual}, not the pinned {WHEEL_SHA256}: refusing to use it. "
                              "Delete it to download it again; if PyPI really serves a different file, review it "
                              "before changing WHEEL_SHA256.")
    return wheel


def read_wheel(wheel: Path) -> Dict[str, bytes]:
    """The members this importer uses, read into memory (nothing is unpacked to disk)."""
    names = [onnx_member(v) for v in VARIANTS] + [json_member(v) for v in VARIANTS] + [WHEEL_LICENSE]
    with zipfile.ZipFile(wheel) as zf:
        missing = [n for n in names if n not in zf.namelist()]
        if missing:
            raise UkisImportError(f"{wheel.name} lacks {', '.join(missing)}")
        return {n: zf.read(n) for n in names}


# --------------------------------------------------------------------------------------------- ONNX -> smp
def onnx_initializers(onnx_bytes: bytes) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """``({initializer name: numpy array}, facts)`` of an ONNX graph; facts describe what the exporter did."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load_model_from_string(onnx_bytes)
    graph = model.graph
    arrays = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    ops = [n.op_type for n in graph.node]
    in_shape = [d.dim_value or d.dim_param for d in graph.input[0].type.tensor_type.shape.dim]
    facts = {
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "opset": max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None),
        "input": graph.input[0].name,
        "input_shape": in_shape,
        "initializer_dtypes": sorted({str(a.dtype) for a in arrays.values()}),
        "batchnorm_nodes": ops.count("BatchNormalization"),
        "casts_to_float16": sum(1 for n in graph.node if n.op_type == "Cast"
                                and any(a.name == "to" and a.i == onnx.TensorProto.FLOAT16 for a in n.attribute)),
        "n_initializers": len(arrays),
    }
    return arrays, facts


def widen_graph(onnx_bytes: bytes) -> bytes:
    """The wheel's float16 graph widened to float32: ``core/ukis.widen_graph`` (the one definition, which the
    model store also runs when it installs a ukis model from the PyPI wheel), its errors as UkisImportError."""
    try:
        return ukis.widen_graph(onnx_bytes)
    except ModelFileError as exc:
        raise UkisImportError(str(exc)) from exc


def find_prefix(names: Iterable[str], anchor: str = "encoder._conv_stem.weight") -> str:
    """The exporter's prefix of the smp keys (``"model."`` for ukis 1.0.0): the part before ``anchor``."""
    hits = [n[: -len(anchor)] for n in names if n.endswith(anchor)]
    if len(hits) != 1:
        raise UkisImportError(f"cannot find the smp key '{anchor}' among the ONNX initializers ({len(hits)} names "
                              "end with it): the exporter renamed the weights (constant folding?); this importer "
                              "maps names, it does not guess them from the graph")
    return hits[0]


def _allowed_missing(key: str) -> bool:
    return key.startswith(ALLOWED_MISSING_PREFIXES) or key.endswith(ALLOWED_MISSING_SUFFIX)


def map_to_state_dict(arrays: Mapping[str, Any], reference: Mapping[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Map ONNX initializers onto the keys of ``reference`` (a fresh smp network's ``state_dict()``).

    Returns ``(state dict of float32 / int64 torch tensors, report)``. Raises :class:`UkisImportError` naming
    every key that is extra, missing (other than the allowed ones, which are filled from ``reference``) or
    mis-shaped, and refuses folded BatchNorm.
    """
    import numpy as np
    import torch

    prefix = find_prefix(arrays)
    outside = sorted(n for n in arrays if not n.startswith(prefix))
    by_key = {n[len(prefix):]: a for n, a in arrays.items() if n.startswith(prefix)}
    ref_keys = set(reference)
    extra = [prefix + k for k in sorted(set(by_key) - ref_keys)] + outside  # as the ONNX names them
    missing = sorted(ref_keys - set(by_key))
    bad_missing = [k for k in missing if not _allowed_missing(k)]
    if any(k.endswith(".running_mean") for k in ref_keys) and not any(k.endswith(".running_mean") for k in by_key):
        raise UkisImportError("the ONNX graph holds no BatchNorm running statistics: BatchNorm was folded into the "
                              "convolutions, which this importer does not undo; missing e.g. "
                              + ", ".join(bad_missing[:5]))
    shape_errors = [f"{k}: ONNX {tuple(by_key[k].shape)} vs smp {tuple(reference[k].shape)}"
                    for k in sorted(set(by_key) & ref_keys) if tuple(by_key[k].shape) != tuple(reference[k].shape)]
    problems = []
    if extra:
        problems.append(f"{len(extra)} ONNX initializer(s) with no smp key: {', '.join(extra)}")
    if bad_missing:
        problems.append(f"{len(bad_missing)} smp key(s) missing from the ONNX: {', '.join(bad_missing)}")
    if shape_errors:
        problems.append(f"{len(shape_errors)} mis-shaped key(s): {'; '.join(shape_errors)}")
    if problems:
        raise UkisImportError("ONNX -> smp mapping refused: " + " | ".join(problems))

    state: Dict[str, Any] = {}
    filled = []
    for key, ref in reference.items():
        if key in by_key:
            arr = by_key[key]
            if ref.is_floating_point():
                if not np.issubdtype(arr.dtype, np.floating):
                    raise UkisImportError(f"{key}: ONNX dtype {arr.dtype}, smp expects floating point")
                state[key] = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
            else:
                state[key] = torch.from_numpy(np.ascontiguousarray(arr)).to(ref.dtype)
        else:
            value = ref.detach().clone()
            if value.is_floating_point() and value.dim() > 1:
                value.zero_()  # a randomly initialised conv weight: zero it so the file is deterministic
            state[key] = value
            filled.append(key)
    report = {
        "prefix": prefix,
        "mapped": len(by_key),
        "filled": filled,
        "filled_outside_counters": [k for k in filled if not k.endswith(ALLOWED_MISSING_SUFFIX)],
        "onnx_dtypes": sorted({str(a.dtype) for a in by_key.values()}),
    }
    return state, report


def float16_is_lossless(state: Mapping[str, Any]) -> bool:
    """True when every floating tensor survives float32 -> float16 -> float32 unchanged."""
    import torch

    for v in state.values():
        if v.is_floating_point():
            w = v.to(torch.float32)
            if not torch.equal(w.to(torch.float16).to(torch.float32), w):
                return False
    return True


def fresh_network(in_channels: int):
    from sar2eo_cloud_plugin.core.networks import build_network

    return build_network("unet", architecture_args(in_channels)).eval()


def architecture_args(in_channels: int) -> Dict[str, Any]:
    return {"encoder_name": ENCODER, "in_channels": in_channels, "classes": N_CLASSES}


# --------------------------------------------------------------------------------------------- cards
def build_card(variant: str, meta: Mapping[str, Any], onnx_sha: str, facts: Mapping[str, Any],
               dtype: str) -> modelfile.ModelCard:
    nb, level = variant.split("_")
    bands = BANDS[nb]
    stats = meta["data"]["dataset_statistics"]
    mean, std = stats["img"][0], stats["img"][1]
    ukis_bands = [b.lower() for b in stats["band_names"]]
    if [UKIS_TO_S2.get(b) for b in ukis_bands] != bands or len(mean) != len(bands) or len(std) != len(bands):
        raise UkisImportError(f"{json_member(variant)}: band_names {stats['band_names']} / {len(mean)} means do not "
                              f"match the expected {bands}")
    if int(meta["data"]["in_channels"]) != len(bands) or int(meta["data"]["classes"]) != N_CLASSES:
        raise UkisImportError(f"{json_member(variant)}: in_channels / classes are {meta['data']['in_channels']} / "
                              f"{meta['data']['classes']}")
    model_meta = meta["model"]
    if model_meta.get("encoder_name") != ENCODER or model_meta.get("decoder_name") != "unet":
        raise UkisImportError(f"{json_member(variant)}: model is {model_meta.get('decoder_name')} / "
                              f"{model_meta.get('encoder_name')}, not unet / {ENCODER}")
    level_u = level.upper()
    units_text = "top-of-atmosphere" if level == "l1c" else "bottom-of-atmosphere (surface)"
    return modelfile.ModelCard(
        task="cloudmask",
        name=stem_for(variant),
        architecture="unet",
        architecture_args=architecture_args(len(bands)),
        input={"bands": bands, "units": "reflectance", "level": level_u, "resolution_m": 30},
        normalisation={"method": "mean_std", "mean": [float(m) for m in mean], "std": [float(s) for s in std]},
        output={"classes": [{"value": 0, "name": "clear"}, {"value": 1, "name": "cloud"},
                            {"value": 2, "name": "shadow"}],
                "activation": "softmax",
                "written_as": "uint8 classes 0 clear / 1 cloud / 2 shadow / 255 nodata"},
        tiling={"tile_size": 512, "overlap": 64, "batch_size": 1},
        training={
            "data": TRAINING_DATA,
            "by": "German Aerospace Center (DLR), not trained in this project (imported)",
            "input": f"Sentinel-2 / Landsat {level_u} {units_text} reflectance 0-1 at ~30 m, bands "
                     f"{', '.join(stats['band_names'])}",
            "tile_size": list(meta["data"].get("target_size", [])),
            "loss": model_meta.get("loss_fn"),
            "class_weights": meta["data"].get("class_weights"),
            "encoder_init": model_meta.get("encoder_weights"),
        },
        metrics={},
        source={
            "package": PACKAGE,
            "version": VERSION,
            "file": onnx_member(variant),
            "file_sha256": onnx_sha,
            "wheel_sha256": WHEEL_SHA256,
            "licence": "Apache-2.0",
            "licence_file": LICENSE_NAME,
            "notice_file": NOTICE_NAME,
            "citation": CITATION,
            "model_version": model_meta.get("version"),
            "training_data": "SPARCS + CloudSEN12+ (+ custom samples), L1C and DLR-compiled L2A",
        },
        notes=(f"ukis-csmask {VERSION} '{model_meta.get('version')}' cloud / cloud-shadow U-Net (DLR, Apache-2.0), "
               f"imported unchanged by scripts/import_ukis_models.py from {onnx_member(variant)} (exported by "
               f"{facts.get('producer')}, opset {facts.get('opset')}, float16 initializers): ONNX initializer "
               f"names are the smp state-dict keys with the prefix 'model.'; encoder._conv_head.* and "
               f"encoder._bn1.* (EfficientNet's classifier head, never run by the U-Net) and the BatchNorm "
               f"num_batches_tracked counters are not in the ONNX and are filled with defaults. Weights stored as "
               f"{dtype}" + (" (the ONNX weights are float16 already, so this is lossless: bit-for-bit the ukis "
                             "weights)" if dtype == "float16" else "") +
               f". Feed {level_u} reflectance 0-1 resampled to ~30 m in the band order above; the plugin "
               "normalises with the mean/std above (ukis's own statistics) and takes the argmax of the softmax. "
               "Parity with onnxruntime on real patches: tests/core/test_ukis_import.py. Note: the hand-labelled "
               "scenes in shared/data/cloud-labelled come from ukis-csmask's own tests, so this model may have "
               "seen them in training."),
    )


def notice_text(onnx_shas: Mapping[str, str]) -> str:
    rows = "\n".join(f"  {onnx_member(v)}  sha256 {onnx_shas[v]}  ->  {stem_for(v)}.safetensors / .json"
                     for v in VARIANTS)
    return f"""NOTICE: ukis-csmask {VERSION} cloud / cloud-shadow models in this folder

{COPYRIGHT}
Licensed under the Apache License, Version 2.0: see {LICENSE_NAME} in this folder
(the licence text shipped in the wheel, {WHEEL_LICENSE}).
Project: {HOMEPAGE}

What was taken
  From the PyPI wheel {WHEEL_NAME} ({PYPI_URL}),
  sha256 {WHEEL_SHA256}:
{rows}
  and the per-band mean / std, band names and model version from the .json beside each .onnx.
  Only the network weights and that metadata are used; no ukis-csmask code is copied.

How it was converted (these files are modified forms of the originals)
  scripts/import_ukis_models.py reads each ONNX graph's initializers with the onnx package, strips the
  exporter's 'model.' prefix to obtain segmentation-models-pytorch Unet(encoder_name="efficientnet-b4",
  in_channels=4|6, classes=3) state-dict keys, checks every key and shape, fills the keys the ONNX does not hold
  (encoder._conv_head.*, encoder._bn1.*: the EfficientNet classifier head, which the U-Net never runs; BatchNorm
  num_batches_tracked counters) with default values, and stores the float16 values unchanged as safetensors
  ({stem_for('*')}.safetensors). The cards ({stem_for('*')}.json) restate the normalisation, bands,
  product level and classes (0 clear, 1 cloud, 2 shadow) from ukis-csmask's metadata. For ONNX Runtime, each graph
  is also installed as {stem_for('*')}.onnx, widened to float32 (float16 initializers, constants and casts made
  float32, height and width made dynamic; the same weight values). No weight was retrained,
  fine-tuned or quantised further. Parity with onnxruntime is tested in tests/core/test_ukis_import.py.

Please cite
  {CITATION}
  Wieland, M., Fichtner, F., Martinis, S. (2022): UKIS-CSMASK: a Python package for multi-sensor cloud and
  cloud shadow segmentation. Int. Arch. Photogramm. Remote Sens. Spatial Inf. Sci. XLIII-B3-2022, 217-222.
  https://doi.org/10.5194/isprs-archives-XLIII-B3-2022-217-2022

Training data (ukis-csmask v1.0.0 models)
  {TRAINING_DATA}
"""


# --------------------------------------------------------------------------------------------- fast path
def installed_ok(models_dir: Path = MODELS_DIR) -> Tuple[bool, str]:
    """True when every card, its matching weights and the two text files are in place (no torch, no onnx)."""
    for v in VARIANTS:
        card_file = models_dir / f"{stem_for(v)}.json"
        if not card_file.is_file():
            return False, f"{card_file.name} missing"
        try:
            card = modelfile.read_card(card_file, "cloudmask")
            modelfile.verify_weights(card_file, card)
            modelfile.verify_onnx(card_file, card)
        except ModelFileError as exc:
            return False, str(exc)
        if card.source.get("wheel_sha256") != WHEEL_SHA256:
            return False, f"{card_file.name} names wheel sha256 {card.source.get('wheel_sha256')}"
    for name in (LICENSE_NAME, NOTICE_NAME):
        if not (models_dir / name).is_file():
            return False, f"{name} missing"
    return True, "up to date"


# --------------------------------------------------------------------------------------------- main work
def convert(variant: str, members: Mapping[str, bytes], out_dir: Path) -> Dict[str, Any]:
    """Convert one model into ``out_dir`` (card + weights, via modelfile.save_model); returns a report."""
    onnx_bytes = members[onnx_member(variant)]
    meta = json.loads(members[json_member(variant)].decode("utf-8"))
    arrays, facts = onnx_initializers(onnx_bytes)
    nb = len(BANDS[variant.split("_")[0]])
    if facts["input_shape"][1:2] != [nb]:
        raise UkisImportError(f"{onnx_member(variant)}: input shape {facts['input_shape']}, expected {nb} channels")
    net = fresh_network(nb)
    state, report = map_to_state_dict(arrays, net.state_dict())
    net.load_state_dict(state, strict=True)
    dtype = "float16" if float16_is_lossless(state) else "float32"
    onnx_sha = _sha256_bytes(onnx_bytes)
    card = build_card(variant, meta, onnx_sha, facts, dtype)
    card_file = modelfile.save_model(net, card, out_dir, dtype=dtype)   # byte-stable: sorted header metadata
    graph = widen_graph(onnx_bytes)
    gfile = Path(out_dir) / f"{card.name}.onnx"
    onnxexport.write_atomic(gfile, graph)
    card.onnx = {"file": gfile.name, "sha256": _sha256_bytes(graph), "bytes": len(graph)}
    modelfile.set_card_entry(card_file, "onnx", card.onnx)
    report.update(facts=facts, dtype=dtype, onnx_sha256=onnx_sha, card=card)
    return report


def run(force: bool = False, cache_dir: Path = DEFAULT_CACHE, models_dir: Path = MODELS_DIR) -> int:
    t0 = time.perf_counter()
    models_dir = Path(models_dir)
    if not force:
        ok, why = installed_ok(models_dir)
        if ok:
            where = models_dir.relative_to(REPO) if models_dir.is_relative_to(REPO) else models_dir
            log(f"ukis-csmask models up to date in {where} ({time.perf_counter() - t0:.2f} s; --force regenerates)")
            return 0
        log(f"(re)generating: {why}")
    import torch

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    wheel = ensure_wheel(cache_dir)
    members = read_wheel(wheel)
    models_dir.mkdir(parents=True, exist_ok=True)
    onnx_shas = {}
    with tempfile.TemporaryDirectory(prefix=".ukis-import-", dir=models_dir) as tmp:
        tmp_dir = Path(tmp)
        staged = []
        for v in VARIANTS:
            tv = time.perf_counter()
            rep = convert(v, members, tmp_dir)
            onnx_shas[v] = rep["onnx_sha256"]
            stem = stem_for(v)
            new_card = modelfile.read_card(tmp_dir / f"{stem}.json")
            card_file = models_dir / f"{stem}.json"
            if card_file.is_file():
                old = modelfile.read_card(card_file, "cloudmask")
                for field, want in (("bytes", new_card.weights["bytes"]), ("sha256", new_card.weights["sha256"]),
                                    ("dtype", new_card.weights["dtype"])):
                    if old.weights.get(field) != want:
                        raise UkisImportError(
                            f"{card_file} (committed) says weights {field} {old.weights.get(field)!r} but this "
                            f"conversion produced {want!r}: the conversion is no longer the one the card was made "
                            "from (a changed importer, smp, torch or safetensors?). Nothing was installed. If the "
                            "change is intended, delete the card and rerun, then re-measure its metrics.")
                for field, want in (("file_sha256", rep["onnx_sha256"]), ("wheel_sha256", WHEEL_SHA256),
                                    ("file", onnx_member(v))):
                    if old.source.get(field) != want:
                        raise UkisImportError(f"{card_file} (committed) says source.{field} "
                                              f"{old.source.get(field)!r}, the wheel gives {want!r}")
                graph_pair = (tmp_dir / new_card.onnx["file"], models_dir / new_card.onnx["file"])
                if old.onnx and dict(old.onnx) != dict(new_card.onnx):
                    raise UkisImportError(f"{card_file} (committed) says onnx {old.onnx} but widening the wheel graph "
                                          f"gave {new_card.onnx} (a changed onnx package?). Nothing was installed.")
                if old.onnx:
                    card_pair = None
                    what = "weights and graph match the committed card (card kept)"
                else:   # a card from before graphs: the same card plus its graph's entry
                    old.onnx = dict(new_card.onnx)
                    (tmp_dir / f"{stem}.json").write_text(old.to_json(), encoding="utf-8")
                    card_pair = (tmp_dir / f"{stem}.json", card_file)
                    what = "weights match the committed card; its onnx entry added"
                staged.append((tmp_dir / new_card.weights["file"], models_dir / new_card.weights["file"], card_pair))
                staged.append((graph_pair[0], graph_pair[1], None))
            else:
                staged.append((tmp_dir / new_card.weights["file"], models_dir / new_card.weights["file"],
                               (tmp_dir / f"{stem}.json", card_file)))
                staged.append((tmp_dir / new_card.onnx["file"], models_dir / new_card.onnx["file"], None))
                what = "new card written"
            f = rep["facts"]
            log(f"{stem}: {rep['mapped']} ONNX initializers ({', '.join(f['initializer_dtypes'])}, prefix "
                f"'{rep['prefix']}', {f['batchnorm_nodes']} BatchNorm nodes, {f['casts_to_float16']} casts to "
                f"float16) -> smp keys; filled {len(rep['filled'])} "
                f"({', '.join(rep['filled_outside_counters'])} + "
                f"{len(rep['filled']) - len(rep['filled_outside_counters'])} num_batches_tracked); stored "
                f"{rep['dtype']}, {new_card.weights['bytes'] / 1e6:.1f} MB; {what} ({time.perf_counter() - tv:.1f} s)")
        # install only once all four converted and matched
        for wsrc, wdst, card_pair in staged:
            os.chmod(wsrc, 0o644)  # safetensors creates its files 0600
            os.replace(wsrc, wdst)
            if card_pair is not None:
                os.chmod(card_pair[0], 0o644)
                os.replace(*card_pair)
    lic = members[WHEEL_LICENSE]
    lic_file = models_dir / LICENSE_NAME
    if lic_file.is_file() and lic_file.read_bytes() != lic:
        raise UkisImportError(f"{lic_file} differs from the wheel's {WHEEL_LICENSE}; restore it from git")
    if not lic_file.is_file():
        lic_file.write_bytes(lic)
        log(f"wrote {LICENSE_NAME}")
    notice_file = models_dir / NOTICE_NAME
    notice = notice_text(onnx_shas)
    if not notice_file.is_file():
        notice_file.write_text(notice, encoding="utf-8")
        log(f"wrote {NOTICE_NAME}")
    elif notice_file.read_text(encoding="utf-8") != notice:
        log(f"{NOTICE_NAME} exists and differs from what this script would write: kept as it is")
    ok, why = installed_ok(models_dir)
    if not ok:
        raise UkisImportError(f"after the import: {why}")
    log(f"done in {time.perf_counter() - t0:.1f} s")
    return 0


def main(argv: Optional[list] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--force", action="store_true", help="regenerate and re-verify even when up to date")
    ap.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help=f"wheel cache (default {DEFAULT_CACHE})")
    args = ap.parse_args(argv)
    try:
        return run(force=args.force, cache_dir=args.cache_dir)
    except (UkisImportError, subprocess.CalledProcessError) as exc:
        print(f"[import_ukis] ERROR: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())

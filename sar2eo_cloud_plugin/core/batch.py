"""Planning a folder batch, without QGIS: which files, which outputs, which are already complete.

Used by the Processing algorithm ``sar2eo_cloud:batch_folder`` (processing/batch_algorithm.py), which
runs the single-scene algorithms on each file; everything here needs only rasterio, GDAL's ogr and the
core, so it is tested without QGIS (tests/core/test_batch.py).

- :func:`find_inputs`: the files of a folder matching the patterns, never the batch's own outputs.
- :func:`output_paths`: the files one input produces (names from the task's :class:`~.tasks.TaskSpec`).
- :func:`completeness`: whether those outputs exist, are readable, on the input's grid with the
  expected bands, and still match the sha256 an earlier run recorded (:func:`output_checksums`,
  :func:`checksum_problem`, :func:`previous_records`).
- :func:`unreadable_reason`: why an input cannot be opened, before a child run is spent on it.
- :func:`check_batch_wide`: what would fail every file the same way, raised once before the first.
"""
from __future__ import annotations

import contextlib
import fnmatch
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from . import outputs as safe
from .bands import BAND_SETS
from .errors import InputError
from .modelfile import ModelCard, sha256_of
from .tasks import DEVICE_KEYS, DEVICES, TASKS, TRANSLATE, TaskSpec, task as task_spec

TaskLike = Union[TaskSpec, str]   # a TaskSpec, or its key

# Every raster name a batch writes ends with one of these, so a batch whose output folder
# is (inside) its input folder never takes its own outputs as inputs.
OUTPUT_SUFFIXES = tuple(s for t in TASKS for s in t.all_output_suffixes() if s.endswith(".tif"))


def _spec(task: TaskLike) -> TaskSpec:
    return task if isinstance(task, TaskSpec) else task_spec(task)


def find_inputs(folder: str, patterns: str, recursive: bool,
                exclude_dir: Optional[str] = None) -> Tuple[List[Path], int]:
    """Files under ``folder`` matching any of the ``;``-separated glob patterns (case-insensitive).

    Hidden files (the engine's ``.x.partial.tif`` temporaries among them), this algorithm's own
    outputs and, when recursive, anything inside ``exclude_dir`` are left out. Returns
    (sorted files, number left out as outputs).
    """
    pats = [p.strip().lower() for p in (patterns or "*.tif").split(";") if p.strip()] or ["*.tif"]
    root = Path(folder)
    candidates = root.rglob("*") if recursive else root.glob("*")
    excl = Path(exclude_dir).resolve() if exclude_dir else None
    found, left_out = [], 0
    for p in candidates:
        rel_parts = p.relative_to(root).parts
        if any(part.startswith(".") for part in rel_parts) or not p.is_file():
            continue
        name = p.name.lower()
        if not any(fnmatch.fnmatchcase(name, pat) for pat in pats):
            continue
        if name.endswith(OUTPUT_SUFFIXES) or name.endswith(".aux.xml"):
            left_out += 1
            continue
        if recursive and excl is not None and excl != root.resolve() and excl in p.resolve().parents:
            left_out += 1
            continue
        found.append(p)
    return sorted(found), left_out


def output_paths(src: Path, in_root: Path, out_root: Path, task: TaskLike, band_set_key: str,
                 probability: bool, polygons: bool) -> Dict[str, str]:
    """The files one input produces; subfolders of the input folder are mirrored."""
    rel_dir = src.parent.relative_to(in_root)
    base = out_root / rel_dir / src.stem
    wanted = {"OUTPUT_PROBABILITY": probability, "OUTPUT_POLYGONS": polygons}
    spec = _spec(task)
    return {key: str(base) + spec.output_suffix(key, band_set_key) for key in spec.outputs if wanted.get(key, True)}


def raster_matches(path: str, src_path: str, count: Optional[int],
                    descriptions: Optional[Sequence[str]] = None) -> Optional[str]:
    """None when ``path`` is a readable raster on the grid of ``src_path`` with ``count`` bands; else why not."""
    import rasterio
    from rasterio.windows import Window

    try:
        with rasterio.open(src_path) as src:
            crs, size, transform = src.crs, (src.width, src.height), src.transform
    except Exception as exc:  # noqa: BLE001 - the input itself is unreadable: nothing to compare with
        return f"input unreadable ({exc})"
    try:
        with rasterio.open(path) as out:
            if count is not None and out.count != count:
                return f"{Path(path).name} has {out.count} band(s), expected {count}"
            if (out.width, out.height) != size:
                return f"{Path(path).name} is {out.width} x {out.height} px, input is {size[0]} x {size[1]}"
            if out.crs != crs:
                return f"{Path(path).name} CRS {out.crs} differs from the input's {crs}"
            if not out.transform.almost_equals(transform):
                return f"{Path(path).name} georeferencing differs from the input's"
            if descriptions and tuple(out.descriptions) != tuple(descriptions):
                return f"{Path(path).name} bands are {list(out.descriptions)}, expected {list(descriptions)}"
            # Read the last block: a damaged file fails here (the engine writes atomically, so this
            # only happens to files damaged later, e.g. by a copy that was cut short).
            h = min(out.height, 256)
            out.read(1, window=Window(0, out.height - h, out.width, h))
    except Exception as exc:  # noqa: BLE001
        return f"{Path(path).name} is not readable ({exc})"
    return None


def vector_problem(path: str) -> Optional[str]:
    """None when ``path`` opens as a vector dataset with at least one layer; else why not."""
    from osgeo import ogr

    try:
        # GDAL 3.10 (Debian 13) raises on a file that is not a vector dataset where older GDALs returned
        # None, whether or not ogr.UseExceptions() is on: both mean "not a vector layer" here.
        ds = ogr.Open(path)
        layers = ds.GetLayerCount() if ds is not None else 0
    except Exception:  # noqa: BLE001 - RuntimeError from GDAL's bindings
        layers = 0
    if layers < 1:
        return f"{Path(path).name} does not open as a vector layer"
    return None


def output_checksums(outputs: Dict[str, str]) -> Dict[str, Dict[str, object]]:
    """{output key: {"sha256", "bytes"}} of the files that exist (recorded in the batch summary)."""
    sums = {}
    for key, path in outputs.items():
        with contextlib.suppress(OSError):
            sums[key] = {"sha256": sha256_of(path), "bytes": os.path.getsize(path)}
    return sums


def checksum_problem(outputs: Dict[str, str], recorded: Optional[Dict]) -> Optional[str]:
    """Why the outputs no longer match the checksums an earlier run recorded (None when they match)."""
    if not isinstance(recorded, dict):
        return None
    for key, path in outputs.items():
        want = recorded.get(key)
        if not isinstance(want, dict) or not isinstance(want.get("sha256"), str):
            return f"{Path(path).name} has no checksum in the previous summary"
        try:
            if want.get("bytes") is not None and os.path.getsize(path) != want["bytes"]:
                return f"{Path(path).name} changed since it was written (size differs from the summary)"
            if sha256_of(path) != want["sha256"]:
                return f"{Path(path).name} changed since it was written (sha256 differs from the summary)"
        except OSError as exc:
            return f"{Path(path).name} unreadable ({safe.os_error_text(exc)})"
    return None


def previous_records(summary_path: Path) -> Dict[str, Dict]:
    """Records of an earlier run's summary by input (relative path); {} when there is none or it is unreadable."""
    try:
        data = json.loads(summary_path.read_text(encoding="utf-8"))
        return {r["input"]: r for r in data.get("files", []) if isinstance(r, dict) and isinstance(r.get("input"), str)}
    except (OSError, ValueError, AttributeError, TypeError, KeyError):
        return {}


def completeness(src: Path, outputs: Dict[str, str], task: TaskLike, band_set_key: str,
                 previous: Optional[Dict] = None) -> Tuple[bool, str]:
    """(True, why) when every output of ``src`` exists and is complete, else (False, what is missing).

    ``previous`` is this input's record in the earlier run's summary: when it recorded checksums,
    outputs whose sha256 no longer matches are not complete (a damaged file that still opens with
    the right shape is redone); when the earlier run failed or was cancelled on this input, its
    outputs are not trusted either.
    """
    if previous is not None and previous.get("status") in ("failed", "cancelled"):
        return False, f"the previous run {previous.get('status')} on this input"
    for key, path in outputs.items():
        if not os.path.exists(path):
            return False, f"{Path(path).name} missing"
        if key == "OUTPUT_POLYGONS":
            problem = vector_problem(path)
        elif key == "OUTPUT" and _spec(task) is TRANSLATE:
            bs = BAND_SETS[band_set_key]
            problem = raster_matches(path, str(src), bs.count, bs.bands)
        else:   # the class raster has one band; the probabilities one per class of the model
            problem = raster_matches(path, str(src), 1 if key == "OUTPUT" else None)
        if problem:
            return False, problem
    if previous is not None and "checksums" in previous:
        problem = checksum_problem(outputs, previous.get("checksums"))
        if problem:
            return False, problem
    names = ", ".join(Path(p).name for p in outputs.values())
    checked = "; sha256 as recorded" if previous is not None and "checksums" in previous else ""
    return True, f"already complete ({names}: readable, same size and CRS as the input{checked})"


def unreadable_reason(path: Path) -> Optional[str]:
    """Why GDAL cannot open ``path`` as a raster (a corrupt or truncated file), or None when it can.

    Checked before the scene's child run so the summary names the real cause instead of QGIS's
    generic "Could not load source layer ... not found".
    """
    import rasterio

    try:
        with rasterio.open(path) as src:
            if src.count < 1:
                return "the file opens but holds no raster band"
    except Exception as exc:  # noqa: BLE001 - rasterio raises several types; all mean "cannot read"
        return f"cannot open as a raster (corrupt, truncated or not a raster file): {exc}"
    return None


def check_batch_wide(task: TaskLike, band_set_key: str, model_file: Optional[str], device_index: int,
                     tiling: Optional[Dict[str, Optional[int]]] = None, cloud_model: str = "auto",
                     runtime: str = "auto") -> List[str]:
    """Problems that would fail every file the same way (no weights bundled, a model card for another
    task or band set, a card that fails its schema, weights that do not match the card's sha256 or
    its network, a tile size the network cannot take, a DEVICE out of range, CUDA asked for but
    absent, a RUNTIME that is not installed or has no file of the model to run): raised once as a
    :class:`~.errors.Sar2EoError`, before any file, instead of N failures. Only the file the runtime will
    run is checked: a model installed for ONNX Runtime alone has no safetensors weights.

    Returns log lines describing the model and device that will be used.
    """
    from .cardschema import check_weight_shapes
    from .engine import TilingOptions
    from .inference import resolve_device, translation_card
    from .modelfile import bundled_model_path, read_card
    from .runtime import select_model_file, verify_model_file

    spec = _spec(task)
    if not 0 <= device_index < len(DEVICES):
        raise InputError(f"DEVICE {device_index} is not one of the devices: "
                         + ", ".join(f"{i} = {d.label}" for i, d in enumerate(DEVICES)) + ".")
    card_path: Optional[Path] = None
    card: Optional[ModelCard] = None
    installed: List[str] = []
    if spec is TRANSLATE:
        card_path, card = translation_card(band_set_key, model_file)
    elif model_file or cloud_model != "auto":
        card_path = Path(model_file) if model_file else bundled_model_path(cloud_model, f"cloud model {cloud_model}")
        card = read_card(card_path, spec.card_task)
    else:   # auto chooses per file; at least one bundled cloud model must be installed
        from . import cloud

        installed = [n for n in cloud.bundled_cloud_models() if cloud.weights_present(n)]
        if not installed:
            raise InputError("No bundled cloud model is installed (run scripts/setup.sh, or give a model file).")
    tiling = tiling or {}
    card_tiling: Dict[str, Any] = {}
    runtime_used = runtime
    if card is not None and card_path is not None:
        runtime_used, _why = select_model_file(card_path, card, runtime)
        path = verify_model_file(card_path, card, runtime_used)      # size and sha256 as in the card
        if runtime_used == "torch":
            check_weight_shapes(card_path, card.architecture, dict(card.architecture_args), path)
        card_tiling = dict(card.tiling)
    # Translation tiles are input pixels (a multiple of 4); cloud tiles are network pixels (of 32).
    overlap = tiling.get("OVERLAP")      # 0 is a real choice (no overlap); None: the card's or 32
    TilingOptions(tile_size=int(tiling.get("TILE_SIZE") or card_tiling.get("tile_size", spec.default_tile_size)),
                  overlap=int(card_tiling.get("overlap", 32) if overlap is None else overlap),
                  batch_size=int(tiling.get("BATCH_SIZE") or card_tiling.get("batch_size", 4)),
                  multiple=spec.tile_multiple).check()
    device = resolve_device(DEVICE_KEYS[device_index])
    if card is None:
        return [f"Model: auto per file, among {', '.join(installed)}; device: {device}"]
    return [f"Model: {card.name} ({card_path}), device: {device}, runtime: {runtime_used}"]

"""Batch a folder: run "Translate SAR to EO" or "Cloud mask" on every raster in a folder.

Stable id ``sar2eo_cloud:batch_folder``. One output per input, named after it
(``<stem>_eo_<band set>.tif``, ``<stem>_cloudmask.tif`` [+ ``<stem>_cloudprob.tif``,
``<stem>_clouds.gpkg``]); a bad file fails that file, not the batch; outputs that are
already complete are skipped unless OVERWRITE; a JSON summary is written beside them.

Why child algorithms and not ``core.inference`` directly: each scene goes through
``processing.run(<single-scene algorithm>, ..., is_child_algorithm=True)`` so that the
batch does exactly what the Toolbox algorithm does for one layer (the same parameter
checks, the same error messages from the core, the cloud polygons, which are built by
the cloud-mask algorithm with QGIS, and any later fix in those algorithms) instead of a
second copy of that logic here. Each scene gets its own QgsProcessingContext (settings
copied from ours) so that the layers a scene opens are released after it: a folder of
thousands of scenes does not keep thousands of files open. Progress spans the folder
through QgsProcessingMultiStepFeedback (one step per scene); it forwards cancellation
to the child, whose engine stops within the scene and removes its temporary file.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import fnmatch
import json
import os
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from qgis.core import (
    QgsApplication,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingMultiStepFeedback,
    QgsProcessingOutputFile,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from ..core import outputs as safe
from ..core.bands import BAND_SET_KEYS, BAND_SETS
from ..core.errors import OutputError
from ..core.tasks import CLOUD_MASK, PROVIDER_ID, TASKS, TRANSLATE, TaskSpec, task as task_spec
from .base import Sar2EoAlgorithm
from .cloudmask_algorithm import LEVEL_LABELS, MODES, CloudMaskAlgorithm
from .guard import sigterm_cancels
from .translate_algorithm import UNITS_LABELS, TranslateSarToEoAlgorithm

# Every raster name this algorithm writes ends with one of these, so a batch whose output folder
# is (inside) its input folder never takes its own outputs as inputs.
OUTPUT_SUFFIXES = tuple(s for t in TASKS for s in t.all_output_suffixes() if s.endswith(".tif"))


def _spec(task) -> TaskSpec:
    return task if isinstance(task, TaskSpec) else task_spec(task)


# --------------------------------------------------------------------------- plain helpers (no QGIS state)
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


def output_paths(src: Path, in_root: Path, out_root: Path, task: str, band_set_key: str,
                 probability: bool, polygons: bool) -> Dict[str, str]:
    """The files one input produces; subfolders of the input folder are mirrored."""
    rel_dir = src.parent.relative_to(in_root)
    base = out_root / rel_dir / src.stem
    wanted = {"OUTPUT_PROBABILITY": probability, "OUTPUT_POLYGONS": polygons}
    spec = _spec(task)
    return {key: str(base) + spec.output_suffix(key, band_set_key) for key in spec.outputs if wanted.get(key, True)}


def _raster_matches(path: str, src_path: str, count: Optional[int],
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


def _vector_ok(path: str) -> Optional[str]:
    from osgeo import ogr

    ds = ogr.Open(path)
    if ds is None or ds.GetLayerCount() < 1:
        return f"{Path(path).name} does not open as a vector layer"
    return None


def output_checksums(outputs: Dict[str, str]) -> Dict[str, Dict[str, object]]:
    """{output key: {"sha256", "bytes"}} of the files that exist (recorded in the batch summary)."""
    sums = {}
    for key, path in outputs.items():
        with contextlib.suppress(OSError):
            sums[key] = {"sha256": safe.sha256_file(path), "bytes": os.path.getsize(path)}
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
            if safe.sha256_file(path) != want["sha256"]:
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


def completeness(src: Path, outputs: Dict[str, str], task: str, band_set_key: str,
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
            problem = _vector_ok(path)
        elif key == "OUTPUT" and _spec(task) is TRANSLATE:
            bs = BAND_SETS[band_set_key]
            problem = _raster_matches(path, str(src), bs.count, bs.bands)
        else:   # the class raster has one band; the probabilities one per class of the model
            problem = _raster_matches(path, str(src), 1 if key == "OUTPUT" else None)
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


def check_batch_wide(task: str, band_set_key: str, model_file: Optional[str], device_index: int,
                     tiling: Optional[Dict[str, Optional[int]]] = None, cloud_model: str = "auto") -> List[str]:
    """Problems that would fail every file the same way (no weights bundled, a model card for another
    task or band set, a card that fails its schema, weights that do not match the card's sha256 or
    its network, a tile size the network cannot take, CUDA asked for but absent): raised once, before
    any file, instead of N failures.

    Returns log lines describing the model and device that will be used.
    """
    from ..core.cardschema import check_weight_shapes
    from ..core.engine import TilingOptions
    from ..core.errors import Sar2EoError
    from ..core.modelfile import bundled_model_path, read_card, verify_weights

    spec = _spec(task)
    try:
        if spec is TRANSLATE:
            bs = BAND_SETS[band_set_key]
            card_path = Path(model_file) if model_file else bundled_model_path(spec.bundled_model(bs.key),
                                                                               f"band set {bs.label}")
            card = read_card(card_path, spec.card_task)
            if list(card.output.get("bands", [])) != list(bs.bands):
                raise Sar2EoError(f"Model {card_path} writes bands {card.output.get('bands')}, not {list(bs.bands)} "
                                  f"(band set {bs.label}); choose the matching band set or model file.")
        elif model_file or cloud_model != "auto":
            card_path = Path(model_file) if model_file else bundled_model_path(cloud_model,
                                                                               f"cloud model {cloud_model}")
            card = read_card(card_path, spec.card_task)
        else:   # auto chooses per file; at least one bundled cloud model must be installed
            from ..core import cloud

            installed = [n for n in cloud.bundled_cloud_models() if cloud.weights_present(n)]
            if not installed:
                raise Sar2EoError("No bundled cloud model is installed (run scripts/setup.sh, or give a model file).")
            card_path, card = None, None
        tiling = tiling or {}
        if card is not None:
            weights = verify_weights(card_path, card)       # exists, size and sha256 as in the card
            check_weight_shapes(card_path, card.architecture, dict(card.architecture_args), weights)
        card_tiling = card.tiling if card is not None else {}
        # Translation tiles are input pixels (a multiple of 4); cloud tiles are network pixels (of 32).
        TilingOptions(tile_size=int(tiling.get("TILE_SIZE") or card_tiling.get("tile_size", spec.default_tile_size)),
                      overlap=int(card_tiling.get("overlap", 32) if tiling.get("OVERLAP") is None
                                  else tiling["OVERLAP"]),
                      batch_size=int(tiling.get("BATCH_SIZE") or card_tiling.get("batch_size", 4)),
                      multiple=spec.tile_multiple).check()
        from ..core.inference import resolve_device
        from ..core.tasks import DEFAULT_DEVICE, DEVICE_KEYS

        device = resolve_device(DEVICE_KEYS[device_index] if 0 <= device_index < len(DEVICE_KEYS) else DEFAULT_DEVICE)
    except Sar2EoError as exc:
        raise QgsProcessingException(f"{exc} Nothing was processed.") from exc
    except ImportError as exc:
        raise QgsProcessingException(f"PyTorch or another run-time package failed to import: {exc}") from exc
    if card is None:
        return [f"Model: auto per file, among {', '.join(installed)}; device: {device}"]
    return [f"Model: {card.name} ({card_path}), device: {device}"]


def _first_line(message: str) -> str:
    lines = [ln.strip() for ln in str(message).splitlines() if ln.strip()]
    # processing.run prefixes parameter-check failures with "Unable to execute algorithm".
    if len(lines) > 1 and lines[0].lower().startswith("unable to execute algorithm"):
        lines = lines[1:]
    return " ".join(lines) if lines else "unknown error"


def _import_processing():
    """QGIS's ``processing`` Python package (QGIS and qgis_process load it; bare PyQGIS scripts may not)."""
    try:
        import processing
    except ImportError:
        import sys

        sys.path.append(os.path.join(QgsApplication.pkgDataPath(), "python", "plugins"))
        import processing
    return processing


# --------------------------------------------------------------------------- the algorithm
class BatchFolderAlgorithm(Sar2EoAlgorithm):
    NAME = "batch_folder"
    DISPLAY_NAME = "Batch a folder (translate or cloud mask)"
    GROUP = "Batch"
    GROUP_ID = "batch"
    TAGS = ("batch", "folder", "sentinel-1", "sentinel-2", "sar", "cloud", "mask", "translate")

    INPUT_FOLDER = "INPUT_FOLDER"
    PATTERN = "PATTERN"
    RECURSIVE = "RECURSIVE"
    TASK = "TASK"
    BAND_SET = "BAND_SET"
    UNITS = "UNITS"
    VV_BAND = "VV_BAND"
    VH_BAND = "VH_BAND"
    THRESHOLD = "THRESHOLD"
    CLOUD_POLYGONS = "CLOUD_POLYGONS"
    CLOUD_PROBABILITY = "CLOUD_PROBABILITY"
    MIN_AREA = "MIN_AREA"
    CLOUD_MODEL = "CLOUD_MODEL"
    CLOUD_MODE = "CLOUD_MODE"
    BUFFER = "BUFFER"
    LEVEL = "LEVEL"
    OVERWRITE = "OVERWRITE"
    OUTPUT_FOLDER = "OUTPUT_FOLDER"

    def __init__(self) -> None:
        super().__init__()
        from ..core.cloud import model_choices

        self.cloud_models = model_choices()   # "auto", then the bundled cloud cards: the child's MODEL enum

    def shortDescription(self) -> str:  # noqa: N802
        return self.tr("Translate or cloud-mask every raster of a folder; skips complete outputs, reports failures.")

    def shortHelpString(self) -> str:  # noqa: N802
        return self.tr(
            "Runs <b>Translate SAR to EO</b> or <b>Cloud mask</b> on every raster of a folder whose name "
            "matches the pattern, and writes one output per input into the output folder, named after it: "
            "<code>&lt;name&gt;_eo_&lt;band set&gt;.tif</code> or <code>&lt;name&gt;_cloudmask.tif</code> "
            "(optionally <code>&lt;name&gt;_cloudprob.tif</code> and <code>&lt;name&gt;_clouds.gpkg</code>)."
            "<p>A file that cannot be processed (unreadable, not a Sentinel-1/Sentinel-2 scene, ...) is "
            "reported as failed with the reason; the batch goes on with the next file.</p>"
            "<p>Running the batch again skips every input whose outputs are already complete (they exist, "
            "open, have the expected bands, size and CRS, and their sha256 still matches the one recorded in "
            "the summary), so an interrupted batch resumes where it stopped; changed or damaged outputs are "
            "redone. Options are not compared: after changing the model, threshold or another option, "
            "tick <i>Overwrite</i> to redo the outputs. A failed attempt never deletes an earlier output.</p>"
            "<p>Cancelling stops the scene being processed (no partial file is left) and the batch, which then "
            "ends with an error after writing its summary; so does a batch in which every file failed. "
            "Problems that would fail every file (model card, weights hash, tile size, device) stop the batch "
            "before the first file. Band numbers left empty come from each file's VV/VH band descriptions.</p>"
            "<p>Results: PROCESSED, SKIPPED and FAILED counts and SUMMARY, a JSON file in the output folder "
            "listing every input with its status, reason and outputs. The log ends with the same table.</p>"
            "<p>Pattern: one or more globs separated by ';' (e.g. <code>*.tif;*.tiff</code>), "
            "case-insensitive. Task options that do not apply to the chosen task are ignored. "
            "Tile size, overlap and batch size left empty use each task's default.</p>"
        )

    def initAlgorithm(self, config=None):  # noqa: N802
        # The options passed on to the single-scene algorithms take their choices from those algorithms.
        translate, cloud = TranslateSarToEoAlgorithm, CloudMaskAlgorithm
        self.add(QgsProcessingParameterFile(self.INPUT_FOLDER, self.tr("Input folder"),
                                            behavior=QgsProcessingParameterFile.Behavior.Folder),
                 "The folder whose rasters are processed, one output per input.")
        self.add(QgsProcessingParameterString(self.PATTERN, self.tr("File name pattern(s), ';'-separated"),
                                              defaultValue="*.tif"),
                 "Glob patterns of the files to process, case-insensitive, e.g. *.tif;*.tiff.")
        self.add(QgsProcessingParameterBoolean(self.RECURSIVE, self.tr("Include subfolders"), defaultValue=False),
                 "Also process the subfolders; their structure is mirrored in the output folder.", advanced=True)
        self.add(QgsProcessingParameterEnum(self.TASK, self.tr("Task"), options=[self.tr(t.batch_label) for t in TASKS],
                                            defaultValue=0),
                 "Which single-scene algorithm runs on every file.")
        self.add(QgsProcessingParameterEnum(self.BAND_SET, self.tr("Band set (translation)"),
                                            options=[BAND_SETS[k].label for k in BAND_SET_KEYS], defaultValue=0),
                 f"{translate.BAND_SET} of {TRANSLATE.label}: which Sentinel-2 bands to synthesise.")
        self.add(QgsProcessingParameterEnum(self.UNITS, self.tr("Input units (translation)"),
                                            options=[self.tr(x) for x in UNITS_LABELS], defaultValue=0),
                 f"{translate.UNITS} of {TRANSLATE.label}: dB, linear power or auto-detect, per file.")
        # Empty = from each file's band descriptions (VV/VH), else bands 1 and 2.
        for name, label, default in ((self.VV_BAND, "VV", 1), (self.VH_BAND, "VH", 2)):
            self.add(QgsProcessingParameterNumber(
                name, self.tr(f"{label} band number (translation; empty = from band descriptions, else {default})"),
                QgsProcessingParameterNumber.Type.Integer, optional=True, minValue=1),
                f"{name} of {TRANSLATE.label}; empty: each file's band described as {label}, else band {default}.",
                advanced=True)
        self.add_device()
        self.add(QgsProcessingParameterEnum(
            self.CLOUD_MODEL, self.tr("Cloud model (cloud mask)"),
            options=[self.tr("Auto (best bundled model for each file's bands)")] + self.cloud_models[1:],
            defaultValue=0),
            f"{cloud.MODEL} of {CLOUD_MASK.label}: a bundled cloud model, or auto per file.")
        self.add(QgsProcessingParameterEnum(self.CLOUD_MODE, self.tr("Output classes (cloud mask)"),
                                            options=[self.tr(label) for _k, label in MODES], defaultValue=0),
                 f"{cloud.MODE} of {CLOUD_MASK.label}: cloud and shadow classes, or cloud only.")
        self.add(QgsProcessingParameterNumber(self.BUFFER, self.tr("Buffer around cloud and shadow, m (cloud mask)"),
                                              QgsProcessingParameterNumber.Type.Double, defaultValue=0.0,
                                              minValue=0.0, maxValue=10000.0),
                 f"{cloud.BUFFER} of {CLOUD_MASK.label}: dilate cloud and shadow by this distance in metres.")
        self.add(QgsProcessingParameterEnum(self.LEVEL, self.tr("Product level (cloud mask)"),
                                            options=[self.tr(x) for x in LEVEL_LABELS], defaultValue=0),
                 f"{cloud.LEVEL} of {CLOUD_MASK.label}: L1C or L2A, auto-detected per file.", advanced=True)
        self.add(QgsProcessingParameterBoolean(self.CLOUD_POLYGONS,
                                               self.tr("Also write cloud and shadow polygons (cloud mask)"),
                                               defaultValue=False),
                 f"Write <name>{CLOUD_MASK.output_suffix(cloud.OUTPUT_POLYGONS)} ({cloud.OUTPUT_POLYGONS}) per file.")
        self.add(QgsProcessingParameterBoolean(self.CLOUD_PROBABILITY,
                                               self.tr("Also write the class probability raster (cloud mask)"),
                                               defaultValue=False),
                 f"Write <name>{CLOUD_MASK.output_suffix(cloud.OUTPUT_PROBABILITY)} ({cloud.OUTPUT_PROBABILITY}) "
                 "per file.", advanced=True)
        self.add(QgsProcessingParameterNumber(
            self.THRESHOLD, self.tr("Cloud probability threshold (cloud mask; empty = the model's)"),
            QgsProcessingParameterNumber.Type.Double, optional=True, minValue=0.0, maxValue=1.0),
            f"{cloud.THRESHOLD} of {CLOUD_MASK.label}, for one-channel (sigmoid) models only.", advanced=True)
        self.add(QgsProcessingParameterNumber(
            self.MIN_AREA, self.tr("Minimum cloud polygon area, m² (cloud mask)"),
            QgsProcessingParameterNumber.Type.Double, defaultValue=0.0, minValue=0.0),
            f"{cloud.MIN_AREA} of {CLOUD_MASK.label}: polygon parts smaller than this are dropped.", advanced=True)
        self.add_tiling(((self.TILE_SIZE, "Tile size, px (empty = the task's default)",
                          "Tile edge in pixels; empty: the task's (or the model card's) default."),
                         (self.OVERLAP, "Tile overlap, px (empty = the task's default)",
                          "Overlap between tiles (0 is allowed); empty: the task's default."),
                         (self.BATCH_SIZE, "Tiles per batch (empty = the task's default)",
                          "Tiles sent to the network at once; empty: the task's default.")))
        self.add_model_file("Model file (.json card; empty = the bundled model for the task)",
                            "A model card (.json beside its .safetensors) for the chosen task instead of its bundled "
                            "model; checked once before the first file.")
        self.add(QgsProcessingParameterBoolean(self.OVERWRITE, self.tr("Overwrite outputs that already exist"),
                                               defaultValue=False),
                 "Redo every input, even those whose outputs are already complete.")
        self.add(QgsProcessingParameterFolderDestination(self.OUTPUT_FOLDER, self.tr("Output folder")),
                 "Where the outputs and the JSON summary are written.")

        self.addOutput(QgsProcessingOutputNumber("PROCESSED", self.tr("Inputs processed")))
        self.addOutput(QgsProcessingOutputNumber("SKIPPED", self.tr("Inputs skipped (outputs already complete)")))
        self.addOutput(QgsProcessingOutputNumber("FAILED", self.tr("Inputs failed")))
        self.addOutput(QgsProcessingOutputFile("SUMMARY", self.tr("Batch summary (JSON)")))

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _child_parameters(spec: TaskSpec, src: Path, outputs: Dict[str, str], opts: Dict) -> Dict:
        """The single-scene algorithm's parameters for ``src``: its own parameter names."""
        translate, cloud = TranslateSarToEoAlgorithm, CloudMaskAlgorithm
        params = {translate.INPUT: str(src), translate.DEVICE: opts["DEVICE"]}
        for key in (translate.TILE_SIZE, translate.BATCH_SIZE, translate.MODEL_FILE):
            if opts.get(key):  # None/0/"" = leave the single-scene algorithm's default
                params[key] = opts[key]
        if opts.get(translate.OVERLAP) is not None:  # 0 is a real choice (no overlap)
            params[translate.OVERLAP] = opts[translate.OVERLAP]
        if spec is TRANSLATE:
            params.update({translate.UNITS: opts["UNITS"], translate.BAND_SET: opts["BAND_SET"]})
            for key in (translate.VV_BAND, translate.VH_BAND):
                if opts.get(key):
                    params[key] = opts[key]
        else:
            if opts.get("THRESHOLD") is not None:
                params[cloud.THRESHOLD] = opts["THRESHOLD"]
            params.update({cloud.MIN_AREA: opts["MIN_AREA"], cloud.MODEL: opts["MODEL"], cloud.MODE: opts["MODE"],
                           cloud.BUFFER: opts["BUFFER"], cloud.LEVEL: opts["LEVEL"]})
        params.update(outputs)
        return params

    # ------------------------------------------------------------------ run
    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        in_folder = self.parameterAsFile(parameters, self.INPUT_FOLDER, context)
        if not in_folder or not os.path.isdir(in_folder):
            raise QgsProcessingException(f"Input folder not found: {in_folder!r}")
        out_folder = self.parameterAsString(parameters, self.OUTPUT_FOLDER, context)
        if not out_folder:
            raise QgsProcessingException("Choose an output folder.")
        spec = TASKS[self.parameterAsEnum(parameters, self.TASK, context)]
        task = spec.batch_name
        bs_index = self.parameterAsEnum(parameters, self.BAND_SET, context)
        band_set_key = BAND_SET_KEYS[bs_index]
        pattern = self.parameterAsString(parameters, self.PATTERN, context) or "*.tif"
        recursive = self.parameterAsBool(parameters, self.RECURSIVE, context)
        overwrite = self.parameterAsBool(parameters, self.OVERWRITE, context)
        polygons = spec is CLOUD_MASK and self.parameterAsBool(parameters, self.CLOUD_POLYGONS, context)
        probability = spec is CLOUD_MASK and self.parameterAsBool(parameters, self.CLOUD_PROBABILITY, context)
        model_file = self.parameterAsFile(parameters, self.MODEL_FILE, context) or None
        if model_file and not os.path.isfile(model_file):
            raise QgsProcessingException(f"Model file not found: {model_file}")
        opts = {
            "DEVICE": self.parameterAsEnum(parameters, self.DEVICE, context),
            "UNITS": self.parameterAsEnum(parameters, self.UNITS, context),
            "BAND_SET": bs_index,
            "VV_BAND": self.optional_number(parameters, self.VV_BAND, context, as_int=True),
            "VH_BAND": self.optional_number(parameters, self.VH_BAND, context, as_int=True),
            "THRESHOLD": self.optional_number(parameters, self.THRESHOLD, context),
            "MIN_AREA": self.parameterAsDouble(parameters, self.MIN_AREA, context),
            "MODEL": self.parameterAsEnum(parameters, self.CLOUD_MODEL, context),
            "MODE": self.parameterAsEnum(parameters, self.CLOUD_MODE, context),
            "BUFFER": self.parameterAsDouble(parameters, self.BUFFER, context),
            "LEVEL": self.parameterAsEnum(parameters, self.LEVEL, context),
            "TILE_SIZE": self.optional_number(parameters, self.TILE_SIZE, context, as_int=True),
            "OVERLAP": self.optional_number(parameters, self.OVERLAP, context, as_int=True),
            "BATCH_SIZE": self.optional_number(parameters, self.BATCH_SIZE, context, as_int=True),
            "MODEL_FILE": model_file,
        }
        child_id = spec.algorithm_id
        if QgsApplication.processingRegistry().algorithmById(child_id) is None:
            raise QgsProcessingException(f"Algorithm {child_id} is not available; is the plugin's provider loaded?")

        for line in check_batch_wide(spec, band_set_key, model_file, opts["DEVICE"],
                                     {k: opts[k] for k in ("TILE_SIZE", "OVERLAP", "BATCH_SIZE")},
                                     self.cloud_models[opts["MODEL"]]):
            feedback.pushInfo(line)

        in_root, out_root = Path(in_folder), Path(out_folder)
        try:
            safe.check_output_folder(out_root, "batch output")
        except OutputError as exc:
            raise QgsProcessingException(f"{exc} Nothing was processed.") from exc
        summary_path = out_root / spec.summary_name
        previous = {} if overwrite else previous_records(summary_path)
        started_at = time.time()
        for folder in sorted({str(out_root)} | {str(p.parent) for p in out_root.rglob("*.partial*")}):
            safe.sweep_stale_partials(folder, started_at, feedback.pushInfo)
        inputs, left_out = find_inputs(in_folder, pattern, recursive, exclude_dir=out_folder)
        feedback.pushInfo(f"Batch {task}: {len(inputs)} file(s) matching '{pattern}' in {in_folder}"
                          f"{' (and subfolders)' if recursive else ''}; outputs in {out_folder}"
                          f"{'; overwriting existing outputs' if overwrite else ''}.")
        if left_out:
            feedback.pushInfo(f"Left out {left_out} file(s) that are outputs of this algorithm.")
        if not inputs:
            feedback.reportError(f"No file matches '{pattern}' in {in_folder}.", fatalError=False)

        processing = _import_processing()

        steps = QgsProcessingMultiStepFeedback(max(1, len(inputs)), feedback)
        records: List[Dict] = []
        started = time.time()
        with sigterm_cancels(feedback, raise_after=False) as terminated:
            for i, src in enumerate(inputs):
                steps.setCurrentStep(i)
                rel = str(src.relative_to(in_root))
                outs = output_paths(src, in_root, out_root, spec, band_set_key, probability, polygons)
                record = {"input": rel, "outputs": {k: str(Path(v).relative_to(out_root)) for k, v in outs.items()}}
                records.append(record)
                if feedback.isCanceled():
                    record.update(status="cancelled", reason="not started: the batch was cancelled")
                    continue
                feedback.pushInfo(f"[{i + 1}/{len(inputs)}] {rel}")
                if not overwrite:
                    complete, why = completeness(src, outs, spec, band_set_key, previous.get(rel))
                    if complete:
                        record.update(status="skipped", reason=why,
                                      checksums=(previous.get(rel) or {}).get("checksums") or output_checksums(outs))
                        feedback.pushInfo(f"  skipped: {why}")
                        continue
                    if any(os.path.exists(p) for p in outs.values()):
                        feedback.pushInfo(f"  outputs incomplete ({why}); processing again")
                problem = unreadable_reason(src)
                if problem:
                    record.update(status="failed", reason=problem)
                    feedback.reportError(f"  failed: {problem}", fatalError=False)
                    continue
                t0 = time.time()
                # Earlier outputs of this input: a failed attempt leaves them as they were (a file it
                # replaced is put back, one it created is removed), never deletes them.
                guards = [safe.OutputGuard(p) for p in outs.values()]
                child_context = QgsProcessingContext()
                child_context.copyThreadSafeSettings(context)
                child_context.setFeedback(steps)
                try:
                    processing.run(child_id, self._child_parameters(spec, src, outs, opts), feedback=steps,
                                   context=child_context, is_child_algorithm=True)
                except Exception as exc:  # noqa: BLE001 - every failure is this file's, not the batch's
                    for guard in guards:
                        guard.restore()
                    if feedback.isCanceled():
                        record.update(status="cancelled", reason="cancelled while processing; no output left"
                                      + (" (SIGTERM)" if terminated else ""))
                        feedback.pushInfo("  cancelled; earlier outputs (if any) are unchanged")
                    else:
                        reason = _first_line(str(exc))
                        record.update(status="failed", reason=reason)
                        feedback.reportError(f"  failed: {reason}", fatalError=False)
                    continue
                finally:
                    del child_context
                missing = [p for p in outs.values() if not os.path.exists(p)]
                if missing:
                    for guard in guards:
                        guard.restore()
                    record.update(status="failed",
                                  reason=f"the algorithm wrote no {', '.join(Path(m).name for m in missing)}")
                    feedback.reportError(f"  failed: {record['reason']}", fatalError=False)
                    continue
                for guard in guards:
                    guard.discard()
                record.update(status="processed", reason=f"done in {time.time() - t0:.1f} s",
                              checksums=output_checksums(outs))
                feedback.pushInfo(f"  processed in {time.time() - t0:.1f} s -> "
                                  + ", ".join(Path(p).name for p in outs.values()))
        feedback.setProgress(100)

        counts = {s: sum(1 for r in records if r.get("status") == s)
                  for s in ("processed", "skipped", "failed", "cancelled")}
        summary = {
            "algorithm": f"{PROVIDER_ID}:{self.name()}", "task": task, "child_algorithm": child_id,
            "band_set": band_set_key if spec is TRANSLATE else None,
            "input_folder": str(in_root), "pattern": pattern, "recursive": recursive,
            "output_folder": str(out_root), "overwrite": overwrite,
            "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(time.time() - started, 1), "cancelled": bool(feedback.isCanceled()),
            "counts": counts, "files": records,
        }
        try:
            safe.atomic_write_text(summary_path, json.dumps(summary, indent=2))   # temp + fsync + rename
        except OutputError as exc:
            raise QgsProcessingException(f"{exc} The outputs themselves are complete: "
                                         f"{counts['processed']} processed, {counts['failed']} failed.") from exc

        feedback.pushInfo("")
        feedback.pushInfo(f"Batch summary: {counts['processed']} processed, {counts['skipped']} skipped "
                          f"(already complete), {counts['failed']} failed"
                          + (f", {counts['cancelled']} cancelled" if counts["cancelled"] else "")
                          + f" — {summary_path}")
        for r in records:
            feedback.pushInfo(f"  {r['status']:<9} {r['input']}: {r.get('reason', '')}")
        if feedback.isCanceled():
            raise QgsProcessingException(
                ("The batch was terminated (SIGTERM)" if terminated else "The batch was cancelled")
                + f"; {counts['processed']} processed before that. Run it again to process the remaining files "
                f"(complete outputs are skipped). Summary: {summary_path}")
        if counts["failed"] and not (counts["processed"] or counts["skipped"]):
            first = next(r["reason"] for r in records if r.get("status") == "failed")
            raise QgsProcessingException(f"Every file failed ({counts['failed']}); nothing was processed. "
                                         f"First reason: {first}. "
                                         f"Summary: {summary_path}")
        return {"PROCESSED": counts["processed"], "SKIPPED": counts["skipped"], "FAILED": counts["failed"],
                "OUTPUT_FOLDER": str(out_root), "SUMMARY": str(summary_path)}

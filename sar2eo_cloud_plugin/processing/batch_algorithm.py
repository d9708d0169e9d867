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

import datetime as _dt
import json
import os
import time
from pathlib import Path
from typing import Dict, List, Optional

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

from ..core import batch, outputs as safe
from ..core.bands import BAND_SET_KEYS, BAND_SETS
from ..core.batch import completeness, find_inputs, output_checksums, output_paths, previous_records, unreadable_reason
from ..core.errors import OutputError, Sar2EoError
from ..core.tasks import CLOUD_MASK, PROVIDER_ID, TASKS, TRANSLATE, TaskSpec
from .base import Sar2EoAlgorithm
from .cloudmask_algorithm import LEVEL_LABELS, MODES, CloudMaskAlgorithm
from .guard import sigterm_cancels
from .translate_algorithm import UNITS_LABELS, TranslateSarToEoAlgorithm


def check_batch_wide(spec: TaskSpec, band_set_key: str, model_file: Optional[str], device_index: int,
                     tiling: Dict[str, Optional[int]], cloud_model: str, runtime: str = "auto") -> List[str]:
    """:func:`core.batch.check_batch_wide`, its errors said as a QgsProcessingException (nothing was processed)."""
    try:
        return batch.check_batch_wide(spec, band_set_key, model_file, device_index, tiling, cloud_model, runtime)
    except Sar2EoError as exc:
        raise QgsProcessingException(f"{exc} Nothing was processed.") from exc
    except ImportError as exc:
        raise QgsProcessingException(f"A run-time package failed to import: {exc}. Nothing was processed.") from exc


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
        self.add_runtime(output=False)
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
        params = {translate.INPUT: str(src), translate.DEVICE: opts["DEVICE"], translate.RUNTIME: opts["RUNTIME"]}
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
            "RUNTIME": self.parameterAsEnum(parameters, self.RUNTIME, context),
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
                                     self.cloud_models[opts["MODEL"]], self.runtime_key(parameters, context)):
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
                    child = processing.run(child_id, self._child_parameters(spec, src, outs, opts), feedback=steps,
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
                              runtime=(child or {}).get(TranslateSarToEoAlgorithm.RUNTIME_USED, ""),
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

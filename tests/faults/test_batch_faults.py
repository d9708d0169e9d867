"""Folder batch under faults (issue 11), in-process: damaged outputs are redone on resume (sha256 in
the summary), earlier outputs survive an OVERWRITE run in which every file fails, problems that
would fail every file are found once up front, the exit status is an error when every file failed,
stale partial files are cleared on resume, and a read-only output folder is named.

Inputs: copies of the REAL samples (sample_data/s1, s2); models: the GENERATED random-weight
``tiny_models`` (some copies edited to be broken); read-only folder: a REAL read-only tmpfs.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from qgis.core import QgsProcessingContext, QgsProcessingException, QgsProcessingFeedback

from sar2eo_cloud_plugin.core import outputs

from fault_helpers import sha

BATCH = "sar2eo_cloud:batch_folder"


def batch(params):
    import processing

    return processing.run(BATCH, params, feedback=QgsProcessingFeedback(), context=QgsProcessingContext())


def _copies(folder: Path, files) -> Path:
    folder.mkdir()
    for f in files:
        shutil.copy2(f, folder / f.name)
    return folder


def _translate_params(inp, out, tiny_models, **extra):
    return dict({"INPUT_FOLDER": str(inp), "OUTPUT_FOLDER": str(out), "TASK": 0, "BAND_SET": 0, "DEVICE": 1,
                 "TILE_SIZE": 128, "MODEL_FILE": str(tiny_models / "sar2eo_rgb.json")}, **extra)


def _summary(out, task="translate"):
    return json.loads((out / f"sar2eo_batch_{task}_summary.json").read_text())


def test_resume_redoes_an_output_damaged_in_place(provider, s1_samples, tiny_models, tmp_path):
    inp = _copies(tmp_path / "in", s1_samples[:2])
    out = tmp_path / "out"
    batch(_translate_params(inp, out, tiny_models))
    rec = {r["input"]: r for r in _summary(out)["files"]}[s1_samples[0].name]
    victim = out / rec["outputs"]["OUTPUT"]
    assert rec["checksums"]["OUTPUT"]["sha256"] == sha(victim)
    with rasterio.open(victim, "r+") as ds:        # still opens, same bands/size/CRS: only pixels changed
        ds.write(np.full((3, 16, 16), 1234, dtype="uint16"), window=((0, 16), (0, 16)))
    res = batch(_translate_params(inp, out, tiny_models))
    assert (res["PROCESSED"], res["SKIPPED"]) == (1, 1)
    recs = {r["input"]: r for r in _summary(out)["files"]}
    assert recs[s1_samples[0].name]["status"] == "processed"
    second = recs[s1_samples[1].name]
    assert second["status"] == "skipped" and "sha256 as recorded" in second["reason"]
    assert recs[s1_samples[0].name]["checksums"]["OUTPUT"]["sha256"] == sha(victim)


def test_overwrite_run_where_every_file_fails_keeps_the_earlier_outputs(provider, s2_samples, tiny_models, tmp_path):
    inp = _copies(tmp_path / "in", s2_samples[:2])
    out = tmp_path / "out"
    params = {"INPUT_FOLDER": str(inp), "OUTPUT_FOLDER": str(out), "TASK": 1, "DEVICE": 1, "TILE_SIZE": 128,
              "MODEL_FILE": str(tiny_models / "cloudmask.json")}
    batch(params)
    masks = sorted(out.glob("*_cloudmask.tif"))
    assert len(masks) == 2
    before = {p.name: sha(p) for p in masks}
    # THRESHOLD 0 is refused by every scene (it must lie strictly between 0 and 1).
    with pytest.raises(QgsProcessingException, match="Every file failed"):
        batch(dict(params, OVERWRITE=True, THRESHOLD=0.0))
    assert {p.name: sha(p) for p in sorted(out.glob("*_cloudmask.tif"))} == before
    assert _summary(out, "cloudmask")["counts"]["failed"] == 2


def test_translate_overwrite_where_every_file_fails_keeps_outputs_and_fails(provider, s1_samples, tiny_models,
                                                                           tmp_path):
    inp = _copies(tmp_path / "in", s1_samples[:2])
    out = tmp_path / "out"
    batch(_translate_params(inp, out, tiny_models))
    before = {p.name: sha(p) for p in out.glob("*.tif")}
    with pytest.raises(QgsProcessingException, match="Every file failed"):   # the dB samples declared linear
        batch(_translate_params(inp, out, tiny_models, OVERWRITE=True, UNITS=2))
    assert {p.name: sha(p) for p in out.glob("*.tif")} == before


def _broken_hash_model(tiny_models, folder: Path) -> Path:
    folder.mkdir()
    for suffix in (".json", ".safetensors"):
        shutil.copy(tiny_models / f"sar2eo_rgb{suffix}", folder / f"sar2eo_rgb{suffix}")
    card = folder / "sar2eo_rgb.json"
    data = json.loads(card.read_text())
    data["weights"]["sha256"] = "0" * 64
    card.write_text(json.dumps(data))
    return card


@pytest.mark.parametrize("problem", ["tile size 30", "wrong weights hash"])
def test_problem_failing_every_file_is_found_once_up_front(provider, s1_samples, tiny_models, tmp_path, monkeypatch,
                                                          problem):
    from sar2eo_cloud_plugin.processing import batch_algorithm as ba

    inp = _copies(tmp_path / "in", s1_samples[:2])
    out = tmp_path / "out"
    if problem == "tile size 30":
        params, match = _translate_params(inp, out, tiny_models, TILE_SIZE=30), "multiple of 4"
    else:
        card = _broken_hash_model(tiny_models, tmp_path / "model")
        params, match = _translate_params(inp, out, tiny_models, MODEL_FILE=str(card)), "does not match its card"
    monkeypatch.setattr(ba, "unreadable_reason", lambda _p: pytest.fail("a file was started"))
    with pytest.raises(QgsProcessingException, match=match) as err:
        batch(params)
    assert "Nothing was processed" in str(err.value)


def test_resume_removes_stale_partials_of_killed_runs(provider, s1_samples, tiny_models, tmp_path):
    inp = _copies(tmp_path / "in", s1_samples[:1])
    out = tmp_path / "out"
    batch(_translate_params(inp, out, tiny_models))
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    stale = out / f".{s1_samples[0].stem}_eo_rgb.{proc.pid}-{outputs.host_tag()}-abcdef.partial.tif"
    stale.write_bytes(b"half a GeoTIFF")
    past = time.time() - 600
    os.utime(stale, (past, past))
    res = batch(_translate_params(inp, out, tiny_models))
    assert res["SKIPPED"] == 1 and not stale.exists()


def test_batch_output_folder_on_a_read_only_mount(provider, s1_samples, tiny_models, tmp_path, readonly_fs):
    inp = _copies(tmp_path / "in", s1_samples[:1])
    with pytest.raises(QgsProcessingException) as err:
        batch(_translate_params(inp, readonly_fs / "sub", tiny_models))
    msg = str(err.value)
    assert str(readonly_fs / "sub") in msg and "read-only file system" in msg and "Traceback" not in msg


def test_summary_json_on_a_full_disk_keeps_the_old_summary(small_fs):
    """atomic_write_text (what the batch writes its summary with) on a REAL full tmpfs."""
    from sar2eo_cloud_plugin.core.errors import OutputError

    fs = small_fs(64)
    summary = fs / "sar2eo_batch_translate_summary.json"
    summary.write_text('{"old": true}')
    with pytest.raises(OutputError, match="no space left on device"):
        outputs.atomic_write_text(summary, "x" * 200_000)
    assert summary.read_text() == '{"old": true}'
    assert sorted(p.name for p in fs.iterdir()) == [summary.name]

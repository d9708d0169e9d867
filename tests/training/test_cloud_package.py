"""The cloud trainer (training/cloudmask.py, training/cloud_data.py) keeps the training package's contracts:
options as data with a help line each, unknown keys refused, TrainingError subclasses instead of SystemExit,
the one checkpoint loader, and export refusing metrics measured on another checkpoint (issue 12).

Checkpoints here are GENERATED: randomly initialised U-Nets saved with common.save_checkpoint."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from training import cloud_data, cloudmask, common

REPO = Path(__file__).resolve().parents[2]


def test_every_cloud_option_has_help_and_unknown_keys_are_refused():
    leaves = dict(common.option_leaves(cloudmask.OPTIONS))
    assert all(isinstance(o, common.Option) and o.help.strip() for o in leaves.values())
    # every key the data code reads is an option (the teacher keys included)
    for key in ("data.teacher_cache", "data.val_dates", "data.synthetic_share", "data.clear_max",
                "data.opacity_label", "data.val_synthetic", "data.shared_data", "data.holdout", "data.source"):
        assert key in leaves, key
    with pytest.raises(common.ConfigError, match=r"data\.teacher_cach\b"):
        cloudmask.config({"data": {"teacher_cach": "x"}})
    with pytest.raises(common.ConfigError, match=r"train\.epoch\b"):
        cloudmask.config({"train": {"epoch": 3}})
    with pytest.raises(common.ConfigError, match="unknown config key"):
        cloudmask.config({"modle": {}})
    with pytest.raises(common.ConfigError, match="data.kind"):
        cloudmask.config({"data": {"kind": "cloudsen"}})
    cfg = cloudmask.config({"data": {"kind": "teacher", "val_dates": ["20170617"]}, "_config_file": "c.yaml"})
    assert cfg["data"]["val_dates"] == ["20170617"] and cfg["data"]["synthetic_share"] == 0.6
    assert cfg["_config_file"] == "c.yaml" and cfg["train"]["focal_weight"] == 0.25


def test_every_cloudmask_config_is_accepted():
    paths = sorted((REPO / "configs").glob("*cloudmask*.yaml"))
    assert paths
    for path in paths:
        cloudmask.config(common.load_config(str(path)))


def test_cli_lists_cloud_options_and_exits_2_on_errors(tmp_path, capsys):
    from training.__main__ import main

    assert main(["cloudmask", "--help-config"]) == 0
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == len(dict(common.option_leaves(cloudmask.OPTIONS)))
    assert "data.val_dates (default [])" in out and "data.opacity_label (default 0.3)" in out
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {kind: teacher, val_date: ['20170617']}\n")
    assert main(["cloudmask", "train", "--config", str(cfg)]) == 2
    assert "data.val_date" in capsys.readouterr().err


def test_cloud_modules_raise_training_errors_not_systemexit(tmp_path, monkeypatch):
    # the AST scan for SystemExit and assert covers these modules in test_package.LIBRARY_MODULES
    with pytest.raises(common.ConfigError, match="does not exist"):
        cloudmask.build_model(cloudmask.config({"model": {"imagenet_weights": str(tmp_path / "nope.pth")}}))
    with pytest.raises(common.DataError, match="No CloudSEN12 cache"):
        cloud_data.load_cloudsen12_items(tmp_path / "empty")
    with pytest.raises(common.DataError, match="no teacher-labelled"):
        cloud_data.TeacherCloudSamples([])
    with pytest.raises(common.ConfigError, match="unknown data.kind"):
        cloud_data.build_cloud_items({"kind": "nope"}, 0, log=lambda m: None)
    with pytest.raises(common.DataError, match="no real Sentinel-2 patches"):
        cloud_data.find_real_s2(tmp_path)
    assert issubclass(cloud_data.CloudDataUnavailable, common.TrainingError)


def test_resume_without_checkpoint_is_a_checkpoint_error(cloudsen12_cache, tmp_path, capsys):
    cfg = {"threads": 1, "run_dir": str(tmp_path / "run"),
           "data": {"kind": "cloudsen12", "cache_dir": str(cloudsen12_cache), "n_samples": 5, "auto_localise": False,
                    "resize": 64, "val_resize": 64, "num_workers": 0},
           "train": {"monitor_hand_labelled": False}}
    with pytest.raises(common.CheckpointError, match="--resume: no checkpoint"):
        cloudmask.train(cfg, resume=True)


def _unet_run(tmp_path, step=5):
    """A run folder holding a GENERATED (random) U-Net as ckpt_best; returns (config, net, stem)."""
    import torch

    from sar2eo_cloud_plugin.core import networks

    torch.manual_seed(step)
    net = networks.build_cloud_unet()
    stem = tmp_path / "run" / "ckpt_best"
    common.save_checkpoint(stem, {"unet": net}, {}, {"global_step": step, "epochs_completed": 1})
    return {"run_dir": str(tmp_path / "run")}, net, stem


def test_cloud_checkpoints_go_through_the_one_loader(tmp_path):
    import torch

    cfg, net, stem = _unet_run(tmp_path)
    back, meta, got = cloudmask._load_unet(cloudmask.config(cfg), Path(str(stem) + ".safetensors"))
    assert got == stem and meta["global_step"] == 5 and not back.training
    for k, v in back.state_dict().items():
        assert torch.equal(v, net.state_dict()[k]), k
    with pytest.raises(common.CheckpointError, match="does not fit"):
        cloudmask._load_unet(cloudmask.config({"model": {"encoder": "efficientnet-b0"}}), stem)
    with pytest.raises(common.CheckpointError, match="no checkpoint"):
        cloudmask._load_unet(cloudmask.config(cfg), tmp_path / "run" / "ckpt_last")
    src = (REPO / "training" / "cloudmask.py").read_text(encoding="utf-8")
    assert "def checkpoint_identity" not in src and "net.unet." not in src


def test_export_refuses_metrics_of_another_checkpoint(tmp_path):
    cfg, _net, stem = _unet_run(tmp_path)
    ev_path = tmp_path / "run" / "eval" / "metrics.json"
    with pytest.raises(common.TrainingError, match="evaluate` first"):
        cloudmask.export(cfg, models_dir=str(tmp_path / "models"))
    measured = common.checkpoint_identity(stem)
    _unet_run(tmp_path, step=6)  # another checkpoint written over ckpt_best after the evaluation
    common.write_json(ev_path, {"checkpoint": measured, "scores": {}})
    with pytest.raises(common.CheckpointError, match="evaluate this checkpoint first"):
        cloudmask.export(cfg, models_dir=str(tmp_path / "models"))
    # a metrics file in the format written before the trainers shared one (identity under "identity")
    legacy = {"checkpoint": str(stem), "identity": {"checkpoint": str(stem), "sha256": measured["sha256"],
                                                    "step": measured["step"], "epoch": 1}}
    common.write_json(ev_path, legacy)
    with pytest.raises(common.CheckpointError, match="evaluate this checkpoint first"):
        cloudmask.export(cfg, models_dir=str(tmp_path / "models"))
    now = common.checkpoint_identity(stem)
    ok = cloudmask.legacy_metrics(json.loads(json.dumps(dict(legacy, identity=dict(legacy["identity"], **now)))))
    assert common.check_metrics_match(ok, stem, ev_path)["sha256"] == now["sha256"]
    assert not (tmp_path / "models").exists()   # nothing was exported

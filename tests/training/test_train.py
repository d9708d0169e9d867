"""Few-iteration training runs (tiny networks for speed), resume, evaluate with the baseline, export -> plugin load."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sar2eo_cloud_plugin.core import modelfile
from training import cloudmask, common, cyclegan


def sar_cfg(tmp_path: Path, root: Path, **train) -> dict:
    return {"band_set": "rgbn", "seed": 0, "threads": 2, "run_dir": str(tmp_path / "run"),
            "data": {"kind": "sen12ms", "root": str(root), "extract_to": str(tmp_path / "ext"), "crop_size": 32,
                     "val_fraction": 0.34, "num_workers": 0},
            "model": {"ngf": 8, "n_blocks": 2, "ndf": 8, "n_layers_d": 2},
            "train": dict({"epochs": 4, "decay_epochs": 2, "batch_size": 1, "lr": 1e-3, "log_every": 1}, **train),
            "eval": {"figures": 1}}


def test_cyclegan_trains_resumes_evaluates_exports(sen12ms_root, tmp_path):
    cfg = sar_cfg(tmp_path, sen12ms_root)
    out = cyclegan.train(cfg)
    cyc = [h["cycle_A"] + h["cycle_B"] for h in out["history"]]
    assert len(cyc) >= 12
    assert np.mean(cyc[-3:]) < np.mean(cyc[:3]), cyc  # the cycle loss goes down
    run = Path(cfg["run_dir"])
    meta = json.loads((run / "ckpt_last.json").read_text())
    assert meta["epochs_completed"] == 4 and "identity loss disabled" in meta["identity"]
    assert len(meta["train_band_mean"]) == 4

    # resume: two more epochs continue the step count and the optimiser state
    cfg2 = sar_cfg(tmp_path, sen12ms_root, epochs=6)
    out2 = cyclegan.train(cfg2, resume=True)
    assert out2["epochs_completed"] == 6 and out2["steps"] > out["steps"]
    assert "resumed from" in (run / "train.log").read_text()

    ev = cyclegan.evaluate(cfg2)
    assert ev["model"]["ndvi"]["applicable"] and ev["baseline"]["psnr"] is not None
    assert set(ev["beats_baseline"]) == {"psnr", "ssim"}
    assert list((run / "eval").glob("*.png"))
    assert ev["checkpoint"]["step"] == out2["steps"] and "core.inference" in ev["path"]

    models = tmp_path / "models"
    path = cyclegan.export(cfg2, models_dir=str(models))
    net, card = modelfile.load_model(path, expected_task="sar2eo")
    assert card.architecture_args == {"input_nc": 2, "output_nc": 4, "ngf": 8, "n_blocks": 2}
    assert card.weights["dtype"] == "float16" and len(card.weights["sha256"]) == 64
    assert card.weights["sha256"] == ev["scored_weights_sha256"]   # the file scored is the file shipped
    assert card.metrics["baseline"]["psnr_db"] == pytest.approx(ev["baseline"]["psnr"])
    assert card.metrics["beats_baseline"] == ev["beats_baseline"]
    assert card.metrics["experimental"] == (not ev["targets"]["all"])
    if card.metrics["experimental"]:
        assert card.notes.startswith("EXPERIMENTAL")
    assert "identity loss disabled" in card.training["identity_loss"]
    assert card.training["resolution_m"] == 10 and card.training["crop_px"] == 32
    assert card.training["amp"] == "none" and card.training["channels_last"] is False  # the run's precision

    # metrics of an older checkpoint are not exported onto a newer one
    cyclegan.train(sar_cfg(tmp_path, sen12ms_root, epochs=7), resume=True)
    with pytest.raises(common.CheckpointError, match="evaluate this checkpoint first"):
        cyclegan.export(cfg2, models_dir=str(models))


def test_paired_l1_term_is_used_when_asked(sen12ms_root, tmp_path):
    cfg = sar_cfg(tmp_path, sen12ms_root, epochs=1, decay_epochs=1, lambda_L1=10.0)
    out = cyclegan.train(cfg)
    assert all(h["L1"] > 0 for h in out["history"])
    assert "lambda_L1 = 10.0" in (Path(cfg["run_dir"]) / "train.log").read_text()


def test_checkpoints_are_safetensors_and_json_only(tmp_path):
    import torch

    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    common.save_checkpoint(tmp_path / "ck", {"n": net}, {"o": opt}, {"epoch": 3})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.json", "ck.safetensors"]
    net2 = torch.nn.Linear(3, 2)
    opt2 = torch.optim.Adam(net2.parameters(), lr=0.5)
    meta = common.load_checkpoint(tmp_path / "ck", {"n": net2}, {"o": opt2})
    assert meta["epoch"] == 3 and opt2.param_groups[0]["lr"] == 0.1
    assert torch.equal(net.weight, net2.weight)
    assert torch.equal(opt.state_dict()["state"][0]["exp_avg"], opt2.state_dict()["state"][0]["exp_avg"])


def test_unet_checkpoint_keeps_only_the_last_history_steps(cloudsen12_cache, tmp_path):
    """train.history_steps bounds the per-step records of the cloud trainer as it does the CycleGAN's: a long run
    must not grow its checkpoint JSON without end."""
    cfg = {"seed": 0, "threads": 2, "run_dir": str(tmp_path / "crun"),
           "data": {"kind": "cloudsen12", "cache_dir": str(cloudsen12_cache), "n_samples": 5, "auto_localise": False,
                    "val_fraction": 0.2, "resize": 32, "val_resize": 32, "samples_per_epoch": 6, "jitter": False,
                    "num_workers": 0},
           "train": {"epochs": 1, "batch_size": 2, "log_every": 1, "history_steps": 2,
                     "monitor_hand_labelled": False},
           "eval": {"figures": 1, "batch_size": 2}}
    out = cloudmask.train(cfg)
    assert [h["step"] for h in out["history"]] == [2, 3]
    meta = json.loads((Path(cfg["run_dir"]) / "ckpt_last.json").read_text())
    assert [h["step"] for h in meta["history"]] == [2, 3] and meta["global_step"] == 3


def test_unet_trains_evaluates_exports(cloudsen12_cache, tmp_path):
    cfg = {"seed": 0, "threads": 2, "run_dir": str(tmp_path / "crun"),
           "data": {"kind": "cloudsen12", "cache_dir": str(cloudsen12_cache), "n_samples": 5, "auto_localise": False,
                    "val_fraction": 0.2, "resize": 64, "val_resize": 64, "samples_per_epoch": 4, "jitter": False,
                    "num_workers": 0},
           "train": {"epochs": 3, "batch_size": 2, "lr": 3e-3, "patience": 5, "log_every": 1},
           "eval": {"figures": 1, "batch_size": 2}}
    out = cloudmask.train(cfg)
    losses = [h["loss"] for h in out["history"]]
    assert len(losses) == 6 and np.mean(losses[-2:]) < np.mean(losses[:2]), losses
    run = Path(cfg["run_dir"])
    assert common.checkpoint_exists(run / "ckpt_best") and common.checkpoint_exists(run / "ckpt_last")
    assert "trained from scratch" in (run / "train.log").read_text()
    ev = cloudmask.evaluate(cfg)
    s = ev["scores"]
    pixels = s["tp"] + s["fp"] + s["fn"] + s["tn"]
    assert pixels > 0 and s["accuracy"] == pytest.approx((s["tp"] + s["tn"]) / pixels)
    assert (run / "eval" / "cloudmask_examples.png").is_file()
    path = cloudmask.export(cfg, models_dir=str(tmp_path / "models"))
    net, card = modelfile.load_model(path, expected_task="cloudmask")
    assert card.metrics["validation"]["pixel_accuracy"] == pytest.approx(ev["scores"]["accuracy"])
    assert card.metrics["checkpoint"]["sha256"] == ev["checkpoint"]["sha256"]
    assert card.onnx and (tmp_path / "models" / card.onnx["file"]).is_file()   # the card names its ONNX graph
    assert card.training["init"].startswith("trained from scratch")
    assert card.training["amp"] == "none" and card.training["channels_last"] is False   # the run's precision


def test_cli_parses_and_refuses_export_without_evaluation(tmp_path, sen12ms_root, capsys):
    from training.__main__ import main

    cfg = tmp_path / "c.yaml"
    import yaml

    cfg.write_text(yaml.safe_dump(sar_cfg(tmp_path, sen12ms_root)))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "ckpt_last.json").write_text("{}")
    assert main(["sar2eo", "export", "--config", str(cfg), "--set", "train.epochs=1"]) == 2
    assert "evaluate" in capsys.readouterr().err
    loaded = common.load_config(str(cfg), ["train.epochs=7", "data.flip=false"])
    assert loaded["train"]["epochs"] == 7 and loaded["data"]["flip"] is False


def test_imagenet_encoder_weights_only_from_a_local_file(tmp_path):
    """GENERATED stand-in for an ImageNet checkpoint: a random encoder's tensors saved as safetensors."""
    import torch
    from safetensors.torch import save_file

    from sar2eo_cloud_plugin.core import networks

    src = networks.build_cloud_unet()
    save_file({k: v.contiguous() for k, v in src.encoder.state_dict().items()}, str(tmp_path / "enc.safetensors"))
    cfg = cloudmask.config({"model": {"imagenet_weights": str(tmp_path / "enc.safetensors")}})
    net, note = cloudmask.build_model(cfg, log=lambda m: None)
    assert note.startswith("encoder initialised from ImageNet weights")
    k = next(iter(src.encoder.state_dict()))
    assert torch.equal(net.encoder.state_dict()[k], src.encoder.state_dict()[k])
    _, note = cloudmask.build_model(cloudmask.config({}), log=lambda m: None)
    assert note.startswith("trained from scratch")
    with pytest.raises(common.ConfigError, match="does not exist"):
        cloudmask.build_model(cloudmask.config({"model": {"imagenet_weights": str(tmp_path / "nope.pth")}}))

"""Mixed precision (train.amp) and channels_last (train.channels_last): the shared helpers of training.common and
their use in the CycleGAN training step, on CPU with tiny networks and GENERATED random inputs (a couple of steps;
the values do not matter, only that the step runs, stays finite and moves the parameters)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from training import common, cyclegan

torch = pytest.importorskip("torch")


def _setup(amp: str = "none", channels_last: bool = False, pool_size: int = 2):
    torch.manual_seed(0)
    cfg = cyclegan.config({"band_set": "rgb", "model": {"ngf": 4, "n_blocks": 1, "ndf": 4, "n_layers_d": 1},
                           "train": {"amp": amp, "channels_last": channels_last, "lambda_L1": 1.0,
                                     "pool_size": pool_size}})
    t = cfg["train"]
    nets = cyclegan.prepare_nets(cyclegan.build_nets(cfg), t, "cpu")
    opts = {"G": torch.optim.Adam(list(nets["G_A"].parameters()) + list(nets["G_B"].parameters()), lr=1e-2),
            "D": torch.optim.Adam(list(nets["D_A"].parameters()) + list(nets["D_B"].parameters()), lr=1e-2)}
    pools = (cyclegan.ImagePool(pool_size), cyclegan.ImagePool(pool_size))
    a = torch.rand(2, 2, 16, 16) * 2 - 1   # GENERATED inputs
    b = torch.rand(2, 3, 16, 16) * 2 - 1
    return t, nets, opts, pools, a, b


def _params(nets):
    return {f"{n}.{k}": p.detach().clone() for n, net in nets.items() for k, p in net.named_parameters()}


def _changed(before, nets) -> bool:
    after = _params(nets)
    return all(not torch.equal(before[k], after[k]) for k in before if k.endswith("weight"))


def test_bf16_autocast_runs_on_cpu_with_finite_losses():
    t, nets, opts, pools, a, b = _setup(amp="bf16")
    before = _params(nets)
    for _ in range(2):
        rec = cyclegan.training_step(nets, opts, pools, a, b, t)
        assert rec and all(math.isfinite(v) for v in rec.values()), rec
    # autocast really ran: the generators' outputs (kept in the image pools) are bfloat16 ...
    assert pools[1].images[0].dtype == torch.bfloat16
    # ... while the master weights stay float32 and every weight moved
    assert all(p.dtype == torch.float32 for net in nets.values() for p in net.parameters())
    assert _changed(before, nets)


def test_without_amp_the_step_stays_float32():
    t, nets, opts, pools, a, b = _setup(amp="none")
    cyclegan.training_step(nets, opts, pools, a, b, t)
    assert pools[1].images[0].dtype == torch.float32


def test_channels_last_runs_and_the_parameters_change(tmp_path):
    t, nets, opts, pools, a, b = _setup(channels_last=True)
    conv = nets["G_A"].model[1].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    before = _params(nets)
    for _ in range(2):
        rec = cyclegan.training_step(nets, opts, pools, a, b, t)
        assert all(math.isfinite(v) for v in rec.values()), rec
    assert _changed(before, nets)
    assert nets["G_A"].model[1].weight.is_contiguous(memory_format=torch.channels_last)
    # the helper converts 4-D batches and leaves everything else alone
    assert common.channels_last(a).is_contiguous(memory_format=torch.channels_last)
    vec = torch.zeros(3)
    assert common.channels_last(vec) is vec and common.channels_last(a, enabled=False) is a
    # a checkpoint of channels_last networks loads into plain (NCHW) networks with the same values
    common.save_checkpoint(tmp_path / "ck", {"G_A": nets["G_A"]}, {}, {"global_step": 2})
    cfg = cyclegan.config({"band_set": "rgb", "model": {"ngf": 4, "n_blocks": 1, "ndf": 4, "n_layers_d": 1}})
    G, _ = cyclegan.generator_from_checkpoint(cfg, tmp_path / "ck")
    for k, v in G.state_dict().items():
        assert torch.equal(v, nets["G_A"].state_dict()[k]), k


def test_fp16_is_refused_on_cpu_and_unknown_values_in_the_config():
    for make in (common.autocast, common.grad_scaler, common.check_amp):
        with pytest.raises(common.ConfigError, match=r"train\.amp=fp16 needs a CUDA device"):
            make("fp16", "cpu")
    with pytest.raises(common.ConfigError, match=r"train\.amp must be one of none, bf16, fp16"):
        cyclegan.config({"train": {"amp": "fp32"}})
    with pytest.raises(common.ConfigError, match=r"train\.channels_last"):
        cyclegan.config({"train": {"channels_last": "yes"}})
    assert cyclegan.config({"train": {"amp": "fp16"}})["train"]["amp"] == "fp16"  # valid value; device at train
    # the shared training step will not make a throw-away scaler for fp16
    t, nets, opts, pools, a, b = _setup()
    with pytest.raises(common.TrainingError, match="GradScaler"):
        cyclegan.training_step(nets, opts, pools, a, b, dict(t, amp="fp16"))


def test_train_refuses_fp16_on_cpu_before_reading_data(tmp_path):
    cfg = {"device": "cpu", "run_dir": str(tmp_path / "run"), "data": {"root": str(tmp_path / "missing")},
           "train": {"amp": "fp16"}}
    with pytest.raises(common.ConfigError, match=r"train\.amp=fp16 needs a CUDA device, but this run is on cpu"):
        cyclegan.train(cfg)


def test_an_enabled_grad_scaler_skips_non_finite_steps():
    """The fp16 recipe's loss scaler on CPU (torch allows one there): a step whose gradients are not finite must
    leave the weights untouched and halve the scale, i.e. every optimiser step goes through ``scaler.step``."""
    t, nets, opts, pools, a, b = _setup(pool_size=0)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    before = _params(nets)
    bad = a.clone()
    bad[0, 0, 0, 0] = float("nan")
    cyclegan.training_step(nets, opts, pools, bad, b, t, scaler=scaler)
    after = _params(nets)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert scaler.get_scale() == 512.0
    cyclegan.training_step(nets, opts, pools, a, b, t, scaler=scaler)   # a finite step goes through
    assert _changed(before, nets) and scaler.get_scale() == 512.0


@pytest.mark.parametrize("task", ["sar2eo", "cloudmask"])
def test_options_are_listed_by_help_config(task, capsys):
    from training.__main__ import main

    assert main([task, "--help-config"]) == 0
    out = capsys.readouterr().out
    assert "train.amp (default 'none'): mixed precision" in out
    assert "train.channels_last (default False): " in out


def test_a_bf16_channels_last_run_records_its_precision(sen12ms_root, tmp_path):
    cfg = {"band_set": "rgb", "seed": 0, "threads": 1, "device": "cpu", "run_dir": str(tmp_path / "run"),
           "data": {"kind": "sen12ms", "root": str(sen12ms_root), "extract_to": str(tmp_path / "ext"),
                    "crop_size": 16, "val_fraction": 0.34, "num_workers": 0, "baseline_pairs": 1},
           "model": {"ngf": 4, "n_blocks": 1, "ndf": 4, "n_layers_d": 1},
           "train": {"epochs": 1, "decay_epochs": 1, "amp": "bf16", "channels_last": True}}
    out = cyclegan.train(cfg)
    assert out["steps"] > 0 and all(math.isfinite(h["G_total"]) for h in out["history"])
    run = Path(cfg["run_dir"])
    assert "precision: train.amp = bf16; train.channels_last = True" in (run / "train.log").read_text()
    meta = json.loads((run / "ckpt_last.json").read_text())
    assert meta["config"]["train"]["amp"] == "bf16" and meta["config"]["train"]["channels_last"] is True


# ----------------------------------------------------------------------------------------------- cloud U-Net
def _cloud_setup(amp: str = "none", channels_last: bool = False):
    from training import cloudmask

    torch.manual_seed(0)
    t = cloudmask.config({"train": {"amp": amp, "channels_last": channels_last}})["train"]
    net, _ = cloudmask.build_model(cloudmask.config({}), log=lambda m: None)
    common.channels_last(net, channels_last).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    x = torch.rand(2, 3, 32, 32)                    # GENERATED inputs
    y = (torch.rand(2, 1, 32, 32) > 0.7).float()
    return cloudmask, t, net, opt, x, y


def test_cloud_bf16_channels_last_step_on_cpu_is_finite_and_moves_the_weights():
    cloudmask, t, net, opt, x, y = _cloud_setup(amp="bf16", channels_last=True)
    out_dtypes = []
    net.register_forward_hook(lambda m, i, o: out_dtypes.append(o.dtype))
    before = {k: p.detach().clone() for k, p in net.named_parameters()}
    scaler = common.grad_scaler("bf16", "cpu")
    loss_fn = cloudmask.unet_loss(t)
    for _ in range(2):
        loss = cloudmask.training_step(net, opt, scaler, loss_fn, x, y, t)
        assert loss.dtype == torch.float32 and math.isfinite(loss.item())
    assert out_dtypes == [torch.bfloat16, torch.bfloat16]   # autocast really ran the forward pass in bf16
    used = [k for k, p in net.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert len(used) > 100   # the U-Net's encoder, decoder and head (not the unused classifier layers)
    after = dict(net.named_parameters())
    assert all(p.dtype == torch.float32 for p in after.values())
    assert all(not torch.equal(before[k], after[k].detach()) for k in used)
    conv = net.segmentation_head[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()


def test_cloud_config_refuses_bad_precision_values_and_train_refuses_fp16_on_cpu(tmp_path):
    from training import cloudmask

    with pytest.raises(common.ConfigError, match=r"train\.amp must be one of none, bf16, fp16"):
        cloudmask.config({"train": {"amp": "fp32"}})
    with pytest.raises(common.ConfigError, match=r"train\.channels_last must be true or false"):
        cloudmask.config({"train": {"channels_last": "yes"}})
    assert cloudmask.config({"train": {"amp": "fp16"}})["train"]["amp"] == "fp16"  # valid value; device at train
    cfg = {"device": "cpu", "run_dir": str(tmp_path / "run"), "train": {"amp": "fp16"},
           "data": {"kind": "cloudsen12", "cache_dir": str(tmp_path / "missing"), "auto_localise": False}}
    with pytest.raises(common.ConfigError, match=r"train\.amp=fp16 needs a CUDA device, but this run is on cpu"):
        cloudmask.train(cfg)


def test_a_bf16_channels_last_cloud_run_records_its_precision(cloudsen12_cache, tmp_path):
    from training import cloudmask

    cfg = {"seed": 0, "threads": 1, "device": "cpu", "run_dir": str(tmp_path / "run"),
           "data": {"kind": "cloudsen12", "cache_dir": str(cloudsen12_cache), "n_samples": 5, "auto_localise": False,
                    "val_fraction": 0.2, "resize": 32, "val_resize": 32, "samples_per_epoch": 2, "jitter": False,
                    "num_workers": 0},
           "train": {"epochs": 1, "batch_size": 2, "log_every": 1, "monitor_hand_labelled": False, "amp": "bf16",
                     "channels_last": True}}
    out = cloudmask.train(cfg)
    assert out["steps"] == 1 and all(math.isfinite(h["loss"]) for h in out["history"])
    run = Path(cfg["run_dir"])
    assert "precision: train.amp = bf16; train.channels_last = True" in (run / "train.log").read_text()
    meta = json.loads((run / "ckpt_last.json").read_text())
    assert meta["config"]["train"]["amp"] == "bf16" and meta["config"]["train"]["channels_last"] is True
    assert meta["grad_scaler"] is None   # only fp16 has scaler state to resume

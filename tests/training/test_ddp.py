"""torchrun with 2 CPU processes on the gloo backend (tiny CycleGAN; ~1 min on 2 cores)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_train import sar_cfg

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_torchrun_two_processes_gloo(sen12ms_root, tmp_path):
    cfg = sar_cfg(tmp_path, sen12ms_root, epochs=2, decay_epochs=1)
    cfg["threads"] = 1
    cfg["model"] = {"ngf": 4, "n_blocks": 1, "ndf": 4, "n_layers_d": 2}
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", "29533", "-m", "training", "sar2eo", "train", "--config", str(path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        (tmp_path / "torchrun.out").write_text(proc.stdout + "\n----\n" + proc.stderr)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = (Path(cfg["run_dir"]) / "train.log").read_text()
    assert "world size 2" in log
    assert "parameters identical on all 2 ranks: True" in log
    assert log.count("epoch 2/2") == 1  # only rank 0 logs
    assert sorted(p.name for p in Path(cfg["run_dir"]).iterdir()) == ["ckpt_last.json", "ckpt_last.safetensors",
                                                                      "train.log"]


@pytest.mark.slow
def test_torchrun_two_processes_gloo_unet(tmp_path):
    """The U-Net under DistributedDataParallel (2 CPU processes, gloo), on the real patches with rule labels."""
    cfg = {"seed": 0, "threads": 1, "run_dir": str(tmp_path / "run"),
           "data": {"kind": "bigearthnet_pseudo", "root": str(REPO / "sample_data"), "holdout": ["36_85"],
                    "resize": None, "crop": 64, "val_resize": None, "samples_per_epoch": 8, "num_workers": 0},
           "train": {"epochs": 2, "batch_size": 2, "log_every": 1}, "eval": {"figures": 1, "batch_size": 2}}
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", "29534", "-m", "training", "cloudmask", "train", "--config", str(path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = (Path(cfg["run_dir"]) / "train.log").read_text()
    assert "world size 2" in log and "parameters identical on all 2 ranks: True" in log
    assert log.count("epoch 2:") == 1

"""The training package's own contracts: options as data, exceptions instead of SystemExit, one checkpoint loader,
metrics tied to their checkpoint, scheduler state, bounded history, deterministic model files."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest

from sar2eo_cloud_plugin.core import modelfile
from training import common, cyclegan

REPO = Path(__file__).resolve().parents[2]


def test_every_option_has_help_and_unknown_keys_are_refused():
    leaves = dict(common.option_leaves(cyclegan.OPTIONS))
    assert leaves and all(isinstance(o, common.Option) and o.help.strip() for o in leaves.values())
    lines = common.describe_options(cyclegan.OPTIONS)
    assert len(lines) == len(leaves) and any(line.startswith("train.lambda_L1 (default 0.0)") for line in lines)
    with pytest.raises(ValueError, match="help"):
        common.Option(1, "")
    with pytest.raises(common.ConfigError, match=r"train\.lamda_L1"):
        cyclegan.config({"train": {"lamda_L1": 1.0}})
    with pytest.raises(common.ConfigError, match="unknown config key"):
        cyclegan.config({"typo_top_level": 1})
    with pytest.raises(common.ConfigError, match="band_set"):
        cyclegan.config({"band_set": "rgbx"})
    cfg = cyclegan.config({"train": {"lambda_L1": 5.0}, "_config_file": "x.yaml"})
    assert cfg["train"]["lambda_L1"] == 5.0 and cfg["train"]["lambda_cycle"] == 10.0
    assert cfg["_config_file"] == "x.yaml"


def test_every_bundled_sar2eo_config_is_accepted():
    for path in sorted((REPO / "configs").glob("*sar2eo*.yaml")):
        cyclegan.config(common.load_config(str(path)))


LIBRARY_MODULES = ("common.py", "cyclegan.py", "sar2eo_data.py", "metrics.py", "cloudmask.py", "cloud_data.py")


def test_library_code_raises_no_systemexit_and_has_no_assert():
    """SystemExit and assert belong to the CLI and the tests; library modules (both trainers) raise TrainingError
    subclasses and define no SystemExit subclass."""
    for name in LIBRARY_MODULES:
        tree = ast.parse((REPO / "training" / name).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            assert not isinstance(node, ast.Assert), f"{name}:{node.lineno} validates with assert"
            if isinstance(node, ast.Raise) and node.exc is not None:
                call = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
                assert getattr(call, "id", getattr(call, "attr", "")) != "SystemExit", f"{name}:{node.lineno}"
            if isinstance(node, ast.ClassDef):
                assert "SystemExit" not in {getattr(b, "id", getattr(b, "attr", "")) for b in node.bases}, node.name
    with pytest.raises(common.ConfigError, match="key=value"):
        common.load_config(None, ["no_equals_sign"])


def test_cli_prints_errors_and_exits_2(tmp_path, capsys):
    from training.__main__ import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text("train: {epoch: 3}\n")
    assert main(["sar2eo", "train", "--config", str(cfg)]) == 2
    assert "train.epoch" in capsys.readouterr().err
    assert main(["sar2eo", "--help-config"]) == 0
    assert "data.val_products" in capsys.readouterr().out


def _tiny_nets():
    cfg = cyclegan.config({"band_set": "rgb", "model": {"ngf": 4, "n_blocks": 1, "ndf": 4, "n_layers_d": 1}})
    return cfg, cyclegan.build_nets(cfg)


def test_one_loader_partial_loads_and_clear_errors(tmp_path):
    import torch

    cfg, nets = _tiny_nets()
    opt = torch.optim.Adam(nets["G_A"].parameters(), lr=1e-3)
    common.save_checkpoint(tmp_path / "ck", nets, {"G": opt}, {"global_step": 7})
    G, meta = cyclegan.generator_from_checkpoint(cfg, tmp_path / "ck.json")
    assert meta["global_step"] == 7
    for k, v in G.state_dict().items():
        assert torch.equal(v, nets["G_A"].state_dict()[k])
    with pytest.raises(common.CheckpointError, match="no network 'unet'"):
        common.load_checkpoint(tmp_path / "ck", {"unet": torch.nn.Linear(1, 1)})
    wide = cyclegan.config({"band_set": "rgb", "model": {"ngf": 8, "n_blocks": 1, "ndf": 4, "n_layers_d": 1}})
    with pytest.raises(common.CheckpointError, match="does not fit"):
        cyclegan.generator_from_checkpoint(wide, tmp_path / "ck")
    with pytest.raises(common.CheckpointError, match="no checkpoint"):
        common.load_checkpoint(tmp_path / "missing", nets)
    # no module of the package reads checkpoint tensors on its own
    for name in ("cyclegan.py", "sar2eo_data.py", "metrics.py", "plots.py"):
        assert "load_file(" not in (REPO / "training" / name).read_text(encoding="utf-8"), name


def test_metrics_of_another_checkpoint_are_refused(tmp_path):
    import torch

    _cfg, nets = _tiny_nets()
    common.save_checkpoint(tmp_path / "a", nets, {}, {"global_step": 10})
    ident = common.checkpoint_identity(tmp_path / "a")
    assert len(ident["sha256"]) == 64 and ident["step"] == 10
    ev = {"checkpoint": ident}
    assert common.check_metrics_match(ev, tmp_path / "a", tmp_path / "m.json")["sha256"] == ident["sha256"]
    with torch.no_grad():
        next(nets["G_A"].parameters()).add_(1.0)
    common.save_checkpoint(tmp_path / "a", nets, {}, {"global_step": 10})  # same step, other weights
    with pytest.raises(common.CheckpointError, match="evaluate this checkpoint first"):
        common.check_metrics_match(ev, tmp_path / "a", tmp_path / "m.json")
    with pytest.raises(common.CheckpointError):
        common.check_metrics_match({}, tmp_path / "a", tmp_path / "m.json")


def test_scheduler_state_is_saved_and_restored(tmp_path):
    import torch

    def fresh(epochs, decay):
        net = torch.nn.Linear(1, 1)
        opt = torch.optim.Adam(net.parameters(), lr=2e-4)
        return net, opt, torch.optim.lr_scheduler.LambdaLR(opt, cyclegan.lr_lambda(epochs, decay))

    net, opt, sch = fresh(6, 3)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sch.step()
    net2, opt2, sch2 = fresh(6, 3)
    for _ in range(4):
        opt2.step()
        sch2.step()
    common.save_checkpoint(tmp_path / "s", {"n": net2}, {"o": opt2}, {"schedulers": {"G": sch2.state_dict()}})
    net3, opt3, sch3 = fresh(6, 3)
    meta = common.load_checkpoint(tmp_path / "s", {"n": net3}, {"o": opt3})
    cyclegan.restore_schedulers({"G": sch3}, json.loads(json.dumps(meta)), 4)
    assert opt3.param_groups[0]["lr"] == pytest.approx(lrs[4])
    sch3.step()
    assert opt3.param_groups[0]["lr"] == pytest.approx(lrs[5])
    with pytest.raises(common.CheckpointError, match="does not match"):
        cyclegan.restore_schedulers({"G": fresh(6, 3)[2]}, meta, 3)
    with pytest.raises(common.CheckpointError, match="no state for scheduler 'D'"):
        cyclegan.restore_schedulers({"D": fresh(6, 3)[2]}, meta, 4)


def test_history_is_bounded():
    h = common.bounded_history([{"step": i} for i in range(50)], 10)
    for i in range(50, 80):
        h.append({"step": i})
    assert len(h) == 10 and h[0]["step"] == 70 and h[-1]["step"] == 79


def test_model_files_are_byte_identical_across_processes(tmp_path):
    """safetensors keeps its metadata in a hash map; the plugin's writer sorts it so a re-export gives the same
    sha256 (checked in two fresh interpreters, whose hash seeds differ)."""
    import subprocess
    import sys

    code = ("import sys, torch; from sar2eo_cloud_plugin.core import cards, modelfile, networks; "
            "torch.manual_seed(0); net = networks.ResnetGenerator(2, 3, 4, 1); "
            "p = modelfile.save_model(net, cards.sar2eo_card('rgb', ngf=4, n_blocks=1), sys.argv[1]); "
            "print(modelfile.read_card(p).weights['sha256'])")
    shas = {subprocess.run([sys.executable, "-c", code, str(tmp_path / str(i))], cwd=REPO, capture_output=True,
                           text=True, check=True, env={"PYTHONHASHSEED": str(i), "PATH": "/usr/bin:/bin",
                                                       "OMP_NUM_THREADS": "1"}).stdout.strip()
            for i in range(3)}
    assert len(shas) == 1 and len(next(iter(shas))) == 64
    net, card = modelfile.load_model(tmp_path / "0" / "sar2eo_rgb.json", expected_task="sar2eo")
    assert card.weights["dtype"] == "float16"


def test_targets_rule():
    base = {"psnr": 25.0, "ssim": 0.60}
    assert cyclegan.targets_met("rgb", {"psnr": 27.5, "ssim": 0.71}, base)["all"]
    assert not cyclegan.targets_met("rgb", {"psnr": 27.5, "ssim": 0.69}, base)["all"]
    assert not cyclegan.targets_met("rgb", {"psnr": 26.9, "ssim": 0.9}, base)["psnr"]
    assert cyclegan.targets_met("rgbn", {"psnr": 25.1, "ssim": 0.61}, base)["all"]
    assert not cyclegan.targets_met("nir_swir_re", {"psnr": 25.1, "ssim": 0.59}, base)["all"]
    assert np.isfinite(cyclegan.SEED_METRICS["rgb"]["psnr_db"])


def test_experimental_flag_travels_from_card_to_labels():
    from sar2eo_cloud_plugin.core import cards

    card = cards.sar2eo_card("rgb", ngf=4, n_blocks=1)
    assert cards.experimental_note(card) is None
    card.metrics = {"experimental": True, "targets": {"definition": "beat the baseline by > 2.0 dB"}}
    assert cards.experimental_note(card) == ("experimental: misses its validation target "
                                             "(beat the baseline by > 2.0 dB)")
    card.metrics = {"experimental": False}
    assert cards.experimental_note(card) is None
    notes = cards.bundled_translation_notes()
    assert set(notes) == {"rgb", "nir_swir_re", "rgbn"}

"""SAR -> EO CycleGAN (Zhu et al., 2017), as in the seed: train, evaluate, export.

Domain A = Sentinel-1 (VV, VH in dB -> [-1, 1]); domain B = the band set's Sentinel-2 reflectance -> [-1, 1].
G_A: A -> B (the generator the plugin ships), G_B: B -> A, D_A judges domain B, D_B judges domain A
(the reference implementation's naming). LSGAN (MSE) adversarial losses, cycle loss L1 with lambda = 10,
an image pool of 50 per domain, Adam (lr 2e-4, betas 0.5 / 0.999), constant learning rate then linear decay to
zero over the last ``decay_epochs`` epochs, normal(0, 0.02) initialisation.

Identity loss: Zhu et al. add ||G_A(b) - b|| + ||G_B(a) - a||, which needs G_A to accept a domain-B image.
Here G_A takes 2 channels (VV, VH) and domain B has 3 or 4, so the term is undefined; it is only used when the
channel counts match, and otherwise disabled with a log line and a note in the model card.

Multi-process (``torchrun --nproc_per_node N``): each rank reads its shard (DistributedSampler) and gradients are
averaged over ranks after each backward pass; rank 0 alone writes checkpoints, logs, figures and model files.
"""
from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from sar2eo_cloud_plugin.core import cards, modelfile, networks, normalisation as norm
from sar2eo_cloud_plugin.core.bands import band_set

from . import common, metrics, plots
from .sar2eo_data import build_sar2eo_dataset

DEFAULTS: Dict[str, Any] = {
    "task": "sar2eo",
    "band_set": "rgb",
    "seed": 0,
    "device": "auto",
    "threads": None,
    "run_dir": "runs/sar2eo_rgb",
    "data": {"kind": "sen12ms", "root": "data/sen12ms", "extract_to": None, "crop_size": 256, "fraction": 1.0,
             "val_fraction": 0.1, "flip": True, "num_workers": 2, "samples_per_epoch": None, "holdout": [],
             "train_patches": None, "verify": False, "baseline_pairs": 500, "description": None},
    "model": {"ngf": 64, "n_blocks": 9, "ndf": 64, "n_layers_d": 3},
    "train": {"epochs": 20, "decay_epochs": 10, "batch_size": 1, "lr": 2e-4, "beta1": 0.5, "beta2": 0.999,
              "lambda_cycle": 10.0, "lambda_identity": 0.5, "pool_size": 50, "max_minutes": None,
              "log_every": 20},
    "eval": {"max_images": None, "figures": 4},
    "export": {"models_dir": "sar2eo_cloud_plugin/models", "dtype": "float16", "name": None, "notes": ""},
}


def config(cfg: Dict[str, Any]) -> Dict[str, Any]:
    out = common.merged(DEFAULTS, cfg)
    band_set(out["band_set"])  # validates
    return out


class ImagePool:
    """History of generated images (Shrivastava et al.): with probability 0.5 return an older fake instead."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.images: List[Any] = []

    def query(self, images):
        import torch

        if self.size == 0:
            return images
        out = []
        for img in images:
            img = img.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(img)
                out.append(img)
            elif random.random() > 0.5:
                j = random.randint(0, self.size - 1)
                old = self.images[j].clone()
                self.images[j] = img
                out.append(old)
            else:
                out.append(img)
        return torch.cat(out, 0)


def lr_lambda(epochs: int, decay_epochs: int):
    constant = max(0, epochs - decay_epochs)

    def f(epoch: int) -> float:
        return 1.0 - max(0, epoch + 1 - constant) / float(decay_epochs + 1)

    return f


def build_nets(cfg: Dict[str, Any]):
    bs = band_set(cfg["band_set"])
    m = cfg["model"]
    G_A = networks.init_weights(networks.ResnetGenerator(2, bs.count, m["ngf"], m["n_blocks"]), 0.02)
    G_B = networks.init_weights(networks.ResnetGenerator(bs.count, 2, m["ngf"], m["n_blocks"]), 0.02)
    D_A = networks.init_weights(networks.NLayerDiscriminator(bs.count, m["ndf"], m["n_layers_d"]), 0.02)
    D_B = networks.init_weights(networks.NLayerDiscriminator(2, m["ndf"], m["n_layers_d"]), 0.02)
    return {"G_A": G_A, "G_B": G_B, "D_A": D_A, "D_B": D_B}


def identity_note(cfg: Dict[str, Any]) -> str:
    n_b = band_set(cfg["band_set"]).count
    lam = float(cfg["train"]["lambda_identity"])
    if lam <= 0:
        return "identity loss off (lambda_identity = 0)"
    if n_b != 2:
        return (f"identity loss disabled: it needs G_A (2-channel VV/VH input) to accept a {n_b}-channel optical "
                f"image and G_B the reverse, so it is undefined here (lambda_identity = {lam} in the config was "
                "not used)")
    return f"identity loss on, lambda_identity = {lam}"


def _train_band_mean(ds, max_pairs: int, log) -> List[float]:
    """Per-band mean reflectance over (up to ``max_pairs``) training pairs: the baseline prediction."""
    n = ds.n_pairs if hasattr(ds, "n_pairs") else len(ds)
    idx = range(n) if n <= max_pairs else np.random.default_rng(0).choice(n, max_pairs, replace=False)
    sums, count = None, 0
    for i in idx:
        try:
            _, refl = ds.full_pair(int(i))
        except Exception as exc:  # noqa: BLE001 - unreadable pair: reported, skipped
            log(f"baseline: skipping pair {i}: {exc}")
            continue
        s = refl.reshape(refl.shape[0], -1).astype(np.float64).sum(1)
        sums = s if sums is None else sums + s
        count += refl.shape[1] * refl.shape[2]
    return (sums / max(count, 1)).tolist() if sums is not None else []


def train(cfg: Dict[str, Any], resume: bool = False) -> Dict[str, Any]:
    import torch
    from torch.utils.data import DataLoader
    from torch.utils.data.distributed import DistributedSampler
    from tqdm import tqdm

    cfg = config(cfg)
    dist, run_dir, log = common.start_training(cfg)
    t_cfg = cfg["train"]
    dev = dist.device

    if not dist.is_main:
        dist.barrier()  # rank 0 extracts archives first; the others then find them extracted
    ds = build_sar2eo_dataset(cfg["data"], cfg["band_set"], "train", cfg["seed"], log=log)
    if dist.is_main:
        dist.barrier()
    if hasattr(ds, "report"):
        log(f"SEN12MS scan: {ds.report.summary()}")
    if len(ds) == 0:
        raise SystemExit("no training pairs found; check data.root")
    nets = build_nets(cfg)
    for n in nets.values():
        n.to(dev)
        common.broadcast_module(dist, n)
    G_A, G_B, D_A, D_B = nets["G_A"], nets["G_B"], nets["D_A"], nets["D_B"]
    betas = (t_cfg["beta1"], t_cfg["beta2"])
    opt_G = torch.optim.Adam(list(G_A.parameters()) + list(G_B.parameters()), lr=t_cfg["lr"], betas=betas)
    opt_D = torch.optim.Adam(list(D_A.parameters()) + list(D_B.parameters()), lr=t_cfg["lr"], betas=betas)
    epochs, decay = int(t_cfg["epochs"]), int(t_cfg["decay_epochs"])
    sched_G = torch.optim.lr_scheduler.LambdaLR(opt_G, lr_lambda(epochs, decay))
    sched_D = torch.optim.lr_scheduler.LambdaLR(opt_D, lr_lambda(epochs, decay))

    stem = run_dir / "ckpt_last"
    start_epoch, step, history, wall_before = 0, 0, [], 0.0
    band_mean: Optional[List[float]] = None
    if resume:
        if not common.checkpoint_exists(stem):
            raise SystemExit(f"--resume: no checkpoint at {stem}.json/.safetensors")
        meta = common.load_checkpoint(stem, nets, {"G": opt_G, "D": opt_D})
        start_epoch, step = int(meta["epochs_completed"]), int(meta["global_step"])
        history, wall_before = meta.get("history", []), float(meta.get("wall_seconds", 0.0))
        band_mean = meta.get("train_band_mean")
        for sch, opt in ((sched_G, opt_G), (sched_D, opt_D)):
            sch.last_epoch = start_epoch
            for group, base in zip(opt.param_groups, sch.base_lrs):
                group["lr"] = base * lr_lambda(epochs, decay)(start_epoch)
        log(f"resumed from {stem} at epoch {start_epoch}, step {step} (the image pools start empty again)")
    if band_mean is None:
        band_mean = _train_band_mean(ds, int(cfg["data"]["baseline_pairs"]), log) if dist.is_main else []

    use_idt = float(t_cfg["lambda_identity"]) > 0 and band_set(cfg["band_set"]).count == 2
    log(identity_note(cfg))
    n_params = sum(p.numel() for p in G_A.parameters())
    log(f"band set {cfg['band_set']}: G_A {n_params / 1e6:.2f} M parameters (ngf {cfg['model']['ngf']}, "
        f"{cfg['model']['n_blocks']} blocks); {len(ds)} samples/epoch; device {dev}; world size {dist.world}")

    sampler = DistributedSampler(ds, num_replicas=dist.world, rank=dist.rank, shuffle=True, seed=cfg["seed"]) \
        if dist.enabled else None
    g = torch.Generator()
    g.manual_seed(cfg["seed"])
    nw = int(cfg["data"].get("num_workers") or 0)
    loader_kwargs = dict(batch_size=int(t_cfg["batch_size"]), num_workers=nw,
                         drop_last=len(ds) >= t_cfg["batch_size"] * dist.world,
                         pin_memory=dev.type == "cuda")
    loader_kwargs.update(common.loader_worker_kwargs(dist, nw) or {"persistent_workers": False})
    pool_A, pool_B = ImagePool(int(t_cfg["pool_size"])), ImagePool(int(t_cfg["pool_size"]))
    mse, l1 = torch.nn.MSELoss(), torch.nn.L1Loss()
    lam = float(t_cfg["lambda_cycle"])
    lam_idt = float(t_cfg["lambda_identity"])
    t0 = time.time()
    max_s = float(t_cfg["max_minutes"]) * 60 if t_cfg.get("max_minutes") else None
    stopped_early = False
    epochs_completed = start_epoch

    def save(ep_done: int) -> None:
        if dist.is_main:
            common.save_checkpoint(stem, nets, {"G": opt_G, "D": opt_D}, {
                "task": "sar2eo", "band_set": cfg["band_set"], "epochs_completed": ep_done, "global_step": step,
                "history": history, "wall_seconds": wall_before + time.time() - t0, "train_band_mean": band_mean,
                "config": cfg, "world_size": dist.world, "stopped_by_time_budget": stopped_early,
                "identity": identity_note(cfg), "samples_per_epoch": len(ds), "git_commit": common.git_commit(),
                "device": str(dev), "torch": torch.__version__, "lr_G": opt_G.param_groups[0]["lr"]})
        dist.barrier()

    for epoch in range(start_epoch, epochs):
        if hasattr(ds, "set_epoch"):
            ds.set_epoch(epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
        loader = DataLoader(ds, sampler=sampler, shuffle=sampler is None, generator=g if sampler is None else None,
                            **loader_kwargs)
        for n in nets.values():
            n.train()
        sums: Dict[str, float] = {}
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", disable=not dist.is_main, mininterval=5,
                   file=sys.stdout, dynamic_ncols=False, ncols=100)
        for batch in bar:
            real_A, real_B = batch["A"].to(dev), batch["B"].to(dev)
            fake_B = G_A(real_A)
            rec_A = G_B(fake_B)
            fake_A = G_B(real_B)
            rec_B = G_A(fake_A)
            # --- generators
            for d in (D_A, D_B):
                d.requires_grad_(False)
            opt_G.zero_grad(set_to_none=True)
            pred_fb, pred_fa = D_A(fake_B), D_B(fake_A)
            loss_G_A = mse(pred_fb, torch.ones_like(pred_fb))
            loss_G_B = mse(pred_fa, torch.ones_like(pred_fa))
            loss_cyc_A = l1(rec_A, real_A) * lam
            loss_cyc_B = l1(rec_B, real_B) * lam
            loss_idt = torch.zeros((), device=dev)
            if use_idt:
                loss_idt = (l1(G_A(real_B), real_B) * lam + l1(G_B(real_A), real_A) * lam) * lam_idt
            loss_G = loss_G_A + loss_G_B + loss_cyc_A + loss_cyc_B + loss_idt
            loss_G.backward()
            dist.average_gradients(list(G_A.parameters()) + list(G_B.parameters()))
            opt_G.step()
            # --- discriminators
            for d in (D_A, D_B):
                d.requires_grad_(True)
            opt_D.zero_grad(set_to_none=True)
            fb = pool_B.query(fake_B.detach())
            pr, pf = D_A(real_B), D_A(fb)
            loss_D_A = 0.5 * (mse(pr, torch.ones_like(pr)) + mse(pf, torch.zeros_like(pf)))
            fa = pool_A.query(fake_A.detach())
            pr, pf = D_B(real_A), D_B(fa)
            loss_D_B = 0.5 * (mse(pr, torch.ones_like(pr)) + mse(pf, torch.zeros_like(pf)))
            (loss_D_A + loss_D_B).backward()
            dist.average_gradients(list(D_A.parameters()) + list(D_B.parameters()))
            opt_D.step()
            step += 1
            rec = {"step": step, "epoch": epoch, "G_A": loss_G_A.item(), "G_B": loss_G_B.item(),
                   "cycle_A": loss_cyc_A.item(), "cycle_B": loss_cyc_B.item(), "idt": loss_idt.item(),
                   "D_A": loss_D_A.item(), "D_B": loss_D_B.item(), "G_total": loss_G.item()}
            history.append(rec)
            for k in ("G_total", "cycle_A", "cycle_B", "D_A", "D_B"):
                sums[k] = sums.get(k, 0.0) + rec[k]
            if step % int(t_cfg["log_every"]) == 0:
                bar.set_postfix(G=f"{rec['G_total']:.3f}", cyc=f"{rec['cycle_A'] + rec['cycle_B']:.3f}",
                                D=f"{rec['D_A'] + rec['D_B']:.3f}")
            if max_s is not None and time.time() - t0 > max_s:
                stopped_early = True
                break
        nb = max(1, len([h for h in history if h["epoch"] == epoch]))
        means = {k: dist.mean_scalar(v / nb) for k, v in sums.items()}
        if getattr(ds, "bad", None):
            log(f"unreadable pairs so far (skipped): {len(ds.bad)}, e.g. {next(iter(ds.bad.items()))}")
        log(f"epoch {epoch + 1}/{epochs} lr {opt_G.param_groups[0]['lr']:.2e} " +
            " ".join(f"{k} {v:.4f}" for k, v in means.items()) + f" ({time.time() - t0:.0f} s)")
        if stopped_early:
            log(f"stopped by the time budget ({t_cfg['max_minutes']} min) during epoch {epoch + 1}; the learning-rate "
                "decay did not finish")
            save(epoch)
            break
        sched_G.step()
        sched_D.step()
        epochs_completed = epoch + 1
        save(epochs_completed)
    if not stopped_early and start_epoch >= epochs:
        log("nothing to do: all epochs already completed")
    if dist.enabled:
        checksum = float(sum(float(p.detach().double().sum()) for n in nets.values() for p in n.parameters()))
        log(f"parameters identical on all {dist.world} ranks: {dist.same_on_all_ranks(checksum)}")
    dist.close()
    return {"run_dir": str(run_dir), "steps": step, "epochs_completed": epochs_completed, "history": history}


# ------------------------------------------------------------------------------------------------ evaluation
def predict_full(G, sar_norm: np.ndarray, device: str = "cpu") -> np.ndarray:
    """Whole-image inference: reflect-pad to a multiple of 4, run, crop; returns reflectance (C, H, W)."""
    import torch
    import torch.nn.functional as F

    h, w = sar_norm.shape[-2:]
    ph, pw = (-h) % 4, (-w) % 4
    x = torch.from_numpy(sar_norm[None]).to(device)
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="reflect")
    with torch.no_grad():
        y = G(x)[0, :, :h, :w].float().cpu().numpy()
    return norm.denormalise_optical(y)


def evaluate(cfg: Dict[str, Any], checkpoint: Optional[str] = None) -> Dict[str, Any]:
    """Held-out metrics of G_A and of the mean-reflectance baseline; figures; writes <run>/eval/metrics.json."""
    cfg = config(cfg)
    common.set_threads(cfg["threads"])
    run_dir = common.resolve_path(cfg["run_dir"])
    log = common.RunLog(run_dir)
    stem = Path(checkpoint) if checkpoint else run_dir / "ckpt_last"
    nets = build_nets(cfg)
    # only G_A is needed: read it from the full checkpoint
    import json

    from safetensors.torch import load_file

    stem = stem.with_suffix("") if stem.suffix in (".json", ".safetensors") else stem
    meta = json.loads(stem.with_suffix(".json").read_text(encoding="utf-8"))
    tensors = load_file(str(stem.with_suffix(".safetensors")))
    G = nets["G_A"]
    G.load_state_dict({k[len("net.G_A."):]: v for k, v in tensors.items() if k.startswith("net.G_A.")})
    dev = common.eval_device(cfg["device"])
    G.eval().to(dev)
    bs = band_set(cfg["band_set"])
    val = build_sar2eo_dataset(cfg["data"], cfg["band_set"], "val", cfg["seed"], log=log)
    n = val.n_pairs if hasattr(val, "n_pairs") else len(val)
    if cfg["eval"].get("max_images"):
        n = min(n, int(cfg["eval"]["max_images"]))
    if n == 0:
        raise SystemExit("no held-out pairs to evaluate on")
    band_mean = np.asarray(meta["train_band_mean"], dtype=np.float32)
    per_model, per_base, per_oracle, names = [], [], [], []
    fig_dir = run_dir / "eval"
    for i in range(n):
        try:
            sar, target = val.full_pair(i)
        except Exception as exc:  # noqa: BLE001 - reported, skipped
            log(f"evaluate: skipping unreadable pair {i}: {exc}")
            continue
        pred = predict_full(G, sar, dev)
        base = np.broadcast_to(band_mean[:, None, None], target.shape).astype(np.float32)
        per_model.append(metrics.translation_metrics(pred, target, bs.bands))
        per_base.append(metrics.translation_metrics(base, target, bs.bands))
        oracle = np.broadcast_to(target.mean(axis=(1, 2), keepdims=True), target.shape).astype(np.float32)
        per_oracle.append(metrics.translation_metrics(oracle, target, bs.bands))
        name = val.name(i)
        names.append(name)
        if i < int(cfg["eval"]["figures"]):
            plots.translation_figure(fig_dir / f"{cfg['band_set']}_{i:03d}.png", sar, pred, target, base, bs.bands,
                                     cfg["band_set"], title=f"{cfg['band_set']} held-out {name}: PSNR "
                                     f"{per_model[-1]['psnr']:.2f} dB (baseline {per_base[-1]['psnr']:.2f} dB)")
    model_avg = metrics.average_translation(per_model)
    base_avg = metrics.average_translation(per_base)
    beats = {"psnr": model_avg["psnr"] > base_avg["psnr"], "ssim": model_avg["ssim"] > base_avg["ssim"]}
    oracle_avg = metrics.average_translation(per_oracle)
    result = metrics.clean_nan({
        "band_set": cfg["band_set"], "bands": list(bs.bands), "held_out": names, "data_range": metrics.DATA_RANGE,
        "model": model_avg, "baseline": base_avg, "baseline_definition":
            "training-set per-band mean reflectance predicted at every pixel", "beats_baseline": beats,
        "flat_target_mean": oracle_avg, "flat_target_mean_definition":
            "each held-out image's own per-band mean everywhere (uses the answer; the best any flat image can do)",
        "checkpoint": str(stem), "epochs_completed": meta.get("epochs_completed"), "steps": meta.get("global_step"),
        "per_image": [{"name": nm, "model": m, "baseline": b} for nm, m, b in zip(names, per_model, per_base)]})
    common.write_json(fig_dir / "metrics.json", result)
    log(f"held-out {names}: model PSNR {model_avg['psnr']:.2f} dB SSIM {model_avg['ssim']:.3f} | baseline PSNR "
        f"{base_avg['psnr']:.2f} dB SSIM {base_avg['ssim']:.3f} | beats baseline: {beats}")
    return result


# ------------------------------------------------------------------------------------------------ export
def _data_description(cfg: Dict[str, Any], meta: Dict[str, Any]) -> str:
    d = cfg["data"]
    if d.get("description"):
        return d["description"]
    if d["kind"] == "bigearthnet":
        return (f"BigEarthNet-MM example pairs in {d['root']} (real S1 GRD dB / S2 L2A, 120 x 120 px at 10 m); "
                f"held out: {', '.join(d.get('holdout') or [])}")
    return (f"SEN12MS {d['root']} ({int(d.get('fraction', 1) * 100)} % of training pairs, "
            f"{int(d.get('val_fraction', 0.1) * 100)} % of scenes held out)")


def export(cfg: Dict[str, Any], checkpoint: Optional[str] = None, models_dir: Optional[str] = None) -> Path:
    import json

    import torch
    from safetensors.torch import load_file

    cfg = config(cfg)
    run_dir = common.resolve_path(cfg["run_dir"])
    stem = Path(checkpoint) if checkpoint else run_dir / "ckpt_last"
    stem = stem.with_suffix("") if stem.suffix in (".json", ".safetensors") else stem
    meta = json.loads(stem.with_suffix(".json").read_text(encoding="utf-8"))
    ev_path = run_dir / "eval" / "metrics.json"
    if not ev_path.is_file():
        raise SystemExit(f"no evaluation at {ev_path}: run `python -m training sar2eo evaluate` first; a card "
                         "without measured metrics is not exported")
    ev = json.loads(ev_path.read_text(encoding="utf-8"))
    m = cfg["model"]
    card = cards.sar2eo_card(cfg["band_set"], ngf=m["ngf"], n_blocks=m["n_blocks"], name=cfg["export"].get("name"))
    G = networks.ResnetGenerator(2, band_set(cfg["band_set"]).count, m["ngf"], m["n_blocks"])
    tensors = load_file(str(stem.with_suffix(".safetensors")))
    G.load_state_dict({k[len("net.G_A."):]: v for k, v in tensors.items() if k.startswith("net.G_A.")})
    t = cfg["train"]
    beats = ev["beats_baseline"]
    card.training = {
        "data": _data_description(cfg, meta),
        "optical_level": "L2A surface reflectance" if cfg["data"]["kind"] == "bigearthnet" else "L1C TOA reflectance",
        "method": "CycleGAN (unpaired losses; LSGAN, cycle lambda 10, image pool 50, Adam 2e-4 betas 0.5/0.999, "
                  "constant then linear LR decay, normal(0, 0.02) init)",
        "identity_loss": meta.get("identity"),
        "epochs_completed": meta.get("epochs_completed"), "epochs_planned": t["epochs"],
        "decay_epochs": t["decay_epochs"], "steps": meta.get("global_step"), "batch_size": t["batch_size"],
        "samples_per_epoch": meta.get("samples_per_epoch"), "crop_size": cfg["data"].get("crop_size"),
        "stopped_by_time_budget": meta.get("stopped_by_time_budget", False),
        "world_size": meta.get("world_size"), "device": meta.get("device"),
        "wall_minutes": round(float(meta.get("wall_seconds", 0)) / 60, 2), "seed": cfg["seed"],
        "config": cfg.get("_config_file"), "git_commit": meta.get("git_commit"), "torch": meta.get("torch"),
        "command": f"python -m training sar2eo train --config {cfg.get('_config_file', '<config>')}",
    }
    card.metrics = {
        "held_out": ev["held_out"], "data_range": ev["data_range"],
        "psnr_db": ev["model"]["psnr"], "ssim": ev["model"]["ssim"], "band_rmse": ev["model"]["band_rmse"],
        "ndvi": ev["model"]["ndvi"],
        "baseline": {"definition": ev["baseline_definition"], "psnr_db": ev["baseline"]["psnr"],
                     "ssim": ev["baseline"]["ssim"], "band_rmse": ev["baseline"]["band_rmse"],
                     "ndvi": ev["baseline"]["ndvi"], "band_mean_reflectance": meta.get("train_band_mean")},
        "flat_target_mean": {"definition": ev.get("flat_target_mean_definition"),
                             "psnr_db": (ev.get("flat_target_mean") or {}).get("psnr"),
                             "ssim": (ev.get("flat_target_mean") or {}).get("ssim")},
        "beats_baseline": beats,
        "definitions": "reflectance 0..1, PSNR over all bands, SSIM skimage (channel_axis=0, 7x7), mean over "
                       "held-out images",
    }
    verdict = ("It beats the mean-reflectance baseline on both PSNR and SSIM." if beats["psnr"] and beats["ssim"] else
               "It does NOT beat the baseline of predicting the training set's mean reflectance everywhere on "
               + " and ".join(k.upper() for k, v in beats.items() if not v)
               + ": on this evidence it has learned nothing useful and its output is not a reflectance estimate.")
    flat = (ev.get("flat_target_mean") or {}).get("psnr")
    if flat is not None and ev["model"]["psnr"] < flat:
        verdict += (f" Its PSNR ({ev['model']['psnr']:.2f} dB) is also below that of a flat image holding the held-out "
                    f"patch's own mean ({flat:.2f} dB): its spatial detail is worse than none.")
    card.notes = " ".join(x for x in [cfg["export"].get("notes") or "", verdict] if x)
    out = common.resolve_path(models_dir or cfg["export"]["models_dir"])
    path = modelfile.save_model(G, card, out, dtype=cfg["export"]["dtype"])
    os.chmod(out / card.weights["file"], 0o644)  # safetensors writes 0600; a shipped file must be world-readable
    net, back = modelfile.load_model(path, expected_task="sar2eo")  # round trip: refuse to leave a broken file
    x = torch.zeros(1, 2, 16, 16)
    assert net(x).shape == (1, band_set(cfg["band_set"]).count, 16, 16)
    print(f"exported {path} ({back.weights['bytes'] / 1e6:.1f} MB {back.weights['dtype']}, sha256 "
          f"{back.weights['sha256'][:12]}…)")
    return path

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

from sar2eo_cloud_plugin.core import cards, modelfile, networks, normalisation as norm, onnxexport
from sar2eo_cloud_plugin.core.bands import band_set

from . import common, metrics, plots
from .sar2eo_data import build_sar2eo_dataset

_O = common.Option
OPTIONS: common.OptionTree = {
    "task": _O("sar2eo", "the task this config is for (always sar2eo here)"),
    "band_set": _O("rgb", "output band set: rgb (B4, B3, B2), nir_swir_re (B8, B11, B5) or rgbn (B4, B3, B2, B8)"),
    "seed": _O(0, "seed of every random choice (init, crops, flips, image pool, SEN12MS split)"),
    "device": _O("auto", "auto (CUDA when present), cuda or cpu"),
    "threads": _O(None, "torch intra-op threads (None: torch's default); 1 on a shared CPU"),
    "run_dir": _O("runs/sar2eo_rgb", "folder of checkpoints, train.log and eval/ (relative: to the repository)"),
    "data": {
        "kind": _O("sen12ms", "sen12ms (the seed's dataset) or bigearthnet (the real pairs in ../shared/data)"),
        "root": _O("data/sen12ms", "sen12ms: folder of the archives / extracted tree; bigearthnet: one data folder"),
        "roots": _O(None, "bigearthnet: several data folders read together (overrides root)"),
        "extract_to": _O(None, "sen12ms: where archives are extracted once (default: root)"),
        "val_products": _O([], "bigearthnet: Sentinel-2 products (<mission>_<date>T<hhmm>) held out for validation"),
        "sen1floods11": _O(None, "folder of the Sen1Floods11 L1C pair, scored apart at evaluation (None: skipped)"),
        "crop_size": _O(256, "training crop in pixels (random position, per sample)"),
        "fraction": _O(1.0, "sen12ms: share of the training pairs used (the seed used 0.5)"),
        "val_fraction": _O(0.1, "sen12ms: share of scenes held out for validation"),
        "flip": _O(True, "random horizontal and vertical flips in training"),
        "num_workers": _O(2, "DataLoader worker processes (0 on a small CPU)"),
        "samples_per_epoch": _O(None, "bigearthnet: crops drawn per epoch (None: one per training pair)"),
        "verify": _O(False, "sen12ms: open every file up front and drop unreadable pairs"),
        "baseline_pairs": _O(500, "training pairs averaged for the mean-reflectance baseline"),
        "description": _O(None, "text for the card's training.data (None: written from the settings above)"),
    },
    "model": {
        "ngf": _O(64, "generator width (filters of the first layer); 32 costs a quarter of 64's MACs"),
        "n_blocks": _O(9, "residual blocks of the ResNet generator (the seed: 9)"),
        "ndf": _O(64, "discriminator width (the seed's 70x70 PatchGAN: 64)"),
        "n_layers_d": _O(3, "PatchGAN layers (3 = 70x70 receptive field)"),
    },
    "train": {
        "epochs": _O(20, "epochs in all (constant LR, then linear decay)"),
        "decay_epochs": _O(10, "last epochs over which the LR decays linearly to zero"),
        "batch_size": _O(1, "pairs per step and process"),
        "lr": _O(2e-4, "Adam learning rate of generators and discriminators"),
        "beta1": _O(0.5, "Adam beta1"),
        "beta2": _O(0.999, "Adam beta2"),
        "lambda_cycle": _O(10.0, "weight of each cycle-consistency L1 term"),
        "lambda_identity": _O(0.5, "identity loss weight (only usable when input and output channel counts match)"),
        "lambda_L1": _O(0.0, "weight of the paired L1 term |G_A(S1) - S2| (0: the seed's unpaired CycleGAN)"),
        "pool_size": _O(50, "image pool of past fakes per discriminator"),
        "max_minutes": _O(None, "stop (with a checkpoint) after this many minutes; None: no limit"),
        "log_every": _O(20, "steps between progress-bar updates"),
        **common.HISTORY_OPTIONS,
        **common.PRECISION_OPTIONS,
    },
    "eval": {
        "max_images": _O(None, "evaluate at most this many validation pairs (None: all)"),
        "figures": _O(4, "validation pairs shown in <run>/eval/<band set>_pairs.png (real S1, translation, real S2)"),
    },
    "export": {
        "models_dir": _O("sar2eo_cloud_plugin/models", "where the model file and card are written"),
        "dtype": _O("float16", "weights dtype of the exported model (float16 or float32)"),
        "name": _O(None, "model name (None: the band set's bundled name, e.g. sar2eo_rgb)"),
        "notes": _O("", "text put first in the card's notes"),
    },
}

# The seed's reported test scores on SEN12MS (L1C, GPU training), for the cards and README beside ours.
SEED_METRICS: Dict[str, Dict[str, float]] = {"rgb": {"psnr_db": 24.0, "ssim": 0.89},
                                             "nir_swir_re": {"psnr_db": 19.0, "ssim": 0.40},
                                             "rgbn": {"psnr_db": 22.02, "ssim": 0.17}}
# Quality targets on the validation products (issue 12): every band set beats the baseline in PSNR and SSIM;
# RGB by at least these margins.
TARGET_MARGINS: Dict[str, Dict[str, float]] = {"rgb": {"psnr_db": 2.0, "ssim": 0.10}}


def config(cfg: Dict[str, Any]) -> Dict[str, Any]:
    out = common.apply_options(OPTIONS, cfg)
    common.check_amp(out["train"]["amp"])  # the value; whether the device can run it is checked at train
    common.check_channels_last(out["train"]["channels_last"])
    try:
        band_set(out["band_set"])
    except Exception as exc:  # noqa: BLE001 - the core's InputError, re-raised as a config error
        raise common.ConfigError(f"band_set: {exc}") from exc
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


def restore_schedulers(schedulers: Dict[str, Any], meta: Dict[str, Any], epochs_completed: int) -> None:
    """Put the LR schedulers back where the checkpoint left them (their saved ``state_dict``), so a resumed run
    follows the same learning-rate curve as an uninterrupted one; the optimisers' ``lr`` then follows."""
    saved = meta.get("schedulers") or {}
    for key, sch in schedulers.items():
        if key not in saved:
            raise common.CheckpointError(f"checkpoint has no state for scheduler '{key}'")
        sch.load_state_dict(saved[key])
        # the learning rate is recomputed from the schedule of *this* config, so that a run resumed with a longer
        # or shorter plan (train.epochs / decay_epochs changed while the LR is still constant) follows the new plan
        for group, base, fn in zip(sch.optimizer.param_groups, sch.base_lrs, sch.lr_lambdas):
            group["lr"] = base * fn(sch.last_epoch)
        sch._last_lr = [group["lr"] for group in sch.optimizer.param_groups]
    if any(sch.last_epoch != epochs_completed for sch in schedulers.values()):
        raise common.CheckpointError(f"scheduler state (epoch {[s.last_epoch for s in schedulers.values()]}) "
                                     f"does not match the checkpoint's {epochs_completed} completed epochs")


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


def training_step(nets: Dict[str, Any], opts: Dict[str, Any], pools, real_A, real_B, t_cfg: Dict[str, Any],
                  use_idt: bool = False, average_gradients=lambda params: None, scaler=None) -> Dict[str, float]:
    """One CycleGAN step (generators, then discriminators) as in the reference implementation, plus the paired L1
    term when ``t_cfg['lambda_L1'] > 0``; returns the losses. Shared by :func:`train` and the benchmark.

    ``t_cfg['amp']`` picks the autocast of the forward passes and losses, ``t_cfg['channels_last']`` the memory
    format of the input batches (the networks are converted once by the caller, :func:`prepare_nets`). ``scaler``
    is the run's :func:`training.common.grad_scaler`; it must persist across steps for fp16 (its loss scale adapts
    over steps), and may be omitted for none / bf16. Gradients are averaged over ranks while still scaled, which
    is exact (averaging is linear) and keeps every rank's inf/NaN check, hence its skipped steps, identical."""
    import torch

    amp = t_cfg["amp"]
    if scaler is None:
        if amp == "fp16":
            raise common.TrainingError("train.amp=fp16: pass the run's GradScaler (common.grad_scaler) to "
                                       "training_step; a new one per step would never adapt its loss scale")
        scaler = common.grad_scaler(amp, real_A.device)
    real_A = common.channels_last(real_A, t_cfg["channels_last"])
    real_B = common.channels_last(real_B, t_cfg["channels_last"])
    G_A, G_B, D_A, D_B = nets["G_A"], nets["G_B"], nets["D_A"], nets["D_B"]
    opt_G, opt_D = opts["G"], opts["D"]
    pool_A, pool_B = pools
    mse, l1 = torch.nn.MSELoss(), torch.nn.L1Loss()
    lam, lam_idt, lam_l1 = (float(t_cfg[k]) for k in ("lambda_cycle", "lambda_identity", "lambda_L1"))
    zero = torch.zeros((), device=real_A.device)
    # --- generators
    for d in (D_A, D_B):
        d.requires_grad_(False)
    opt_G.zero_grad(set_to_none=True)
    with common.autocast(amp, real_A.device):
        fake_B = G_A(real_A)
        rec_A = G_B(fake_B)
        fake_A = G_B(real_B)
        rec_B = G_A(fake_A)
        pred_fb, pred_fa = D_A(fake_B), D_B(fake_A)
        # losses in float32: a bf16 / fp16 mean over a whole image loses digits that the LSGAN terms need
        loss_G_A = mse(pred_fb.float(), torch.ones_like(pred_fb, dtype=torch.float32))
        loss_G_B = mse(pred_fa.float(), torch.ones_like(pred_fa, dtype=torch.float32))
        loss_cyc_A = l1(rec_A.float(), real_A) * lam
        loss_cyc_B = l1(rec_B.float(), real_B) * lam
        loss_idt = ((l1(G_A(real_B).float(), real_B) * lam + l1(G_B(real_A).float(), real_A) * lam) * lam_idt
                    if use_idt else zero)
        loss_l1 = l1(fake_B.float(), real_B) * lam_l1 if lam_l1 > 0 else zero
        loss_G = loss_G_A + loss_G_B + loss_cyc_A + loss_cyc_B + loss_idt + loss_l1
    scaler.scale(loss_G).backward()
    average_gradients(list(G_A.parameters()) + list(G_B.parameters()))
    scaler.step(opt_G)
    # --- discriminators
    for d in (D_A, D_B):
        d.requires_grad_(True)
    opt_D.zero_grad(set_to_none=True)
    with common.autocast(amp, real_A.device):
        fb = pool_B.query(fake_B.detach())
        pr, pf = D_A(real_B).float(), D_A(fb).float()
        loss_D_A = 0.5 * (mse(pr, torch.ones_like(pr)) + mse(pf, torch.zeros_like(pf)))
        fa = pool_A.query(fake_A.detach())
        pr, pf = D_B(real_A).float(), D_B(fa).float()
        loss_D_B = 0.5 * (mse(pr, torch.ones_like(pr)) + mse(pf, torch.zeros_like(pf)))
    scaler.scale(loss_D_A + loss_D_B).backward()
    average_gradients(list(D_A.parameters()) + list(D_B.parameters()))
    scaler.step(opt_D)
    scaler.update()
    return {"G_A": loss_G_A.item(), "G_B": loss_G_B.item(), "cycle_A": loss_cyc_A.item(),
            "cycle_B": loss_cyc_B.item(), "idt": loss_idt.item(), "L1": loss_l1.item(), "D_A": loss_D_A.item(),
            "D_B": loss_D_B.item(), "G_total": loss_G.item()}


def prepare_nets(nets: Dict[str, Any], t_cfg: Dict[str, Any], device: Any) -> Dict[str, Any]:
    """The four networks on ``device`` in the memory format ``train.channels_last`` asks for (before their
    optimisers are built); shared by :func:`train` and the benchmark."""
    for n in nets.values():
        common.channels_last(n.to(device), t_cfg["channels_last"])
    return nets


def train(cfg: Dict[str, Any], resume: bool = False) -> Dict[str, Any]:
    import torch
    from torch.utils.data import DataLoader
    from torch.utils.data.distributed import DistributedSampler
    from tqdm import tqdm

    cfg = config(cfg)
    dist, run_dir, log = common.start_training(cfg)
    t_cfg = cfg["train"]
    dev = dist.device
    scaler = common.grad_scaler(t_cfg["amp"], dev)  # refuses fp16 off CUDA before any data is read

    if not dist.is_main:
        dist.barrier()  # rank 0 extracts archives first; the others then find them extracted
    ds = build_sar2eo_dataset(cfg["data"], cfg["band_set"], "train", cfg["seed"], log=log)
    if dist.is_main:
        dist.barrier()
    if hasattr(ds, "report"):
        log(f"SEN12MS scan: {ds.report.summary()}")
    if len(ds) == 0:
        raise common.DataError("no training pairs found; check data.root / data.roots")
    nets = prepare_nets(build_nets(cfg), t_cfg, dev)
    for n in nets.values():
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
            raise common.CheckpointError(f"--resume: no checkpoint at {stem}.json/.safetensors")
        meta = common.load_checkpoint(stem, nets, {"G": opt_G, "D": opt_D})
        start_epoch, step = int(meta["epochs_completed"]), int(meta["global_step"])
        history, wall_before = meta.get("history", []), float(meta.get("wall_seconds", 0.0))
        band_mean = meta.get("train_band_mean")
        restore_schedulers({"G": sched_G, "D": sched_D}, meta, start_epoch)
        if meta.get("grad_scaler") and scaler.is_enabled():
            scaler.load_state_dict(meta["grad_scaler"])
        log(f"resumed from {stem} at epoch {start_epoch}, step {step} (the image pools start empty again)")
    if band_mean is None:
        band_mean = _train_band_mean(ds, int(cfg["data"]["baseline_pairs"]), log) if dist.is_main else []

    use_idt = float(t_cfg["lambda_identity"]) > 0 and band_set(cfg["band_set"]).count == 2
    log(identity_note(cfg))
    n_params = sum(p.numel() for p in G_A.parameters())
    log(f"band set {cfg['band_set']}: G_A {n_params / 1e6:.2f} M parameters (ngf {cfg['model']['ngf']}, "
        f"{cfg['model']['n_blocks']} blocks); {len(ds)} samples/epoch; device {dev}; world size {dist.world}")
    log(f"precision: train.amp = {t_cfg['amp']}" + (" (fp16 with a GradScaler)" if scaler.is_enabled() else "")
        + f"; train.channels_last = {t_cfg['channels_last']}")

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
    lam_l1 = float(t_cfg["lambda_L1"])
    log(f"paired L1 term: lambda_L1 = {lam_l1}" + (" (0: the seed's unpaired CycleGAN)" if lam_l1 == 0 else ""))
    history = common.bounded_history(history, int(t_cfg["history_steps"]))
    t0 = time.time()
    max_s = float(t_cfg["max_minutes"]) * 60 if t_cfg.get("max_minutes") else None
    stopped_early = False
    epochs_completed = start_epoch

    def save(ep_done: int) -> None:
        if dist.is_main:
            common.save_checkpoint(stem, nets, {"G": opt_G, "D": opt_D}, {
                "task": "sar2eo", "band_set": cfg["band_set"], "epochs_completed": ep_done, "global_step": step,
                "history": list(history), "wall_seconds": wall_before + time.time() - t0, "train_band_mean": band_mean,
                "config": cfg, "world_size": dist.world, "stopped_by_time_budget": stopped_early,
                "identity": identity_note(cfg), "samples_per_epoch": len(ds), "git_commit": common.git_commit(),
                "device": str(dev), "torch": torch.__version__, "lr_G": opt_G.param_groups[0]["lr"],
                "schedulers": {"G": sched_G.state_dict(), "D": sched_D.state_dict()},
                "grad_scaler": scaler.state_dict() if scaler.is_enabled() else None})
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
        steps_this_epoch = 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", disable=not dist.is_main, mininterval=5,
                   file=sys.stdout, dynamic_ncols=False, ncols=100)
        for batch in bar:
            rec = training_step(nets, {"G": opt_G, "D": opt_D}, (pool_A, pool_B), batch["A"].to(dev),
                                batch["B"].to(dev), t_cfg, use_idt, dist.average_gradients, scaler)
            step += 1
            rec = {"step": step, "epoch": epoch, **rec}
            history.append(rec)
            for k in ("G_total", "cycle_A", "cycle_B", "L1", "D_A", "D_B"):
                sums[k] = sums.get(k, 0.0) + rec[k]
            steps_this_epoch += 1
            if step % int(t_cfg["log_every"]) == 0:
                bar.set_postfix(G=f"{rec['G_total']:.3f}", cyc=f"{rec['cycle_A'] + rec['cycle_B']:.3f}",
                                D=f"{rec['D_A'] + rec['D_B']:.3f}")
            if max_s is not None and time.time() - t0 > max_s:
                stopped_early = True
                break
        nb = max(1, steps_this_epoch)
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
    return {"run_dir": str(run_dir), "steps": step, "epochs_completed": epochs_completed, "history": list(history)}


# ------------------------------------------------------------------------------------------------ evaluation
def generator_from_checkpoint(cfg: Dict[str, Any], stem: Path):
    """(G_A with the checkpoint's weights, checkpoint meta), through the package's one checkpoint loader."""
    m = cfg["model"]
    G = networks.ResnetGenerator(2, band_set(cfg["band_set"]).count, m["ngf"], m["n_blocks"])
    meta = common.load_checkpoint(stem, {"G_A": G}, restore_rng=False)
    return G.eval(), meta


def _check_round_trip(path: Path, n_out: int) -> None:
    """Load a written model file back through the plugin's loader and run it once: a file the plugin cannot run
    is an error here, not at the user's."""
    import torch

    net, _card = modelfile.load_model(path, expected_task="sar2eo")
    with torch.no_grad():
        shape = tuple(net(torch.zeros(1, 2, 16, 16)).shape)
    if shape != (1, n_out, 16, 16):
        raise common.TrainingError(f"{path}: the written model returns shape {shape}, not (1, {n_out}, 16, 16)")


def write_model(cfg: Dict[str, Any], G, out_dir: Path, training: Optional[Dict[str, Any]] = None,
                metrics_: Optional[Dict[str, Any]] = None, notes: str = "") -> Path:
    """G_A as a plugin model file (card + weights in ``export.dtype``) in ``out_dir``; returns the card path."""
    m = cfg["model"]
    card = cards.sar2eo_card(cfg["band_set"], ngf=m["ngf"], n_blocks=m["n_blocks"], name=cfg["export"].get("name"))
    card.training = dict(training or {})
    card.metrics = dict(metrics_ or {})
    card.notes = notes
    out_dir = Path(out_dir)
    path = modelfile.save_model(G, card, out_dir, dtype=cfg["export"]["dtype"])
    os.chmod(out_dir / card.weights["file"], 0o644)  # safetensors writes 0600; a shipped file must be world-readable
    _check_round_trip(path, band_set(cfg["band_set"]).count)
    # The ONNX graph the plugin's default runtime runs, derived from the weights as shipped (float16 read back),
    # so the card names both files and scripts/derive_onnx.py finds nothing to add at set-up.
    onnxexport.export_card_onnx(path)
    return path


# No georeference exists for the BigEarthNet .npz patches (their README: never invent one). The engine needs a
# CRS, so their temporary evaluation rasters carry a LOCAL_CS that says exactly that: a bare 10 m pixel grid.
UNREFERENCED_CRS_WKT = ('LOCAL_CS["BigEarthNet patch without georeference (10 m pixel grid)",UNIT["metre",1],'
                        'AXIS["Easting",EAST],AXIS["Northing",NORTH]]')


def write_s1_geotiff(path: Path, db: np.ndarray, like: Optional[Path] = None) -> Path:
    """(2, H, W) VV, VH dB as a float32 GeoTIFF with band descriptions VV, VH: the georeference of ``like``
    (a real GeoTIFF of the same patch) or, without one, :data:`UNREFERENCED_CRS_WKT` on a 10 m grid."""
    import rasterio
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    if like is not None:
        with rasterio.open(like) as src:
            crs, transform = src.crs, src.transform
    else:
        crs, transform = CRS.from_wkt(UNREFERENCED_CRS_WKT), from_origin(0.0, 10.0 * db.shape[-2], 10.0, 10.0)
    with rasterio.open(path, "w", driver="GTiff", width=db.shape[-1], height=db.shape[-2], count=2,
                       dtype="float32", crs=crs, transform=transform) as dst:
        dst.write(db.astype(np.float32))
        dst.descriptions = ("VV", "VH")
    return Path(path)


def plugin_translate(card_path: Path, s1_tif: Path, out_tif: Path, band_set_key: str) -> np.ndarray:
    """Translate ``s1_tif`` exactly as the Processing algorithm does (``core.inference.translate_sar_to_eo``, the
    engine's tiling and blending, the uint16 output file) and read the result back as reflectance (C, H, W)."""
    import rasterio

    from sar2eo_cloud_plugin.core import inference

    req = inference.TranslationRequest(src_path=str(s1_tif), dst_path=str(out_tif), band_set=band_set_key,
                                       units="dB", device="cpu", model_path=str(card_path))
    inference.translate_sar_to_eo(req)
    with rasterio.open(out_tif) as ds:
        dn = ds.read().astype(np.float32)
    return dn / norm.OPTICAL_SCALE


def _flat(values: List[float], shape) -> np.ndarray:
    """The baseline image: one value per band everywhere, rounded to DN like the plugin's output."""
    v = np.rint(np.asarray(values, dtype=np.float64) * norm.OPTICAL_SCALE) / norm.OPTICAL_SCALE
    return np.broadcast_to(v[:, None, None], shape).astype(np.float32)


def targets_met(band_set_key: str, model: Dict[str, Any], base: Dict[str, Any]) -> Dict[str, Any]:
    """Issue 12's targets: beat the baseline in PSNR and SSIM; RGB by ``TARGET_MARGINS``."""
    margin = TARGET_MARGINS.get(band_set_key, {"psnr_db": 0.0, "ssim": 0.0})
    psnr_ok = model["psnr"] > base["psnr"] + margin["psnr_db"] if margin["psnr_db"] else model["psnr"] > base["psnr"]
    ssim_ok = model["ssim"] > base["ssim"] + margin["ssim"] if margin["ssim"] else model["ssim"] > base["ssim"]
    return {"psnr": bool(psnr_ok), "ssim": bool(ssim_ok), "all": bool(psnr_ok and ssim_ok),
            "definition": (f"beat the training-mean baseline on the validation products by > {margin['psnr_db']} dB "
                           f"PSNR and > {margin['ssim']} SSIM")}


def evaluate(cfg: Dict[str, Any], checkpoint: Optional[str] = None) -> Dict[str, Any]:
    """Scores of G_A on the validation products through the plugin's own path (the model is written as the plugin
    model file export would ship, each S1 input is a GeoTIFF, ``core.inference`` runs it), beside the
    training-mean baseline scored the same way; Sen1Floods11 (L1C) apart. Writes <run>/eval/metrics.json."""
    import tempfile

    from . import sar2eo_data as sd

    cfg = config(cfg)
    common.set_threads(cfg["threads"])
    run_dir = common.resolve_path(cfg["run_dir"])
    log = common.RunLog(run_dir)
    stem = common.checkpoint_stem(Path(checkpoint) if checkpoint else run_dir / "ckpt_last")
    ident = common.checkpoint_identity(stem)
    G, meta = generator_from_checkpoint(cfg, stem)
    bs = band_set(cfg["band_set"])
    ev_dir = run_dir / "eval"
    card_path = write_model(cfg, G, ev_dir / "model")
    scored_sha = modelfile.read_card(card_path).weights["sha256"]
    val = build_sar2eo_dataset(cfg["data"], cfg["band_set"], "val", cfg["seed"], log=log)
    n = val.n_pairs if hasattr(val, "n_pairs") else len(val)
    if cfg["eval"].get("max_images"):
        n = min(n, int(cfg["eval"]["max_images"]))
    if n == 0:
        raise common.DataError("no validation pairs to evaluate on (data.val_products / data.val_fraction)")
    band_mean = meta["train_band_mean"]
    per_model, per_base, per_oracle, names, shown = [], [], [], [], []
    with tempfile.TemporaryDirectory(prefix="sar2eo_eval_") as tmp:
        tmp_p = Path(tmp)
        for i in range(n):
            if isinstance(val, sd.BigEarthNetPairs):
                src = val.sources[i]
                db, dn = sd.read_pair(src)
                like = src.s1 / f"{src.s1.name}_VV.tif" if src.kind == "geotiff" else (
                    src.s1 if src.kind == "stack" else None)
                s1_tif = write_s1_geotiff(tmp_p / f"s1_{i}.tif", db, like)
                target = sd.dn_to_reflectance(dn[val.band_indices()])
            else:  # SEN12MS: its S1 files are already GeoTIFFs
                s1_tif = Path(val.pairs[i][0])
                target = val.full_pair(i)[1]
            pred = plugin_translate(card_path, s1_tif, tmp_p / f"out_{i}.tif", cfg["band_set"])
            base = _flat(band_mean, target.shape)
            per_model.append(metrics.translation_metrics(pred, target, bs.bands))
            per_base.append(metrics.translation_metrics(base, target, bs.bands))
            per_oracle.append(metrics.translation_metrics(_flat(target.mean(axis=(1, 2)), target.shape), target,
                                                          bs.bands))
            names.append(val.name(i))
            if len(shown) < int(cfg["eval"]["figures"]):
                shown.append((np.asarray(sd.sar_to_network(db) if isinstance(val, sd.BigEarthNetPairs)
                                         else val.full_pair(i)[0]), pred, target))
            log(f"validation {names[-1]}: model PSNR {per_model[-1]['psnr']:.2f} SSIM {per_model[-1]['ssim']:.3f} | "
                f"baseline {per_base[-1]['psnr']:.2f} / {per_base[-1]['ssim']:.3f}")
        floods = None
        if cfg["data"].get("sen1floods11"):
            s1_tif, dn12 = sd.sen1floods11_pair(common.resolve_path(cfg["data"]["sen1floods11"]))
            target = sd.dn_to_reflectance(dn12[[sd.S2_L2A_ORDER.index(b) for b in bs.bands]])
            pred = plugin_translate(card_path, s1_tif, tmp_p / "out_sen1floods11.tif", cfg["band_set"])
            floods = {"name": "Spain_7370579", "note": sd.SEN1FLOODS11_NOTE,
                      "model": metrics.translation_metrics(pred, target, bs.bands),
                      "baseline": metrics.translation_metrics(_flat(band_mean, target.shape), target, bs.bands)}
            log(f"sen1floods11 (L1C, apart): model PSNR {floods['model']['psnr']:.2f} SSIM "
                f"{floods['model']['ssim']:.3f} | baseline {floods['baseline']['psnr']:.2f} / "
                f"{floods['baseline']['ssim']:.3f}")
    model_avg = metrics.average_translation(per_model)
    base_avg = metrics.average_translation(per_base)
    beats = {"psnr": model_avg["psnr"] > base_avg["psnr"], "ssim": model_avg["ssim"] > base_avg["ssim"]}
    targets = targets_met(cfg["band_set"], model_avg, base_avg)
    products = sorted({val.product(i) for i in range(n)}) if hasattr(val, "product") else []
    if shown:
        plots.translation_pairs_png(ev_dir / f"{cfg['band_set']}_pairs.png", shown, cfg["band_set"], bs.bands)
    result = metrics.clean_nan({
        "band_set": cfg["band_set"], "bands": list(bs.bands), "held_out": names, "validation_products": products,
        "data_range": metrics.DATA_RANGE, "path": "core.inference.translate_sar_to_eo on GeoTIFF inputs, "
        f"model file in {cfg['export']['dtype']} as exported (weights sha256 {scored_sha})",
        "scored_weights_sha256": scored_sha,
        "model": model_avg, "baseline": base_avg, "baseline_definition":
            "training-set per-band mean reflectance predicted at every pixel", "beats_baseline": beats,
        "targets": targets, "flat_target_mean": metrics.average_translation(per_oracle),
        "flat_target_mean_definition":
            "each validation image's own per-band mean everywhere (uses the answer; the best any flat image can do)",
        "sen1floods11": floods, "checkpoint": ident, "epochs_completed": meta.get("epochs_completed"),
        "steps": meta.get("global_step"),
        "per_image": [{"name": nm, "model": m, "baseline": b} for nm, m, b in zip(names, per_model, per_base)]})
    common.write_json(ev_dir / "metrics.json", result)
    log(f"validation ({len(names)} pairs, {len(products)} products): model PSNR {model_avg['psnr']:.2f} dB SSIM "
        f"{model_avg['ssim']:.3f} | baseline PSNR {base_avg['psnr']:.2f} dB SSIM {base_avg['ssim']:.3f} | "
        f"targets met: {targets['all']} (step {ident['step']})")
    return result


# ------------------------------------------------------------------------------------------------ export
def _data_description(cfg: Dict[str, Any], ev: Dict[str, Any]) -> str:
    d = cfg["data"]
    if d.get("description"):
        return d["description"]
    if d["kind"] == "bigearthnet":
        return (f"real BigEarthNet S1 GRD (dB) / S2 L2A pairs, 120 x 120 px at 10 m, from "
                f"{', '.join(str(r) for r in (d.get('roots') or [d['root']]))}; split by Sentinel-2 product: "
                f"validation = {len(ev['held_out'])} pairs of products {', '.join(ev.get('validation_products', []))}, "
                "training = every other pair (training/sar2eo_data.py lists both sides)")
    return (f"SEN12MS {d['root']} ({int(d.get('fraction', 1) * 100)} % of training pairs, "
            f"{int(d.get('val_fraction', 0.1) * 100)} % of scenes held out)")


def _card_metrics(cfg: Dict[str, Any], ev: Dict[str, Any], meta: Dict[str, Any]) -> Dict[str, Any]:
    def row(m: Dict[str, Any]) -> Dict[str, Any]:
        return {"psnr_db": m["psnr"], "ssim": m["ssim"], "band_rmse": m["band_rmse"], "ndvi": m["ndvi"]}

    out = {"validation": ev["held_out"], "validation_products": ev.get("validation_products"),
           "data_range": ev["data_range"], "path": ev.get("path"), **row(ev["model"]),
           "baseline": dict(row(ev["baseline"]), definition=ev["baseline_definition"],
                            band_mean_reflectance=meta.get("train_band_mean")),
           "flat_target_mean": {"definition": ev.get("flat_target_mean_definition"),
                                "psnr_db": (ev.get("flat_target_mean") or {}).get("psnr"),
                                "ssim": (ev.get("flat_target_mean") or {}).get("ssim")},
           "seed_sen12ms": dict(SEED_METRICS[cfg["band_set"]],
                                definition="the seed's reported test scores on SEN12MS (L1C, GPU); other data"),
           "beats_baseline": ev["beats_baseline"], "targets": ev["targets"],
           "experimental": not ev["targets"]["all"],
           "checkpoint": {"sha256": ev["checkpoint"]["sha256"], "step": ev["checkpoint"]["step"]},
           "definitions": "reflectance 0..1, PSNR over all bands, SSIM skimage (data_range 1.0, channel_axis=0, "
                          "7x7), mean over validation images"}
    if ev.get("sen1floods11"):
        f = ev["sen1floods11"]
        out["sen1floods11_l1c"] = {"note": f["note"], "model": row(f["model"]), "baseline": row(f["baseline"])}
    return out


def export(cfg: Dict[str, Any], checkpoint: Optional[str] = None, models_dir: Optional[str] = None) -> Path:
    """The checkpoint's G_A as the plugin's model file, with the card carrying the metrics that ``evaluate``
    measured on this very checkpoint (refused otherwise) and the weights file it scored (checked by sha256)."""
    import json

    cfg = config(cfg)
    run_dir = common.resolve_path(cfg["run_dir"])
    stem = common.checkpoint_stem(Path(checkpoint) if checkpoint else run_dir / "ckpt_last")
    ev_path = run_dir / "eval" / "metrics.json"
    if not ev_path.is_file():
        raise common.TrainingError(f"no evaluation at {ev_path}: run `python -m training sar2eo evaluate` first; a "
                                   "card without measured metrics is not exported")
    ev = json.loads(ev_path.read_text(encoding="utf-8"))
    common.check_metrics_match(ev, stem, ev_path)
    G, meta = generator_from_checkpoint(cfg, stem)
    t, d = cfg["train"], cfg["data"]
    plan = (meta.get("config") or cfg)["train"]  # the schedule the checkpoint was trained under
    training = {
        "data": _data_description(cfg, ev),
        "optical_level": "L2A surface reflectance" if d["kind"] == "bigearthnet" else "L1C TOA reflectance",
        "resolution_m": 10, "patch_px": 120 if d["kind"] == "bigearthnet" else 256, "crop_px": d.get("crop_size"),
        "scale": "trained and validated at 10 m ground sampling (S1 and S2 on the same 10 m grid; 20/60 m bands "
                 "repeated onto it); run it on 10 m Sentinel-1 GRD",
        "method": f"CycleGAN as the seed (ResNet-{cfg['model']['n_blocks']} generator ngf {cfg['model']['ngf']}, "
                  f"70x70 PatchGAN, LSGAN, cycle lambda {t['lambda_cycle']}, image pool {t['pool_size']}, Adam "
                  f"{t['lr']} betas {t['beta1']}/{t['beta2']}, constant then linear LR decay, normal(0, 0.02) init)"
                  + (f" plus the paired L1 term |G(S1) - S2| with lambda_L1 = {t['lambda_L1']}" if t["lambda_L1"]
                     else " (unpaired, lambda_L1 = 0)"),
        "lambda_L1": t["lambda_L1"], "identity_loss": meta.get("identity"),
        "epochs_completed": meta.get("epochs_completed"), "epochs_planned": plan["epochs"],
        "decay_epochs": plan["decay_epochs"], "steps": meta.get("global_step"),
        "batch_size": t["batch_size"], "samples_per_epoch": meta.get("samples_per_epoch"),
        "stopped_by_time_budget": meta.get("stopped_by_time_budget", False),
        "world_size": meta.get("world_size"), "device": meta.get("device"), "threads": cfg["threads"],
        # the precision the checkpoint was trained with (checkpoints older than these options: float32, NCHW)
        "amp": plan.get("amp", "none"), "channels_last": plan.get("channels_last", False),
        "wall_minutes": round(float(meta.get("wall_seconds", 0)) / 60, 2), "seed": cfg["seed"],
        "config": cfg.get("_config_file"), "git_commit": meta.get("git_commit"), "torch": meta.get("torch"),
        "command": f"python -m training sar2eo train --config {cfg.get('_config_file', '<config>')}",
    }
    card_metrics = _card_metrics(cfg, ev, meta)
    beats, targets = ev["beats_baseline"], ev["targets"]
    verdict = (f"Validation targets met ({targets['definition']})." if targets["all"] else
               f"EXPERIMENTAL: misses its validation target ({targets['definition']}; PSNR "
               f"{'met' if targets['psnr'] else 'missed'}, SSIM {'met' if targets['ssim'] else 'missed'}). "
               + ("It beats the baseline in both, by less than the target." if beats["psnr"] and beats["ssim"] else
                  "It does not beat the baseline of predicting the training set's mean reflectance everywhere on "
                  + " and ".join(k.upper() for k, v in beats.items() if not v) + "."))
    notes = " ".join(x for x in [verdict, cfg["export"].get("notes") or ""] if x)  # the verdict first
    out = common.resolve_path(models_dir or cfg["export"]["models_dir"])
    path = write_model(cfg, G, out, training, card_metrics, notes)
    shipped = modelfile.read_card(path).weights["sha256"]
    if shipped != ev.get("scored_weights_sha256"):
        raise common.TrainingError(f"the exported weights (sha256 {shipped[:12]}…) are not the file evaluate scored "
                                   f"({str(ev.get('scored_weights_sha256'))[:12]}…)")
    status = "targets met" if targets["all"] else "EXPERIMENTAL"
    print(f"exported {path} (weights sha256 {shipped[:12]}…, {status})")
    return path

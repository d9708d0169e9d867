"""Cloud mask: U-Net + EfficientNet-B2 (``core.networks.build_cloud_unet``), as in the seed: train, evaluate, export.

Loss 0.25 * Focal + 0.75 * Dice (segmentation-models-pytorch losses, binary, on logits); AdamW;
ReduceLROnPlateau on validation IoU; early stopping after ``patience`` epochs without a val-IoU gain; the best
checkpoint (by val IoU) is kept as ``<run>/ckpt_best`` and is what ``evaluate`` and ``export`` use by default.

ImageNet encoder weights are used only when ``model.imagenet_weights`` names a local file (safetensors, or a
tensors-only ``.pth`` read with ``weights_only=True``); nothing is downloaded. Without it the network is trained
from scratch, and the log and the model card say so.

Multi-process (``torchrun``): the U-Net is wrapped in DistributedDataParallel; rank 0 writes everything.
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from sar2eo_cloud_plugin.core import cards, modelfile, networks, onnxexport

from . import cloud_data, common, metrics, plots
from .cloud_data import CLOUDSEN12_SOURCE, CloudArrays, build_cloud_items, localise_cloudsen12

_O = common.Option
OPTIONS: common.OptionTree = {
    "task": _O("cloudmask", "the task this config is for (always cloudmask here)"),
    "seed": _O(0, "seed of every random choice (init, split, crops, flips, synthetic clouds)"),
    "device": _O("auto", "auto (CUDA when present), cuda or cpu"),
    "threads": _O(None, "torch intra-op threads (None: torch's default); 1 or 2 on a shared CPU"),
    "run_dir": _O("runs/cloudmask", "folder of checkpoints, train.log and eval/ (relative: to the repository)"),
    "data": {
        "kind": _O("cloudsen12", "cloudsen12 (the seed's dataset), bigearthnet_pseudo (real patches, rule labels) "
                                 "or teacher (real patches labelled by ukis-csmask + synthetic clouds)"),
        "cache_dir": _O("data-cache/cloudsen12", "cloudsen12: the .npy cache that `localise` fills"),
        "source": _O(CLOUDSEN12_SOURCE, "cloudsen12: TACO dataset id or local .taco/.tacozip path(s) to localise"),
        "n_samples": _O(3000, "cloudsen12: samples localised and used"),
        "auto_localise": _O(True, "cloudsen12: fill a short cache before training (needs the source)"),
        "val_fraction": _O(0.2, "cloudsen12: share of the samples held out for validation"),
        "resize": _O(256, "cloudsen12 / bigearthnet_pseudo: training images resized to this many pixels (None: "
                          "native size)"),
        "crop": _O(None, "random training crop in pixels (None: no crop; teacher: None means 64)"),
        "val_resize": _O(256, "validation images resized to this many pixels (None: native size)"),
        "samples_per_epoch": _O(None, "training samples drawn per epoch (None: one per item; teacher: 256)"),
        "jitter": _O(True, "cloudsen12 / bigearthnet_pseudo: random colour jitter in training"),
        "num_workers": _O(2, "DataLoader worker processes (0 on a small CPU)"),
        "root": _O("sample_data", "bigearthnet_pseudo: folder holding s2/*_L2A12.tif"),
        "holdout": _O([], "bigearthnet_pseudo: patch names held out for validation (quote them in YAML)"),
        "rule_threshold": _O(0.15, "bigearthnet_pseudo: threshold of the rule-based pseudo-labeller"),
        "description": _O(None, "text for the card's training.data (None: written from the data actually read)"),
        "teacher_cache": _O("data-cache/cloud_teacher_30m", "teacher: cache of the teacher-labelled 30 m patches "
                                                            "(built once from shared_data)"),
        "shared_data": _O(None, "teacher: folder of the real data (None: ../shared/data beside the repository)"),
        "val_dates": _O([], "teacher: sensing dates (YYYYMMDD) whose products validate; all others train"),
        "synthetic_share": _O(0.6, "teacher: share of training samples that carry synthetic clouds and shadows"),
        "clear_max": _O(0.01, "teacher: a patch with at most this teacher cloud fraction counts as clear (synthetic "
                              "clouds are composited onto clear patches only)"),
        "opacity_label": _O(0.3, "teacher: synthetic cloud opacity from which a pixel is labelled cloud"),
        "val_synthetic": _O(32, "teacher: fixed synthetic validation samples on the validation products"),
    },
    "model": {
        "encoder": _O("efficientnet-b2", "segmentation-models-pytorch encoder of the U-Net (the seed's)"),
        "imagenet_weights": _O(None, "local ImageNet encoder weights (.safetensors or tensors-only .pth); None: "
                                     "trained from scratch (nothing is downloaded)"),
    },
    "train": {
        "epochs": _O(30, "epochs at most (early stopping and max_minutes may end sooner)"),
        "batch_size": _O(8, "samples per step and process"),
        "lr": _O(1e-3, "AdamW learning rate"),
        "weight_decay": _O(1e-4, "AdamW weight decay"),
        "focal_weight": _O(0.25, "weight of the binary focal loss"),
        "dice_weight": _O(0.75, "weight of the binary Dice loss"),
        "patience": _O(5, "early stopping: epochs without a validation-IoU gain"),
        "plateau_patience": _O(2, "ReduceLROnPlateau: epochs without a validation-IoU gain before the LR drops"),
        "plateau_factor": _O(0.5, "ReduceLROnPlateau: factor the LR is multiplied by"),
        "max_minutes": _O(None, "stop (with a checkpoint) after this many minutes; None: no limit"),
        "log_every": _O(10, "steps between progress-bar updates"),
        "monitor_hand_labelled": _O(True, "log the cloud IoU on the hand-labelled sentinel2_north scene each epoch "
                                          "(a reading only; never used to select)"),
        **common.HISTORY_OPTIONS,
        **common.PRECISION_OPTIONS,
    },
    "eval": {
        "threshold": _O(0.5, "cloud probability from which a pixel is cloud (also the card's threshold)"),
        "figures": _O(4, "validation samples shown in <run>/eval/cloudmask_examples.png"),
        "batch_size": _O(4, "validation samples per forward pass"),
    },
    "export": {
        "models_dir": _O("sar2eo_cloud_plugin/models", "where the model file, card and ONNX graph are written"),
        "dtype": _O("float16", "weights dtype of the exported model (float16 or float32)"),
        "name": _O(None, "model name (None: the bundled cloudmask name)"),
        "notes": _O("", "text put in the card's notes"),
    },
}
DATA_KINDS = ("cloudsen12", "bigearthnet_pseudo", "teacher")


def config(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """``cfg`` over the defaults; unknown keys and an unknown data.kind raise :class:`common.ConfigError`."""
    out = common.apply_options(OPTIONS, cfg)
    if out["data"]["kind"] not in DATA_KINDS:
        raise common.ConfigError(f"data.kind '{out['data']['kind']}' is none of {', '.join(DATA_KINDS)}")
    if out["export"]["dtype"] not in ("float16", "float32"):
        raise common.ConfigError(f"export.dtype '{out['export']['dtype']}' is neither float16 nor float32")
    common.check_amp(out["train"]["amp"])  # the value; whether the device can run it is checked at train
    common.check_channels_last(out["train"]["channels_last"])
    return out


def localise_from_config(cfg: Dict[str, Any]) -> List[str]:
    cfg = config(cfg)
    d = cfg["data"]
    return localise_cloudsen12(common.resolve_path(d["cache_dir"]), int(d["n_samples"]), d["source"], cfg["seed"])


def build_model(cfg: Dict[str, Any], log=print):
    """The U-Net, with ImageNet encoder weights from a local file when configured; returns (net, note)."""
    net = networks.build_cloud_unet(encoder_name=cfg["model"]["encoder"], in_channels=3, classes=1,
                                    encoder_weights=None)
    path = cfg["model"].get("imagenet_weights")
    if not path:
        note = ("trained from scratch: no ImageNet encoder weights (model.imagenet_weights is unset; nothing is "
                "downloaded)")
    else:
        p = common.resolve_path(path)
        if not p.is_file():
            raise common.ConfigError(f"model.imagenet_weights: {p} does not exist")
        # third-party encoder weights (ImageNet), not a training checkpoint: common.load_checkpoint reads those
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(p))
        else:
            import torch

            sd = torch.load(str(p), map_location="cpu", weights_only=True)
        sd = {k[len("encoder."):] if k.startswith("encoder.") else k: v for k, v in sd.items()}
        own = net.encoder.state_dict()
        usable = {k: v for k, v in sd.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
        net.encoder.load_state_dict(usable, strict=False)  # smp's encoders return None here: count ourselves
        missing = [k for k in own if k not in usable]
        loaded = len(usable)
        if loaded == 0:
            raise common.CheckpointError(f"model.imagenet_weights: no tensor of {p} matches the "
                                         f"{cfg['model']['encoder']} encoder")
        note = f"encoder initialised from ImageNet weights in {p.name} ({loaded} tensors, {len(missing)} missing)"
    log(note)
    return net, note


def _pad32(x):
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    ph, pw = (-h) % 32, (-w) % 32
    return (F.pad(x, (0, pw, 0, ph), mode="reflect") if (ph or pw) else x), h, w


def predict_probs(net, images, device) -> np.ndarray:
    """(N, 3, H, W) normalised tensor -> (N, H, W) cloud probability (pads to a multiple of 32)."""
    import torch

    x, h, w = _pad32(images.to(device))
    with torch.no_grad():
        return torch.sigmoid(net(x))[:, 0, :h, :w].float().cpu().numpy()


def run_validation(net, items, cfg, device) -> Dict[str, Any]:
    import torch

    ds = CloudArrays(items, train=False, resize=cfg["data"].get("val_resize"))
    counts = np.zeros(4, dtype=np.int64)
    net.eval()
    bs = int(cfg["eval"]["batch_size"])
    thr = float(cfg["eval"]["threshold"])
    kept = []
    s = 0
    while s < len(ds):
        batch = [ds[s]]
        while len(batch) < bs and s + len(batch) < len(ds) and \
                ds[s + len(batch)]["image"].shape == batch[0]["image"].shape:   # one size per batch
            batch.append(ds[s + len(batch)])
        s += len(batch)
        probs = predict_probs(net, torch.stack([b["image"] for b in batch]), device)
        for b, p in zip(batch, probs):
            t = b["mask"][0].numpy() > 0.5
            counts += metrics.confusion(p >= thr, t)
            if len(kept) < int(cfg["eval"]["figures"]):
                kept.append((b, p))
    return {"counts": counts, "scores": metrics.segmentation_scores(counts), "examples": kept}


def hand_labelled_rgb(scene: str = "sentinel2_north"):
    """(B4, B3, B2 digital numbers (3, H, W), truth classes (H, W)) of a hand-labelled scene, as
    ``benchmarks/cloud_quality.py`` writes it for the plugin (reflectance x 10,000, rounded, >= 1)."""
    from benchmarks import cloud_quality as cq

    with np.load(cq.DATA / f"{scene}.npz", allow_pickle=False) as z:
        img, truth = z["img"].astype(np.float32), cq.labels_to_classes(z["msk"][:, :, 0])
    dn = np.clip(np.rint(img.transpose(2, 0, 1) * 10000.0), 1, 65535)
    return dn[[cq.BANDS.index(b) for b in ("B4", "B3", "B2")]].astype(np.float32), truth


def monitor_hand_labelled(net, device, threshold: float, scene=None) -> float:
    """Cloud IoU on the hand-labelled Sentinel-2 half-scene (30 m), the network applied directly: a cheap
    per-epoch reading for the log. The figures that count come from :func:`evaluate` (the plugin's engine)."""
    import torch

    from sar2eo_cloud_plugin.core import cloud as core_cloud, normalisation as norm

    rgb, truth = scene if scene is not None else hand_labelled_rgb()
    net.eval()
    p = predict_probs(net, torch.from_numpy(norm.cloud_preprocess(rgb)[None].astype(np.float32)), device)[0]
    return float(metrics.segmentation_scores(metrics.confusion(p >= threshold,
                                                               truth == core_cloud.CLOUD))["iou"])


def build_data(cfg: Dict[str, Any], log=print):
    """(training dataset, validation items, description of the data, split record or None)."""
    d = cfg["data"]
    if d.get("kind") == "teacher":
        root = common.resolve_path(d["shared_data"]) if d.get("shared_data") else cloud_data.SHARED_DATA
        cache = common.resolve_path(d["teacher_cache"])
        idx = cloud_data.build_teacher_cache(cache, root, log)
        items = cloud_data.load_teacher_items(cache, idx)
        tr, va = cloud_data.split_by_date(items, common.names(d.get("val_dates"), "data.val_dates"))
        synth = cloud_data.SyntheticClouds(opacity_label=float(d["opacity_label"]))
        crop = int(d.get("crop") or 64)
        ds = cloud_data.TeacherCloudSamples(tr, crop, int(d.get("samples_per_epoch") or 256),
                                            float(d["synthetic_share"]), float(d["clear_max"]), synth)
        syn_val = cloud_data.synthetic_val_items(va, int(d["val_synthetic"]), crop, int(cfg["seed"]) + 1,
                                                 float(d["clear_max"]), synth)
        val_items = [(it.rgb_dn, it.cloud, it.name) for it in va] + syn_val
        split = cloud_data.describe_split(tr, va)
        split["refused"] = {e["name"]: e["reason"] for e in idx["patches"] if e["status"] != "ok"}
        split["val_dates"] = list(d.get("val_dates") or [])
        split["synthetic_share_train"] = float(d["synthetic_share"])
        split["val_samples"] = {"real_teacher": len(va), "synthetic": len(syn_val)}
        split["teachers"] = idx["teachers"]
        n_l1c = sum(it.product.startswith("20190918") for it in items)
        teachers = ", ".join(f"{k}: {v['model']}" for k, v in idx["teachers"].items())
        desc = (f"{len(items)} real Sentinel-2 patches of ../shared/data (BigEarthNet L2A x {len(items) - n_l1c}, "
                f"Sen1Floods11 L1C x {n_l1c}; {len(split['refused'])} refused by the plugin's 8-bit check), "
                f"labelled at {cloud_data.STUDENT_RESOLUTION_M:g} m by ukis-csmask 1.0.0 through the plugin "
                f"({teachers}); {100 * float(d['synthetic_share']):.0f} % of the training samples carry synthetic "
                "clouds and shadows from satellite-cloud-generator 0.4 composited onto clear real patches (exact "
                f"labels: cloud where the opacity >= {float(d['opacity_label']):g}); split by sensing date: "
                f"{len(tr)} patches of {len(split['train_products'])} products train, {len(va)} patches of "
                f"{len(split['val_products'])} products ({', '.join(split['val_dates'])}) validate, plus "
                f"{len(syn_val)} fixed synthetic validation samples on them")
        log("split: " + json.dumps(split))
        return ds, val_items, desc, split
    train_items, val_items, desc = build_cloud_items(d, cfg["seed"], log)
    ds = CloudArrays(train_items, train=True, resize=d.get("resize"), crop=d.get("crop"),
                     samples_per_epoch=d.get("samples_per_epoch"), jitter=d.get("jitter", True), seed=cfg["seed"])
    return ds, val_items, desc, None


def unet_loss(t_cfg: Dict[str, Any]):
    """The training loss ``focal_weight * Focal + dice_weight * Dice`` (smp, binary, on logits) as a function of
    (logits, mask); shared by :func:`train` and the benchmark."""
    import segmentation_models_pytorch as smp

    focal = smp.losses.FocalLoss(mode="binary")
    dice = smp.losses.DiceLoss(mode="binary", from_logits=True)
    wf, wd = float(t_cfg["focal_weight"]), float(t_cfg["dice_weight"])
    return lambda logits, y: wf * focal(logits, y) + wd * dice(logits, y)


def training_step(model, opt, scaler, loss_fn, x, y, t_cfg: Dict[str, Any]):
    """One optimiser step of the U-Net; returns the (float32) loss tensor. Shared by :func:`train` and the
    benchmark. ``t_cfg['amp']`` picks the autocast of the forward pass, ``t_cfg['channels_last']`` the memory
    format of the batch (the network is converted once by the caller, before any DDP wrap). ``scaler`` is the
    run's :func:`training.common.grad_scaler`, kept across steps (fp16's loss scale adapts over steps)."""
    x = common.channels_last(x, t_cfg["channels_last"])
    opt.zero_grad(set_to_none=True)
    with common.autocast(t_cfg["amp"], x.device):
        logits = model(x)
    # the loss outside autocast, in float32: Dice sums over whole images, which bf16 / fp16 would round
    loss = loss_fn(logits.float(), y)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    return loss


def train(cfg: Dict[str, Any], resume: bool = False) -> Dict[str, Any]:
    import torch
    from torch.utils.data import DataLoader
    from torch.utils.data.distributed import DistributedSampler
    from tqdm import tqdm

    cfg = config(cfg)
    dist, run_dir, log = common.start_training(cfg)
    dev = dist.device
    t_cfg, d_cfg = cfg["train"], cfg["data"]
    scaler = common.grad_scaler(t_cfg["amp"], dev)  # refuses fp16 off CUDA before any data is read
    if not dist.is_main:
        dist.barrier()  # rank 0 localises CloudSEN12 first; the others then read the cache
    ds, val_items, data_desc, split = build_data(cfg, log)
    if dist.is_main:
        dist.barrier()
    if len(ds) == 0:
        raise common.DataError("no training samples")
    monitor = t_cfg.get("monitor_hand_labelled") and (cloud_data.SHARED_DATA / "cloud-labelled").is_dir()
    scene = hand_labelled_rgb() if monitor and dist.is_main else None
    net, init_note = build_model(cfg, log if dist.is_main else (lambda m: None))
    common.channels_last(net.to(dev), t_cfg["channels_last"])  # before the DDP wrap, which keeps the format
    common.broadcast_module(dist, net)
    model = net
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        # smp's EfficientNet encoder keeps the classifier head's last layers, which take no part in the U-Net
        model = DDP(net, device_ids=[dev.index] if dev.type == "cuda" else None, find_unused_parameters=True)
    opt = torch.optim.AdamW(net.parameters(), lr=t_cfg["lr"], weight_decay=t_cfg["weight_decay"])
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=t_cfg["plateau_factor"],
                                                       patience=t_cfg["plateau_patience"])
    loss_fn = unet_loss(t_cfg)

    last, best = run_dir / "ckpt_last", run_dir / "ckpt_best"
    start_epoch, step, history, best_iou, bad_epochs, wall_before = 0, 0, [], -1.0, 0, 0.0
    epoch_log: List[Dict[str, Any]] = []
    if resume:
        if not common.checkpoint_exists(last):
            raise common.CheckpointError(f"--resume: no checkpoint at {last}.json/.safetensors")
        meta = common.load_checkpoint(last, {"unet": net}, {"opt": opt})
        if "scheduler" not in meta:
            raise common.CheckpointError(f"--resume: {last}.json holds no scheduler state (not a cloudmask "
                                         "checkpoint?)")
        sched.load_state_dict(meta["scheduler"])
        if meta.get("grad_scaler") and scaler.is_enabled():
            scaler.load_state_dict(meta["grad_scaler"])
        start_epoch, step = int(meta["epochs_completed"]), int(meta["global_step"])
        history, best_iou, bad_epochs = meta["history"], float(meta["best_iou"]), int(meta["bad_epochs"])
        epoch_log, wall_before = meta.get("epoch_log", []), float(meta.get("wall_seconds", 0))
        log(f"resumed from {last} at epoch {start_epoch}, step {step}, best val IoU {best_iou:.4f}")
    history = common.bounded_history(history, int(t_cfg["history_steps"]))
    log(f"{len(val_items)} val samples; {len(ds)} samples per epoch; device {dev}; "
        f"world size {dist.world}")
    log(f"precision: train.amp = {t_cfg['amp']}" + (" (fp16 with a GradScaler)" if scaler.is_enabled() else "")
        + f"; train.channels_last = {t_cfg['channels_last']}")

    sampler = DistributedSampler(ds, num_replicas=dist.world, rank=dist.rank, shuffle=True, seed=cfg["seed"]) \
        if dist.enabled else None
    g = torch.Generator()
    g.manual_seed(cfg["seed"])
    t0 = time.time()
    max_s = float(t_cfg["max_minutes"]) * 60 if t_cfg.get("max_minutes") else None
    stopped, stop_reason = False, None
    epochs_completed = start_epoch

    def meta_dict(ep_done: int, scores: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        return {"task": "cloudmask", "epochs_completed": ep_done, "global_step": step, "history": list(history),
                "epoch_log": epoch_log, "best_iou": best_iou, "bad_epochs": bad_epochs,
                "scheduler": sched.state_dict(), "config": cfg,
                "grad_scaler": scaler.state_dict() if scaler.is_enabled() else None,
                "data": data_desc, "init": init_note,
                "world_size": dist.world, "device": str(dev), "torch": torch.__version__,
                "wall_seconds": wall_before + time.time() - t0, "git_commit": common.git_commit(),
                "stop_reason": stop_reason, "val_scores": scores,
                "split": split, "samples_per_epoch": len(ds), "val_samples": len(val_items)}

    for epoch in range(start_epoch, int(t_cfg["epochs"])):
        if sampler is not None:
            sampler.set_epoch(epoch)
        loader = DataLoader(ds, batch_size=int(t_cfg["batch_size"]), sampler=sampler, shuffle=sampler is None,
                            generator=g if sampler is None else None, num_workers=int(d_cfg.get("num_workers") or 0),
                            drop_last=len(ds) >= int(t_cfg["batch_size"]) * dist.world,
                            pin_memory=dev.type == "cuda",
                            **common.loader_worker_kwargs(dist, int(d_cfg.get("num_workers") or 0)))
        model.train()
        tot, nb = 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{t_cfg['epochs']}", disable=not dist.is_main, mininterval=5,
                   file=sys.stdout, ncols=100)
        for batch in bar:
            loss = training_step(model, opt, scaler, loss_fn, batch["image"].to(dev), batch["mask"].to(dev), t_cfg)
            step += 1
            nb += 1
            tot += loss.item()
            history.append({"step": step, "epoch": epoch, "loss": loss.item()})
            if step % int(t_cfg["log_every"]) == 0:
                bar.set_postfix(loss=f"{loss.item():.4f}")
            if max_s is not None and time.time() - t0 > max_s:
                stopped, stop_reason = True, f"time budget of {t_cfg['max_minutes']} min"
                break
        train_loss = dist.mean_scalar(tot / max(nb, 1))
        scores = None
        if val_items:
            if dist.is_main:
                scores = run_validation(net, val_items, cfg, dev)["scores"]
            iou = scores["iou"] if scores else -1.0
            iou = dist.broadcast_scalar(-1.0 if math.isnan(iou) else iou)  # validation runs on rank 0 only
        else:
            iou = -train_loss  # no validation data: track the training loss instead (said in the log)
        sched.step(iou)
        improved = iou > best_iou + 1e-6
        if improved:
            best_iou, bad_epochs = iou, 0
        else:
            bad_epochs += 1
        hand = monitor_hand_labelled(net, dev, float(cfg["eval"]["threshold"]), scene) if scene is not None else None
        epoch_log.append({"epoch": epoch + 1, "step": step, "train_loss": train_loss, "val": scores,
                          "lr": opt.param_groups[0]["lr"], "sentinel2_north_iou_monitor": hand})
        log(f"epoch {epoch + 1}: step {step}, train loss {train_loss:.4f}" + (
            f", val IoU {scores['iou']:.4f} F1 {scores['f1']:.4f} acc {scores['accuracy']:.4f}" if scores else
            " (no validation set: early stopping follows the training loss)") +
            f", lr {opt.param_groups[0]['lr']:.2e}{' (best)' if improved else ''} ({time.time() - t0:.0f} s)"
            + (f"; sentinel2_north cloud IoU (monitor, not used for selection) {hand:.4f}" if hand is not None else ""))
        epochs_completed = epoch + (0 if stopped else 1)
        if dist.is_main:
            if improved:
                common.save_checkpoint(best, {"unet": net}, {}, meta_dict(epoch + 1, scores))
            common.save_checkpoint(last, {"unet": net}, {"opt": opt}, meta_dict(epochs_completed, scores))
        dist.barrier()
        if stopped:
            log(f"stopped: {stop_reason}")
            break
        if bad_epochs >= int(t_cfg["patience"]):
            stop_reason = f"early stopping: no val-IoU gain for {t_cfg['patience']} epochs"
            log(stop_reason)
            if dist.is_main:
                common.save_checkpoint(last, {"unet": net}, {"opt": opt}, meta_dict(epochs_completed, scores))
            break
    if dist.enabled:
        checksum = float(sum(float(p.detach().double().sum()) for p in net.parameters()))
        log(f"parameters identical on all {dist.world} ranks: {dist.same_on_all_ranks(checksum)}")
    dist.close()
    return {"run_dir": str(run_dir), "steps": step, "history": list(history), "best_iou": best_iou}


def _load_unet(cfg: Dict[str, Any], stem: Path):
    """(U-Net in eval mode, checkpoint meta, checkpoint stem) through the package's one checkpoint loader."""
    stem = common.checkpoint_stem(stem)
    net = networks.build_cloud_unet(encoder_name=cfg["model"]["encoder"], in_channels=3, classes=1)
    meta = common.load_checkpoint(stem, {"unet": net}, restore_rng=False)
    return net.eval(), meta, stem


def _default_stem(run_dir: Path) -> Path:
    return run_dir / "ckpt_best" if common.checkpoint_exists(run_dir / "ckpt_best") else run_dir / "ckpt_last"


TEACHER_ATTRIBUTION = {
    "package": "ukis-csmask", "version": "1.0.0", "licence": "Apache-2.0",
    "licence_file": "LICENSE-ukis-csmask-Apache-2.0.txt", "notice_file": "NOTICE-ukis-csmask.txt",
    "by": "German Aerospace Center (DLR)",
    "citation": "Wieland, M., Fichtner, F., Martinis, S. (2022): UKIS-CSMASK: a Python package for multi-sensor "
                "cloud and cloud shadow segmentation. ISPRS Archives XLIII-B3-2022, 217-222",
    "role": "labelled the real training patches (its predictions, not its weights, were used)"}
SYNTHETIC_ATTRIBUTION = {
    "package": "satellite-cloud-generator", "version": "0.4", "licence": "Apache-2.0",
    "url": "https://github.com/strath-ai/SatelliteCloudGenerator",
    "citation": "Czerkawski, M., Atkinson, R., Michie, C., Tachtatzis, C. (2023): SatelliteCloudGenerator: "
                "Controllable Cloud and Shadow Synthesis for Multi-Spectral Optical Satellite Images. Remote "
                "Sensing 15(17), 4138",
    "role": "synthetic clouds and shadows composited onto clear real patches, with exact labels"}
# The five georeferenced real L2A patches every user has (sample_data/s2): the student's class counts on them
# are the golden figures of tests/core/test_cloud_golden.py; 87_48 holds bright bare fields, 57_38 snow.
REAL_PATCHES = "sample_data/s2/*_L2A12.tif"


def legacy_metrics(ev: Dict[str, Any]) -> Dict[str, Any]:
    """A cloud ``metrics.json`` in the package's format. Files written before the trainers shared one format
    (the bundled run's among them) keep the measured checkpoint's identity under ``identity`` (path under
    ``checkpoint``, a string); today it is ``checkpoint`` = :func:`common.checkpoint_identity`."""
    if not isinstance(ev.get("checkpoint"), dict) and isinstance(ev.get("identity"), dict):
        rec = ev["identity"]
        ev = dict(ev, checkpoint={"path": rec.get("checkpoint"), "sha256": rec.get("sha256"), "step": rec.get("step")})
    return ev


def student_card(cfg: Dict[str, Any]):
    """The card of the student as the plugin runs it: the seed's RGB U-Net at the training resolution."""
    resolution = cloud_data.STUDENT_RESOLUTION_M if cfg["data"].get("kind") == "teacher" else None
    card = cards.cloudmask_card(encoder_name=cfg["model"]["encoder"], name=cfg["export"].get("name") or
                                cards.CLOUDMASK_MODEL_NAME, threshold=float(cfg["eval"]["threshold"]),
                                resolution_m=resolution)
    return card


def engine_scores(card_path: Path, cfg: Dict[str, Any], log=print) -> Dict[str, Any]:
    """The student (``card_path``), the teachers and "all clear" on the hand-labelled scenes through the
    plugin's engine (``benchmarks/cloud_quality.py``), and the student's class fractions on the real patches."""
    import tempfile

    import rasterio

    from benchmarks import cloud_quality as cq
    from sar2eo_cloud_plugin.core import cloud as core_cloud

    models = [str(card_path)] + sorted(cloud_data.TEACHERS.values())
    raw = cq.evaluate(models, list(cq.SCENES), own_code=False)
    out: Dict[str, Any] = {"measured_by": "benchmarks/cloud_quality.py: core.cloud.cloud_mask (the plugin's engine), "
                                          "level L1C, CPU, float32, weights as exported"}
    for scene, rows in raw.items():
        out[scene] = {"student": {k: round(v, 4) for k, v in rows[str(card_path)].items()},
                      "all_clear": {k: round(v, 4) for k, v in rows["all clear (baseline)"].items()},
                      **{f"teacher {m}": {k: round(v, 4) for k, v in rows[m].items()}
                         for m in sorted(cloud_data.TEACHERS.values())}}
        log(f"{scene}: student cloud IoU {rows[str(card_path)]['cloud_iou']:.4f}, " + ", ".join(
            f"{m} {rows[m]['cloud_iou']:.4f}" for m in sorted(cloud_data.TEACHERS.values())) +
            f", all clear accuracy {rows['all clear (baseline)']['cloud_accuracy']:.4f}")
    patches = {}
    with tempfile.TemporaryDirectory(prefix="cloud_patches_") as tmp:
        for tif in sorted(common.REPO_ROOT.glob(REAL_PATCHES)):
            dst = Path(tmp) / f"{tif.stem}.tif"
            core_cloud.cloud_mask(core_cloud.CloudMaskRequest(str(tif), str(dst), model_path=str(card_path),
                                                              device="cpu"))
            with rasterio.open(dst) as ds:
                m = ds.read(1)
            patches[tif.stem.replace("_L2A12", "")] = {"clear": int((m == 0).sum()), "cloud": int((m == 1).sum())}
            log(f"{tif.stem}: student marks {100 * float((m == 1).mean()):.2f} % cloud")
    out["real_patches_class_pixels"] = patches
    return out


def evaluate(cfg: Dict[str, Any], checkpoint: Optional[str] = None) -> Dict[str, Any]:
    import tempfile

    cfg = config(cfg)
    common.set_threads(cfg["threads"])
    run_dir = common.resolve_path(cfg["run_dir"])
    log = common.RunLog(run_dir)
    net, meta, stem = _load_unet(cfg, Path(checkpoint) if checkpoint else _default_stem(run_dir))
    _, val_items, desc, split = build_data(cfg, log)
    if not val_items:
        raise common.DataError("no held-out samples to evaluate on (data.val_dates / data.holdout / data.val_fraction)")
    dev = common.eval_device(cfg["device"])
    res = run_validation(net.to(dev), val_items, cfg, dev)
    s = res["scores"]
    examples = []
    from sar2eo_cloud_plugin.core import normalisation as norm

    for b, p in res["examples"]:
        x = b["image"].numpy()
        m = np.asarray(norm.IMAGENET_MEAN, np.float32)[:, None, None]
        sd = np.asarray(norm.IMAGENET_STD, np.float32)[:, None, None]
        rgb_dn = (x * sd + m) * norm.CLOUD_CLIP_DN  # undo cloud_preprocess for display
        examples.append({"rgb_dn": rgb_dn, "target": b["mask"][0].numpy(), "prob": p,
                         "pred": (p >= float(cfg["eval"]["threshold"])).astype(np.float32), "name": b["name"]})
    plots.cloud_figure(run_dir / "eval" / "cloudmask_examples.png", examples,
                       title=f"validation: IoU {s['iou'] if s['iou'] is not None else float('nan'):.3f}, "
                             f"F1 {s['f1']:.3f}, accuracy {s['accuracy']:.3f}")
    hand = None
    if cfg["data"].get("kind") == "teacher":
        with tempfile.TemporaryDirectory(prefix="cloud_student_") as tmp:
            card_path = modelfile.save_model(net.cpu(), student_card(cfg), tmp, dtype=cfg["export"]["dtype"])
            hand = engine_scores(card_path, cfg, log)
    result = metrics.clean_nan({"scores": s, "threshold": cfg["eval"]["threshold"],
                                "checkpoint": common.checkpoint_identity(stem),
                                "held_out": [n for _, _, n in val_items],
                                "data": desc, "split": split, "hand_labelled": hand,
                                "epochs_completed": meta.get("epochs_completed"), "steps": meta.get("global_step")})
    common.write_json(run_dir / "eval" / "metrics.json", result)
    log(f"validation: IoU {s['iou']:.4f} F1 {s['f1']:.4f} accuracy {s['accuracy']:.4f} "
        f"(target cloud fraction {s['positive_fraction_target']:.4f}, predicted {s['positive_fraction_pred']:.4f})")
    return result


def export(cfg: Dict[str, Any], checkpoint: Optional[str] = None, models_dir: Optional[str] = None) -> Path:
    import os

    import torch

    cfg = config(cfg)
    run_dir = common.resolve_path(cfg["run_dir"])
    net, meta, stem = _load_unet(cfg, Path(checkpoint) if checkpoint else _default_stem(run_dir))
    ev_path = run_dir / "eval" / "metrics.json"
    if not ev_path.is_file():
        raise common.TrainingError(f"no evaluation at {ev_path}: run `python -m training cloudmask evaluate` first; "
                                   "a card without measured metrics is not exported")
    ev = legacy_metrics(json.loads(ev_path.read_text(encoding="utf-8")))
    ident = dict(common.check_metrics_match(ev, stem, ev_path), epoch=meta.get("epochs_completed"))
    card = student_card(cfg)
    t, d = cfg["train"], cfg["data"]
    plan = (meta.get("config") or cfg)["train"]  # what the checkpoint was trained under
    teacher = d.get("kind") == "teacher"
    card.training = {
        "data": d.get("description") or meta.get("data"), "init": meta.get("init"),
        "resolution_m": cloud_data.STUDENT_RESOLUTION_M if teacher else None,
        "loss": f"{t['focal_weight']} * Focal + {t['dice_weight']} * Dice (smp, binary)",
        "optimiser": f"AdamW lr {t['lr']} weight decay {t['weight_decay']}, ReduceLROnPlateau on val IoU",
        "selection": "best validation IoU (real validation products with teacher labels + fixed synthetic samples "
                     "on them); sentinel2_north was only monitored, not used to select" if teacher else
                     f"patience {t['patience']} epochs on val IoU; best checkpoint exported",
        "epochs_completed": meta.get("epochs_completed"), "steps": meta.get("global_step"),
        "batch_size": t["batch_size"],
        # the precision the checkpoint was trained with (checkpoints older than these options: float32, NCHW)
        "amp": plan.get("amp", "none"), "channels_last": plan.get("channels_last", False),
        "augmentation": ({"crop": d.get("crop"), "mosaic_2x2": True, "flips_rot90": True, "gain": [0.9, 1.1],
                          "l1c_like_haze_dn": cloud_data.HAZE_DN.ravel().tolist(),
                          "synthetic_share": d["synthetic_share"], "opacity_label": d["opacity_label"]}
                         if teacher else {"resize": d.get("resize"), "crop": d.get("crop"), "flips_rot90": True,
                                          "colour_jitter": d["jitter"]}),
        "split": ev.get("split"),
        "stop_reason": meta.get("stop_reason"), "world_size": meta.get("world_size"), "device": meta.get("device"),
        "wall_minutes": round(float(meta.get("wall_seconds", 0)) / 60, 2), "seed": cfg["seed"],
        "config": cfg.get("_config_file"), "git_commit": meta.get("git_commit"), "torch": meta.get("torch"),
        "command": f"python -m training cloudmask all --config {cfg.get('_config_file', '<config>')}",
    }
    if teacher:
        card.training["teacher"] = dict(TEACHER_ATTRIBUTION, models=ev["split"]["teachers"])
        card.training["synthetic_clouds"] = SYNTHETIC_ATTRIBUTION
    s = ev["scores"]
    card.metrics = {"validation": {"what": "agreement with the teacher on the validation products and exact "
                                           "synthetic labels on them" if teacher else "held-out samples",
                                   "samples": len(ev["held_out"]), "threshold": ev["threshold"], "iou": s["iou"],
                                   "f1": s["f1"], "pixel_accuracy": s["accuracy"],
                                   "confusion": {k: s[k] for k in ("tp", "fp", "fn", "tn")}},
                    "checkpoint": {k: ident[k] for k in ("sha256", "step", "epoch")}}
    if ev.get("hand_labelled"):
        card.metrics["hand_labelled"] = ev["hand_labelled"]
    last = run_dir / "ckpt_last.json"
    if last.is_file() and last != stem.with_suffix(".json"):
        lm = json.loads(last.read_text(encoding="utf-8"))
        card.training["run"] = {"epochs_run": lm.get("epochs_completed"), "steps_run": lm.get("global_step"),
                                "stop_reason": lm.get("stop_reason"),
                                "wall_minutes": round(float(lm.get("wall_seconds", 0)) / 60, 2),
                                "exported_epoch": meta.get("epochs_completed"),
                                "epoch_log": [{k: e.get(k) for k in ("epoch", "step", "train_loss", "lr",
                                                                     "sentinel2_north_iou_monitor")}
                                              | {"val_iou": (e.get("val") or {}).get("iou")}
                                              for e in lm.get("epoch_log", [])]}
    card.notes = cfg["export"].get("notes") or ""
    out = common.resolve_path(models_dir or cfg["export"]["models_dir"])
    path = modelfile.save_model(net, card, out, dtype=cfg["export"]["dtype"])
    os.chmod(out / card.weights["file"], 0o644)
    back_net, back = modelfile.load_model(path, expected_task="cloudmask")
    with torch.no_grad():
        if back_net(torch.zeros(1, 3, 64, 64)).shape != (1, 1, 64, 64):
            raise common.TrainingError(f"exported {path} does not give one channel per pixel")
    # The ONNX graph the plugin's default runtime runs, derived from the weights as shipped, so the card names
    # both files (as cyclegan.write_model does) and scripts/derive_onnx.py finds nothing to add at set-up.
    onnxexport.export_card_onnx(path)
    back = modelfile.read_card(path)
    print(f"exported {path} ({back.weights['bytes'] / 1e6:.1f} MB {back.weights['dtype']}, sha256 "
          f"{back.weights['sha256'][:12]}…)")
    return path

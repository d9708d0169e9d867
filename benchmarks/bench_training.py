"""Training speed at 256 x 256 px, so a user can plan a SEN12MS / CloudSEN12 run on their hardware.

Runs the real training steps (``training.cyclegan.training_step``; the cloud U-Net's Adam + 0.25 Focal + 0.75 Dice
step as in ``training.cloudmask``) on GENERATED random inputs of the right shape: speed does not depend on the
values. Reports, per configuration, wall-clock images/s and images per CPU-second of this process (the second
figure is what a shared machine can still measure honestly; with N free cores expect up to about N times it).

    python benchmarks/bench_training.py [--threads 1] [--steps 3] [--device cpu] [--out FILE.json]
    python benchmarks/bench_training.py --device cuda --amp bf16 --channels-last   # the full-size GPU path

``--amp`` / ``--channels-last`` are the trainers' ``train.amp`` / ``train.channels_last`` (the same helpers of
``training.common``). bf16 on a CPU without native bfloat16 kernels is far slower than float32: it is meant for GPUs.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _time_steps(step, steps: int, sync) -> dict:
    step()  # warm-up (allocations, oneDNN kernel choice)
    sync()
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    sync()
    return {"wall_s_per_step": (time.perf_counter() - w0) / steps, "cpu_s_per_step": (time.process_time() - c0) / steps}


def cyclegan_case(ngf: int, batch: int, size: int, steps: int, device: str, sync, amp: str = "none",
                  channels_last: bool = False) -> dict:
    import torch

    from training import common, cyclegan

    cfg = cyclegan.config({"band_set": "rgb", "model": {"ngf": ngf},
                           "train": {"lambda_L1": 100.0, "amp": amp, "channels_last": channels_last}})
    t = cfg["train"]
    scaler = common.grad_scaler(amp, device)
    nets = cyclegan.prepare_nets(cyclegan.build_nets(cfg), t, device)
    opts = {"G": torch.optim.Adam(list(nets["G_A"].parameters()) + list(nets["G_B"].parameters()), lr=t["lr"],
                                  betas=(t["beta1"], t["beta2"])),
            "D": torch.optim.Adam(list(nets["D_A"].parameters()) + list(nets["D_B"].parameters()), lr=t["lr"],
                                  betas=(t["beta1"], t["beta2"]))}
    pools = (cyclegan.ImagePool(t["pool_size"]), cyclegan.ImagePool(t["pool_size"]))
    a = torch.rand(batch, 2, size, size, device=device) * 2 - 1
    b = torch.rand(batch, 3, size, size, device=device) * 2 - 1
    res = _time_steps(lambda: cyclegan.training_step(nets, opts, pools, a, b, t, scaler=scaler), steps, sync)
    return dict(res, model=f"CycleGAN rgb, ResNet-9 generator ngf {ngf}, 70x70 PatchGAN, lambda_L1 100",
                batch=batch, size=size, amp=amp, channels_last=channels_last)


def unet_case(batch: int, size: int, steps: int, device: str, sync, amp: str = "none",
              channels_last: bool = False) -> dict:
    import torch

    from training import cloudmask, common

    cfg = cloudmask.config({"train": {"amp": amp, "channels_last": channels_last}})
    net, _ = cloudmask.build_model(cfg, log=lambda m: None)
    common.channels_last(net.to(device), channels_last).train()
    scaler = common.grad_scaler(amp, device)
    t = cfg["train"]
    opt = torch.optim.AdamW(net.parameters(), lr=t["lr"], weight_decay=t["weight_decay"])
    loss_fn = cloudmask.unet_loss(t)
    x = torch.rand(batch, 3, size, size, device=device)
    y = (torch.rand(batch, 1, size, size, device=device) > 0.7).float()
    res = _time_steps(lambda: cloudmask.training_step(net, opt, scaler, loss_fn, x, y, t), steps, sync)
    return dict(res, model=f"cloud U-Net {cfg['model'].get('encoder', 'efficientnet-b2')}, RGB, "
                           "0.25 Focal + 0.75 Dice", batch=batch, size=size, amp=amp, channels_last=channels_last)


def main(argv=None) -> int:
    from training.common import AMP_CHOICES

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--unet-batch", type=int, default=16, help="the seed config's batch (configs/cloudmask.yaml)")
    ap.add_argument("--amp", default="none", choices=list(AMP_CHOICES),
                    help="autocast as the trainers' train.amp (fp16: CUDA only)")
    ap.add_argument("--channels-last", action="store_true", help="as the trainers' train.channels_last")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    prec = dict(amp=args.amp, channels_last=args.channels_last)
    rows = [cyclegan_case(64, 1, args.size, args.steps, args.device, sync, **prec),   # the seed's CycleGAN
            cyclegan_case(32, 1, args.size, args.steps, args.device, sync, **prec),   # the bundled width
            unet_case(args.unet_batch, args.size, args.steps, args.device, sync, **prec)]
    for r in rows:
        r["images_per_s"] = r["batch"] / r["wall_s_per_step"]
        r["images_per_cpu_s"] = r["batch"] / max(r["cpu_s_per_step"], 1e-9)
        print(f"{r['model']}: batch {r['batch']} at {r['size']}^2: {r['wall_s_per_step']:.2f} s/step wall, "
              f"{r['images_per_s']:.3f} images/s wall, {r['images_per_cpu_s']:.3f} images per CPU-second")
    info = {"device": args.device, "threads": args.threads, "torch": torch.__version__, "cpu_count": os.cpu_count(),
            "load_average": os.getloadavg(), "inputs": "GENERATED random tensors (speed only)", "rows": rows}
    if args.out:
        Path(args.out).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

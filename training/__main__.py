"""Command line: ``python -m training {sar2eo,cloudmask} {train,evaluate,export} --config FILE [...]``.

Examples::

    python -m training sar2eo train --config configs/sar2eo_rgb.yaml
    python -m training sar2eo train --config configs/sar2eo_rgb.yaml --resume
    python -m training sar2eo evaluate --config configs/sar2eo_rgb.yaml
    python -m training sar2eo export --config configs/sar2eo_rgb.yaml
    torchrun --nproc_per_node 4 -m training sar2eo train --config configs/sar2eo_rgb.yaml
    python -m training cloudmask localise --config configs/cloudmask.yaml      # CloudSEN12 -> .npy cache, once
    python -m training cloudmask train --config configs/cloudmask.yaml --set train.epochs=3

``--set a.b=value`` overrides any config entry (value parsed as YAML); ``--help-config`` lists every entry with
its default and help. Errors the package raises (:class:`training.common.TrainingError`: unknown config keys,
missing data or checkpoints, metrics of another checkpoint) are printed and exit with status 2.
"""
from __future__ import annotations

import argparse
import sys

from sar2eo_cloud_plugin.core.tasks import CARD_TASKS, CLOUD_MASK, TRANSLATE


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=list(CARD_TASKS))
    parser.add_argument("action", nargs="?", choices=["train", "evaluate", "export", "all", "localise"],
                        help="'all' = train, evaluate, export; 'localise' (cloudmask) fills the CloudSEN12 cache")
    parser.add_argument("--config", help="YAML or JSON config file")
    parser.add_argument("--help-config", action="store_true", help="list every config key, its default and help")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--resume", action="store_true", help="continue from <run_dir>/ckpt_last")
    parser.add_argument("--checkpoint", default=None, help="checkpoint stem for evaluate/export")
    parser.add_argument("--models-dir", default=None, help="export target (default: the plugin's models folder)")
    args = parser.parse_args(argv)

    from . import common

    if args.task == TRANSLATE.card_task:
        from . import cyclegan as mod
    else:
        from . import cloudmask as mod
    if args.help_config:
        print("\n".join(common.describe_options(mod.OPTIONS)))
        return 0
    if not args.action or not args.config:
        parser.error("an action and --config are required")
    try:
        return _run(args, mod, common)
    except common.TrainingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(args, mod, common) -> int:
    cfg = common.load_config(args.config, args.overrides)
    if args.action == "localise":
        if args.task != CLOUD_MASK.card_task:
            raise common.ConfigError("localise is for cloudmask only")
        mod.localise_from_config(cfg)
        return 0
    if args.action in ("train", "all"):
        mod.train(cfg, resume=args.resume)
    import os

    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # evaluation and export are rank 0's
    if args.action in ("evaluate", "all"):
        mod.evaluate(cfg, checkpoint=args.checkpoint)
    if args.action in ("export", "all"):
        mod.export(cfg, checkpoint=args.checkpoint, models_dir=args.models_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())

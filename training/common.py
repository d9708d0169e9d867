"""Run plumbing shared by both trainers: configs, seeds, torch.distributed, logging and checkpoints.

Checkpoints never use pickle. A checkpoint is two files with one stem:
``<stem>.safetensors`` holds every tensor (network weights, optimiser moments, the torch RNG state) and
``<stem>.json`` holds everything else (epoch, step, optimiser hyper-parameters, scheduler counters, the config).
Both are written under temporary names and renamed, the JSON last, so a crash mid-write leaves the previous
checkpoint usable.
"""
from __future__ import annotations

import copy
import datetime as _dt
import json
import os
import random
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, TypeVar

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]   # `python -m training` runs from here, so it is on sys.path


T = TypeVar("T")


class TrainingError(Exception):
    """Anything the training package refuses; the CLI prints it and exits with status 2."""


class ConfigError(TrainingError, ValueError):
    """A config that names an unknown key or holds a value of the wrong kind (a ValueError too: a bad value)."""


class CheckpointError(TrainingError):
    """A checkpoint that is missing, incomplete or does not fit the networks it is loaded into."""


class DataError(TrainingError):
    """Training or evaluation data that is missing or unusable."""


# ----------------------------------------------------------------------------------------------- configs
class Option:
    """One config key as data: its default and the help line ``--help-config`` prints (junyanz-style options)."""

    __slots__ = ("default", "help")

    def __init__(self, default: Any, help: str) -> None:  # noqa: A002 - the word every option library uses
        if not help:
            raise ValueError("every option needs a help line")
        self.default = default
        self.help = help


OptionTree = Dict[str, Any]  # str -> Option or a nested OptionTree

INTERNAL_KEYS = ("_config_file",)  # written by load_config, not by users


def option_defaults(options: OptionTree) -> Dict[str, Any]:
    """The plain default config of an option tree."""
    return {k: option_defaults(v) if isinstance(v, dict) else copy.deepcopy(v.default) for k, v in options.items()}


def apply_options(options: OptionTree, cfg: Dict[str, Any], where: str = "") -> Dict[str, Any]:
    """``cfg`` over the defaults of ``options``; an unknown key anywhere raises :class:`ConfigError` naming it
    and the keys that are known there (a typo must not silently train with the default)."""
    if not isinstance(cfg, dict):
        raise ConfigError(f"config section '{where.rstrip('.') or '<top>'}' must be a mapping, got {cfg!r}")
    unknown = sorted(k for k in cfg if k not in options and k not in INTERNAL_KEYS)
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(where + k for k in unknown)}; known here: "
                          f"{', '.join(sorted(options))} (python -m training <task> --help-config lists them)")
    out: Dict[str, Any] = {k: cfg[k] for k in INTERNAL_KEYS if k in cfg}
    for key, opt in options.items():
        if isinstance(opt, dict):
            out[key] = apply_options(opt, cfg.get(key) or {}, f"{where}{key}.")
        else:
            out[key] = copy.deepcopy(cfg[key]) if key in cfg else copy.deepcopy(opt.default)
    return out


def split_held_out(items: Sequence[T], held_out: Sequence[str], key: Callable[[T], str],
                   option: str) -> Tuple[List[T], List[T]]:
    """(training, validation): every item whose ``key`` is in ``held_out`` is validation. A held-out value that
    matches no item is a :class:`ConfigError` naming ``option`` (a typo would silently shrink the validation set)."""
    known = {key(it) for it in items}
    unknown = sorted(set(held_out) - known)
    if unknown:
        raise ConfigError(f"{option} {unknown} match no pair or patch (values here: {sorted(known)})")
    val = set(held_out)
    return [it for it in items if key(it) not in val], [it for it in items if key(it) in val]


def option_leaves(options: OptionTree, where: str = "") -> Iterator[Tuple[str, "Option"]]:
    """Every option of the tree as ``(dotted key, Option)``, in declaration order."""
    for key, opt in options.items():
        if isinstance(opt, dict):
            yield from option_leaves(opt, f"{where}{key}.")
        else:
            yield f"{where}{key}", opt


def describe_options(options: OptionTree, where: str = "") -> List[str]:
    """``key (default): help`` lines for every option, nested keys dotted."""
    return [f"{key} (default {opt.default!r}): {opt.help}" for key, opt in option_leaves(options, where)]


def load_config(path: Optional[str], overrides: Iterable[str] = ()) -> Dict[str, Any]:
    """Read a YAML or JSON config and apply ``a.b.c=value`` overrides (values parsed as YAML)."""
    import yaml

    cfg: Dict[str, Any] = {}
    if path:
        text = Path(path).read_text(encoding="utf-8")
        cfg = json.loads(text) if str(path).endswith(".json") else (yaml.safe_load(text) or {})
        cfg.setdefault("_config_file", str(path))
    for item in overrides or ():
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got '{item}'")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw)
        node = cfg
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return cfg


def eval_device(pref: str = "auto") -> str:
    """Device for single-process evaluation: CUDA when present and allowed, else CPU."""
    import torch

    return "cuda" if pref in ("auto", "cuda") and torch.cuda.is_available() else "cpu"


def names(values, key: str):
    """A config list of patch names, refusing YAML's surprises (``36_85`` unquoted is the integer 3685)."""
    out = []
    for v in values or []:
        if not isinstance(v, str):
            raise ConfigError(f"{key}: entry {v!r} is not a string; quote patch names in YAML (e.g. '36_85')")
        out.append(v)
    return out


def resolve_path(p: Optional[str]) -> Optional[Path]:
    """Relative paths in configs are relative to the repository root."""
    if p is None:
        return None
    path = Path(os.path.expanduser(str(p)))
    return path if path.is_absolute() else (REPO_ROOT / path)


# ----------------------------------------------------------------------------------------------- seeds
def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def set_threads(n: Optional[int]) -> None:
    import torch

    if n:
        torch.set_num_threads(int(n))


# ----------------------------------------------------------------------------------------------- precision
AMP_CHOICES = ("none", "bf16", "fp16")  # the values of a trainer's ``train.amp`` option
# the trainers' ``train.amp`` / ``train.channels_last`` options (spread into each OPTIONS["train"]; checked by
# :func:`check_amp` / :func:`check_channels_last` in each trainer's ``config``)
PRECISION_OPTIONS: Dict[str, Option] = {
    "amp": Option("none", "mixed precision of forward passes and losses: none (float32), bf16 (CPU or CUDA) or "
                          "fp16 (CUDA only, with a GradScaler)"),
    "channels_last": Option(False, "networks and input batches in channels_last (NHWC) memory format; faster "
                                   "convolutions on CUDA tensor cores"),
}


HISTORY_OPTIONS: Dict[str, Option] = {
    "history_steps": Option(1000, "per-step loss records kept in the checkpoint (the last N)"),
}


def bounded_history(history: List[Dict[str, Any]], max_steps: int) -> "deque":
    """The per-step loss records, keeping only the last ``max_steps`` (a long run must not grow its checkpoint
    JSON without bound); per-epoch means are logged to train.log."""
    return deque(history[-max_steps:] if max_steps > 0 else [], maxlen=max(max_steps, 0))


def check_amp(amp: str, device: Any = None, key: str = "train.amp") -> str:
    """``amp`` if it is one of :data:`AMP_CHOICES` and can run on ``device`` (``None``: the value alone, as configs
    are checked before the device is known), else :class:`ConfigError` naming ``key``.

    bf16 autocast runs on CPU and CUDA (bfloat16 has float32's exponent range, so it needs no loss scaling).
    fp16 is CUDA only: CPU kernels for float16 are few and slow, and a CPU run asking for it is a mistake to report,
    not to paper over."""
    import torch

    if amp not in AMP_CHOICES:
        raise ConfigError(f"{key} must be one of {', '.join(AMP_CHOICES)}, got {amp!r}")
    if amp == "fp16" and device is not None and torch.device(device).type != "cuda":
        raise ConfigError(f"{key}=fp16 needs a CUDA device, but this run is on {torch.device(device).type}; "
                          "use bf16 (CPU and CUDA) or none")
    return amp


def check_channels_last(value: Any, key: str = "train.channels_last") -> bool:
    """``value`` if it is a bool (a YAML ``yes`` string would silently mean true), else :class:`ConfigError`."""
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    return value


def autocast(amp: str, device: Any, key: str = "train.amp"):
    """The autocast context of ``train.amp`` on ``device`` (disabled for ``none``): forward passes and losses run
    inside it, backward passes outside (torch's AMP recipe)."""
    import torch

    check_amp(amp, device, key)
    dtype = torch.float16 if amp == "fp16" else torch.bfloat16
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype, enabled=amp != "none")


def grad_scaler(amp: str, device: Any, key: str = "train.amp"):
    """The loss scaler every optimiser step goes through: enabled for fp16 only (float16 gradients underflow
    without it); for none and bf16 it is a pass-through (``scale`` returns the loss, ``step`` calls
    ``optimizer.step``, ``update`` does nothing). Its ``state_dict`` is plain numbers, so it fits a checkpoint's
    JSON."""
    import torch

    check_amp(amp, device, key)
    return torch.amp.GradScaler(torch.device(device).type, enabled=amp == "fp16")


def channels_last(obj: Any, enabled: bool = True) -> Any:
    """``obj`` (a module, or a 4-D input batch) in ``torch.channels_last`` memory format when ``enabled``
    (NHWC: faster convolutions with tensor cores / oneDNN); anything else is returned unchanged. Modules are
    converted in place (parameter identity is kept, so optimisers built before or after both work); checkpoints
    are unaffected because :func:`save_checkpoint` stores ``contiguous()`` copies."""
    import torch

    if not enabled:
        return obj
    if isinstance(obj, torch.nn.Module):
        return obj.to(memory_format=torch.channels_last)
    if torch.is_tensor(obj) and obj.dim() == 4:
        return obj.contiguous(memory_format=torch.channels_last)
    return obj


# ----------------------------------------------------------------------------------------------- distributed
class Dist:
    """torch.distributed from the environment torchrun sets (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR/PORT).

    With WORLD_SIZE unset or 1 everything is a no-op, so single-process runs need nothing special.
    Backend: NCCL when CUDA is used, gloo otherwise (CPU, and the tests).
    """

    def __init__(self, device_pref: str = "auto") -> None:
        import torch
        import torch.distributed as dist

        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = torch.cuda.is_available() and device_pref in ("auto", "cuda")
        if device_pref == "cuda" and not torch.cuda.is_available():
            raise TrainingError("device 'cuda' was asked for but torch sees no CUDA device")
        if use_cuda:
            torch.cuda.set_device(self.local_rank)
            self.device = torch.device("cuda", self.local_rank)
        else:
            self.device = torch.device("cpu")
        self.enabled = self.world > 1
        if self.enabled and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=_dt.timedelta(minutes=30))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def mean_scalar(self, value: float) -> float:
        if not self.enabled:
            return float(value)
        import torch
        import torch.distributed as dist

        t = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t.item()) / self.world

    def broadcast_scalar(self, value: float) -> float:
        """Rank 0's ``value`` on every process."""
        if not self.enabled:
            return float(value)
        import torch
        import torch.distributed as dist

        t = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        dist.broadcast(t, src=0)
        return float(t.item())

    def same_on_all_ranks(self, value: float) -> bool:
        """True when ``value`` (e.g. a parameter checksum) is identical on every process."""
        if not self.enabled:
            return True
        import torch
        import torch.distributed as dist

        lo = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        hi = lo.clone()
        dist.all_reduce(lo, op=dist.ReduceOp.MIN)
        dist.all_reduce(hi, op=dist.ReduceOp.MAX)
        return bool(lo.item() == hi.item())

    def average_gradients(self, params) -> None:
        """Average the gradients of ``params`` over all processes (one flat all-reduce).

        The CycleGAN trainer uses this instead of DistributedDataParallel because its generators and
        discriminators switch ``requires_grad`` between the G and D steps, which DDP's reducer does not allow.
        """
        if not self.enabled:
            return
        import torch
        import torch.distributed as dist

        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[offset:offset + n].view_as(g))
            offset += n

    def close(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def loader_worker_kwargs(dist_: "Dist", num_workers: int) -> dict:
    """DataLoader worker start method. Under DDP, workers must not be forked from a process that
    already runs the process group's (gloo/NCCL) threads: a forked copy of those threads aborts at
    exit ("terminate called without an active exception"). Spawned workers start clean."""
    if num_workers > 0 and dist_.enabled:
        return {"multiprocessing_context": "spawn"}
    return {}


def start_training(cfg: Dict[str, Any]) -> Tuple["Dist", Path, "RunLog"]:
    """What every trainer does first: threads, the (possibly distributed) process group, the run
    folder and its log (written by rank 0 only), and a per-rank seed."""
    set_threads(cfg["threads"])
    dist_ = Dist(cfg["device"])
    run_dir = resolve_path(cfg["run_dir"])
    log = RunLog(run_dir, dist_.is_main)
    seed_everything(cfg["seed"] + dist_.rank)
    return dist_, run_dir, log


def broadcast_module(dist_: Dist, module) -> None:
    """Make every rank start from rank 0's weights."""
    if not dist_.enabled:
        return
    import torch.distributed as dist

    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=0)


# ----------------------------------------------------------------------------------------------- logging
class RunLog:
    """Prints and appends to ``<run>/train.log`` on rank 0 only."""

    def __init__(self, run_dir: Optional[Path], enabled: bool = True) -> None:
        self.enabled = enabled
        self.path = Path(run_dir) / "train.log" if run_dir and enabled else None
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, msg: str) -> None:
        if not self.enabled:
            return
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        if self.path:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")


def write_json(path: Path, data: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


# ----------------------------------------------------------------------------------------------- checkpoints
def _optimizer_split(opt) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Optimizer state_dict -> (tensors, JSON-able rest)."""
    import torch

    sd = opt.state_dict()
    tensors: Dict[str, Any] = {}
    scalars: Dict[str, Any] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_join(opt, tensors: Dict[str, Any], meta: Dict[str, Any]) -> None:
    state: Dict[int, Dict[str, Any]] = {}
    for key, v in tensors.items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    for key, v in meta.get("scalars", {}).items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(stem: Path, nets: Dict[str, Any], optims: Dict[str, Any], meta: Dict[str, Any]) -> Path:
    """Write ``stem.safetensors`` + ``stem.json``; returns the JSON path."""
    import torch
    from safetensors.torch import save_file

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    tensors: Dict[str, Any] = {}
    for name, net in nets.items():
        for k, v in net.state_dict().items():
            tensors[f"net.{name}.{k}"] = v.detach().cpu().contiguous()
    opt_meta = {}
    for name, opt in optims.items():
        t, m = _optimizer_split(opt)
        tensors.update({f"opt.{name}.{k}": v for k, v in t.items()})
        opt_meta[name] = m
    tensors["rng.torch"] = torch.get_rng_state()
    wtmp = stem.with_name(stem.name + ".safetensors.tmp")
    save_file(tensors, str(wtmp))
    os.replace(wtmp, stem.with_suffix(".safetensors"))
    write_json(stem.with_suffix(".json"), dict(meta, optimizers=opt_meta, format="training-checkpoint-1"))
    return stem.with_suffix(".json")


def checkpoint_stem(path: Path) -> Path:
    """``run/ckpt_last``, ``run/ckpt_last.json`` or ``run/ckpt_last.safetensors`` -> ``run/ckpt_last``."""
    path = Path(path)
    return path.with_suffix("") if path.suffix in (".json", ".safetensors") else path


def load_checkpoint(stem: Path, nets: Dict[str, Any], optims: Optional[Dict[str, Any]] = None,
                    restore_rng: bool = True) -> Dict[str, Any]:
    """Load what :func:`save_checkpoint` wrote into ``nets`` / ``optims``; returns the JSON meta.

    The one checkpoint reader of the package: resuming passes every network, optimiser and the RNG; evaluation
    and export pass only the network they need (``{"G_A": net}``) and ``restore_rng=False``. Each network named
    must be in the checkpoint and fit it exactly; anything else raises :class:`CheckpointError`."""
    import torch
    from safetensors.torch import load_file

    stem = checkpoint_stem(stem)
    if not checkpoint_exists(stem):
        raise CheckpointError(f"no checkpoint at {stem}.json + {stem}.safetensors")
    try:
        meta = json.loads(stem.with_suffix(".json").read_text(encoding="utf-8"))
        tensors = load_file(str(stem.with_suffix(".safetensors")), device="cpu")
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {stem} cannot be read: {exc}") from exc
    for name, net in nets.items():
        prefix = f"net.{name}."
        sd = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        if not sd:
            raise CheckpointError(f"checkpoint {stem} holds no network '{name}' "
                                  f"(it has {sorted({k.split('.')[1] for k in tensors if k.startswith('net.')})})")
        try:
            net.load_state_dict(sd, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"network '{name}' of checkpoint {stem} does not fit the configured architecture: "
                                  f"{str(exc).splitlines()[0]}") from exc
    for name, opt in (optims or {}).items():
        prefix = f"opt.{name}."
        if name not in meta.get("optimizers", {}):
            raise CheckpointError(f"checkpoint {stem} holds no optimiser '{name}'")
        _optimizer_join(opt, {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)},
                        meta["optimizers"][name])
    if restore_rng and "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"].to(torch.uint8))
    return meta


def checkpoint_identity(stem: Path) -> Dict[str, Any]:
    """What a metrics file records about the checkpoint it measured, and what export compares: the sha256 of its
    tensors file and its step."""
    from sar2eo_cloud_plugin.core.modelfile import sha256_of

    stem = checkpoint_stem(stem)
    if not checkpoint_exists(stem):
        raise CheckpointError(f"no checkpoint at {stem}.json + {stem}.safetensors")
    meta = json.loads(stem.with_suffix(".json").read_text(encoding="utf-8"))
    return {"path": str(stem), "sha256": sha256_of(stem.with_suffix(".safetensors")),
            "step": meta.get("global_step", meta.get("step"))}


def check_metrics_match(metrics: Dict[str, Any], stem: Path, metrics_path: Path) -> Dict[str, Any]:
    """Refuse metrics measured on another checkpoint than ``stem`` (export must not put one model's scores on
    another model's card). Returns the checkpoint identity."""
    ident = checkpoint_identity(stem)
    rec = metrics.get("checkpoint") if isinstance(metrics.get("checkpoint"), dict) else {}
    if rec.get("sha256") != ident["sha256"] or rec.get("step") != ident["step"]:
        raise CheckpointError(
            f"{metrics_path} was measured on checkpoint sha256 {str(rec.get('sha256'))[:12]}… step {rec.get('step')}, "
            f"but {stem} is sha256 {ident['sha256'][:12]}… step {ident['step']}: evaluate this checkpoint first")
    return ident


def checkpoint_exists(stem: Path) -> bool:
    stem = Path(stem)
    return stem.with_suffix(".json").is_file() and stem.with_suffix(".safetensors").is_file()


def git_commit() -> Optional[str]:
    try:
        import subprocess

        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=5).stdout.strip() or None
    except Exception:  # noqa: BLE001 - informational only
        return None

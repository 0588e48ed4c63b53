"""The shared fine-tuning loop: SGD/Adam, cosine or step schedule, label smoothing, progress bar,
atomic checkpoints, exact resume after a kill, deterministic seeding, CPU or CUDA.

Methods plug in through `loss_fn` (distillation, regularisers) and `Callback`s (masks, surgery,
centroid gradients). Exact resume works because every epoch reseeds the RNGs from (seed, epoch):
a run killed anywhere replays from its last checkpoint to the same weights.

Under `torchrun` (an initialised process group of several ranks) the same call trains with
DistributedDataParallel: each rank takes its share of every global batch (the loader's batch size
stays the global batch), gradients are averaged, only rank 0 writes checkpoints, and the epoch
metrics are summed over the ranks. See docs/distributed.md.
"""
from __future__ import annotations

import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from torchslim.errors import InvalidInputError
from torchslim.progress import Progress, note
from torchslim.train import distributed as D
from torchslim.train.device import resolve_device
from torchslim.train.evaluate import evaluate

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]


def _opt(default, help: str, *, choices: tuple | None = None, ge=None, gt=None, lt=None, budget: bool = True,
         cli: str | None = None, factory=None):
    """A FitConfig field with what every surface needs: help text, allowed values and bounds (checked in
    `__post_init__`, turned into the recipe `Budget`'s constraints and the CLI's options), whether a
    recipe budget sets it (`budget`; seed and device come from the recipe) and its CLI flag."""
    meta = {"help": help, "choices": choices, "ge": ge, "gt": gt, "lt": lt, "budget": budget, "cli": cli}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class FitConfig:
    """Fine-tuning settings; the defaults suit a short recovery after compression.

    The one declaration of a training budget: the recipe's `Budget` (torchslim.recipe.schema) and the
    CLI's training options (torchslim.cli.train) are generated from these fields and their metadata.
    """

    epochs: int = _opt(1, "training epochs", ge=0)
    optimizer: str = _opt("sgd", "optimizer", choices=("sgd", "adam", "adamw"))
    lr: float = _opt(0.01, "peak learning rate", gt=0)
    momentum: float = _opt(0.9, "SGD momentum", ge=0)
    nesterov: bool = _opt(False, "Nesterov momentum")
    weight_decay: float = _opt(5e-4, "L2 weight decay", ge=0)
    schedule: str = _opt("cosine", "learning-rate schedule", choices=("cosine", "step", "constant"))
    step_epochs: int = _opt(30, "step schedule: multiply lr by `gamma` every this many epochs", gt=0)
    gamma: float = _opt(0.1, "step schedule: the lr factor", gt=0)
    warmup_epochs: float = _opt(0.0, "linear lr warm-up, in epochs", ge=0)
    label_smoothing: float = _opt(0.0, "label smoothing of the cross-entropy", ge=0, lt=1)
    grad_clip: float | None = _opt(None, "clip the gradient norm to this", gt=0)
    seed: int = _opt(0, "random seed (data order, initialisation)", budget=False)
    device: str = _opt("auto", "auto, cpu, cuda, cuda:1 ...", budget=False)
    # "bf16": autocast mixed precision (weights and optimizer stay fp32). About 2x faster training on
    # CPUs with AVX-512 BF16 or AMX (oneDNN) and on recent GPUs; "fp32" is exact and the default.
    precision: str = _opt("fp32", "bf16: autocast mixed precision (fp32 weights), about 2x faster on CPUs with "
                          "AVX-512 BF16", choices=("fp32", "bf16"))
    channels_last: bool = _opt(False, "train in NHWC (oneDNN's native conv layout); the model is returned NCHW")
    max_steps_per_epoch: int | None = _opt(None, "at most this many batches per epoch", gt=0, cli="--max-steps")
    checkpoint_every_steps: int | None = _opt(None, "also checkpoint inside long epochs, every this many steps",
                                              gt=0)
    checkpoint_every_s: float | None = _opt(120.0, "and whenever this long has passed since the last checkpoint",
                                            budget=False)
    eval_every: int = _opt(1, "evaluate on the validation data every N epochs (0: never)", ge=0)
    progress: bool = _opt(True, "progress bar / log lines", budget=False, cli="")
    # names the phase in progress lines, e.g. "dns: surgery" -> "dns: surgery 3/4: ..."
    label: str = _opt("epoch", "names the phase in progress lines", budget=False, cli="")

    def __post_init__(self):
        if self.epochs < 0 or self.lr <= 0:
            raise InvalidInputError(f"epochs must be >= 0 and lr > 0, got epochs={self.epochs}, lr={self.lr}")
        if self.optimizer not in ("sgd", "adam", "adamw"):
            raise InvalidInputError(f"unknown optimizer {self.optimizer!r}; use sgd, adam or adamw")
        if self.schedule not in ("cosine", "step", "constant"):
            raise InvalidInputError(f"unknown schedule {self.schedule!r}; use cosine, step or constant")
        if self.precision not in ("fp32", "bf16"):
            raise InvalidInputError(f"unknown precision {self.precision!r}; use fp32 or bf16")


class Callback:
    """Hooks into `fit`. Override what you need; keep state in tensors/numbers so it checkpoints."""

    def on_fit_begin(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None: ...
    def on_epoch_begin(self, model: nn.Module, epoch: int) -> None: ...
    def after_backward(self, model: nn.Module, step: int) -> None: ...  # grads ready, not yet applied
    def after_step(self, model: nn.Module, step: int) -> None: ...  # weights updated
    def on_epoch_end(self, model: nn.Module, epoch: int, metrics: dict) -> None: ...
    def on_fit_end(self, model: nn.Module) -> None: ...
    def state_dict(self) -> dict: return {}
    def load_state_dict(self, state: dict) -> None: ...


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)
    resumed_from: str | None = None

    @property
    def last(self) -> dict:
        return self.history[-1] if self.history else {}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def default_loss(label_smoothing: float = 0.0) -> LossFn:
    def loss_fn(model, x, y):
        logits = model(x)
        return F.cross_entropy(logits, y, label_smoothing=label_smoothing), logits

    return loss_fn


def make_optimizer(model: nn.Module, cfg: FitConfig) -> torch.optim.Optimizer:
    """The optimizer `cfg` describes, over the trainable parameters of `model`."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise InvalidInputError(f"{type(model).__name__} has no trainable parameters")
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _lr_factor(cfg: FitConfig, progress_epochs: float) -> float:
    """Learning-rate multiplier at a fractional epoch."""
    if cfg.warmup_epochs and progress_epochs < cfg.warmup_epochs:
        return (progress_epochs + 1e-8) / cfg.warmup_epochs
    if cfg.schedule == "cosine":
        t = (progress_epochs - cfg.warmup_epochs) / max(cfg.epochs - cfg.warmup_epochs, 1e-8)
        return 0.5 * (1 + math.cos(math.pi * min(max(t, 0.0), 1.0)))
    if cfg.schedule == "step":
        return cfg.gamma ** int(progress_epochs // cfg.step_epochs)
    return 1.0


class ShardSampler(DistributedSampler):
    """A DistributedSampler whose shuffle is the one a single process's shuffled DataLoader draws.

    `fit` reseeds the train loader's generator with (seed, epoch) every epoch; the DataLoader first
    draws one int64 (its workers' base seed) from that generator, then RandomSampler takes
    `randperm(n)`. Rank r gets positions r, r+W, r+2W... of that order, so with a per-rank batch of
    B/W the ranks' k-th batches together are exactly the single process's k-th batch of B.
    """

    def __iter__(self):
        if not self.shuffle:
            return super().__iter__()
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        torch.empty((), dtype=torch.int64).random_(generator=g)  # the DataLoader's base-seed draw
        indices = torch.randperm(len(self.dataset), generator=g).tolist()
        if len(indices) < self.total_size:  # pad to an even split (DistributedSampler does the same)
            indices += (indices * math.ceil(self.total_size / max(len(indices), 1)))[: self.total_size - len(indices)]
        return iter(indices[self.rank: self.total_size: self.num_replicas])


def _shard_loader(loader: DataLoader, seed: int) -> DataLoader:
    """The per-rank loader: same dataset, batch size / world size, a ShardSampler."""
    if isinstance(loader.sampler, DistributedSampler):
        return loader  # the caller sharded it already
    w = D.world_size()
    if loader.batch_size is None or loader.batch_size % w:
        raise InvalidInputError(f"the train loader's batch size {loader.batch_size} is the global batch and must "
                                f"be divisible by the {w} ranks; use a multiple of {w}")
    sampler = ShardSampler(loader.dataset, num_replicas=w, rank=D.rank(),
                           shuffle=isinstance(loader.sampler, RandomSampler), seed=seed * 100_003)
    return DataLoader(loader.dataset, batch_size=loader.batch_size // w, sampler=sampler,
                      num_workers=loader.num_workers, collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
                      drop_last=loader.drop_last, persistent_workers=loader.num_workers > 0,
                      generator=torch.Generator())  # fit reseeds it; keeps the global RNG as in one process


def _save_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


CHECKPOINT = "checkpoint.pt"
# Settings that do not change what is trained: a resumed run may change them.
_FREE_SETTINGS = ("device", "progress", "label", "eval_every", "checkpoint_every_steps", "checkpoint_every_s")


def _check_same_run(ckpt_path: Path, state: dict, config: dict, run_info: dict | None) -> None:
    """A checkpoint is resumed only by the run that wrote it: name the first settings that differ."""
    if "config" not in state:
        return  # written before settings were recorded
    saved = {**state["config"], **state.get("run_info", {})}
    now = {**config, **(run_info or {} if "run_info" in state else {})}
    diff = [f"{k}={v!r} there, {now.get(k)!r} now" for k, v in saved.items()  # keys of older files only
            if k not in _FREE_SETTINGS and v != now.get(k)]
    if diff:
        raise InvalidInputError(f"{ckpt_path.parent} holds a run with other settings ({'; '.join(diff[:4])}); "
                                "use another output folder, the same settings, or delete it to start over")


def fit(
    model: nn.Module,
    train_loader: DataLoader,
    *,
    val_loader: DataLoader | None = None,
    config: FitConfig | None = None,
    loss_fn: LossFn | None = None,
    regularizers: Sequence[Callable[[nn.Module], torch.Tensor]] = (),
    callbacks: Sequence[Callback] = (),
    checkpoint_dir: str | os.PathLike | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    run_info: dict | None = None,
) -> FitResult:
    """Train `model` in place.

    Args:
        model: the module to train (moved to the configured device).
        train_loader / val_loader: data; the val loader is evaluated after each epoch.
        config: `FitConfig`; defaults to one epoch of SGD with a cosine schedule.
        loss_fn: `(model, x, y) -> (loss, logits)`; default cross entropy (with label smoothing).
        regularizers: callables `model -> scalar` added to the loss (e.g. group lasso).
        callbacks: `Callback` objects (mask keeping, network surgery, ...).
        checkpoint_dir: if given, a checkpoint is written atomically after every epoch (and every
            `checkpoint_every_steps` / `checkpoint_every_s` inside epochs), and an existing one is
            resumed from.
        optimizer: a ready optimizer instead of the one the config describes.
        run_info: JSON-able facts about the run beyond the config (model, data...): kept in the
            checkpoint, and a resume with other values (or other config settings) is refused.

    Example:
        >>> data = torchslim.data.get_data("digits")
        >>> fit(model, data.train, val_loader=data.val, config=FitConfig(epochs=5, lr=0.05))
    """
    cfg = config or FitConfig()
    distributed = D.is_distributed()
    device = D.default_device() if distributed and cfg.device in (None, "auto") else resolve_device(cfg.device, model)
    model.to(device)
    layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
    if cfg.channels_last:
        model.to(memory_format=layout)
    net: nn.Module = model  # what the loss sees: the model, or its DDP wrapper
    if distributed:
        from torch.nn.parallel import DistributedDataParallel

        train_loader = _shard_loader(train_loader, cfg.seed)
        net = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    loss_fn = loss_fn or default_loss(cfg.label_smoothing)
    opt = optimizer or make_optimizer(model, cfg)
    base_lrs = [g["lr"] for g in opt.param_groups]
    steps_per_epoch = len(train_loader)
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    result = FitResult()
    start_epoch, start_step = 0, 0
    ckpt_path = Path(checkpoint_dir) / CHECKPOINT if checkpoint_dir else None
    rng_at_step = None
    if ckpt_path is not None:
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        if ckpt_path.is_file():
            state = torch.load(ckpt_path, map_location=device, weights_only=True)
            _check_same_run(ckpt_path, state, asdict(cfg), run_info)
            try:
                model.load_state_dict(state["model"])
                opt.load_state_dict(state["optimizer"])
            except (RuntimeError, ValueError, KeyError) as e:
                first = (str(e).strip().splitlines() or [""])[0]
                raise InvalidInputError(f"{ckpt_path} is a checkpoint of a different model ({first}); use "
                                        "another output folder, or delete it to start over") from None
            for cb, s in zip(callbacks, state.get("callbacks", [])):
                cb.load_state_dict(s)
            start_epoch, start_step = state["epoch"], state["step"]
            result.history = list(state.get("history", []))
            rng_at_step = state.get("rng")
            result.resumed_from = f"epoch {start_epoch} step {start_step}"
            if D.is_main():  # said before any work, so a log shows where this run picks up
                done = start_epoch >= cfg.epochs
                note(f"{ckpt_path.parent}: " + (f"finished already ({cfg.epochs} epochs); reusing it" if done else
                     f"resuming from epoch {start_epoch + 1} step {start_step}"))

    last_checkpoint = time.monotonic()

    def checkpoint(epoch: int, step: int) -> None:
        nonlocal last_checkpoint
        last_checkpoint = time.monotonic()
        if ckpt_path is None or not D.is_main():
            return
        _save_atomic({
            "model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch, "step": step,
            "callbacks": [cb.state_dict() for cb in callbacks], "history": result.history,
            "rng": torch.get_rng_state(), "config": asdict(cfg), "run_info": dict(run_info or {}),
        }, ckpt_path)

    for cb in callbacks:
        cb.on_fit_begin(model, opt)
    show = cfg.progress and D.is_main()
    bar = Progress(total=cfg.epochs * steps_per_epoch, initial=start_epoch * steps_per_epoch + start_step,
                   desc=cfg.label if cfg.label != "epoch" else "fit", unit="step", enabled=show)
    for epoch in range(start_epoch, cfg.epochs):
        # Everything random in this epoch (shuffle order, augmentation, dropout) follows from (seed, epoch).
        seed_everything(cfg.seed * 100_003 + epoch)
        generator = getattr(train_loader, "generator", None)
        if generator is not None:
            generator.manual_seed(cfg.seed * 100_003 + epoch)
        sampler = getattr(train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        model.train()
        for cb in callbacks:
            cb.on_epoch_begin(model, epoch)
        t0, loss_sum, correct, seen = time.perf_counter(), 0.0, 0, 0
        skip = start_step if epoch == start_epoch else 0
        t_fetch, data_wait = time.perf_counter(), 0.0  # time spent waiting for the next batch
        for step, (x, y) in enumerate(train_loader):
            data_wait += time.perf_counter() - t_fetch
            if step >= steps_per_epoch:
                break
            if step < skip:
                continue  # replaying the data order of a resumed epoch
            if step == skip and skip and rng_at_step is not None:
                torch.set_rng_state(rng_at_step)
            global_step = epoch * steps_per_epoch + step
            for g, base in zip(opt.param_groups, base_lrs):
                g["lr"] = base * _lr_factor(cfg, epoch + step / steps_per_epoch)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if cfg.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=layout)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
                loss, logits = loss_fn(net, x, y)
            loss = loss.float()
            for reg in regularizers:  # outside autocast: penalties on the fp32 weights
                loss = loss + reg(model)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at epoch {epoch} step {step}; lower the lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            for cb in callbacks:
                cb.after_backward(model, global_step)
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            for cb in callbacks:
                cb.after_step(model, global_step)
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss_sum / seen:.3f}", acc=f"{100 * correct / seen:.1f}")
            bar.update(1)
            every_steps = cfg.checkpoint_every_steps and (step + 1) % cfg.checkpoint_every_steps == 0
            every_s = ckpt_path is not None and cfg.checkpoint_every_s is not None \
                and time.monotonic() - last_checkpoint >= cfg.checkpoint_every_s
            if (every_steps or every_s) and step + 1 < steps_per_epoch:
                checkpoint(epoch, step + 1)
            t_fetch = time.perf_counter()
        train_s = time.perf_counter() - t0
        if distributed:  # epoch figures over all ranks' samples
            totals = torch.tensor([loss_sum, correct, seen], dtype=torch.float64, device=device)
            torch.distributed.all_reduce(totals)
            loss_sum, correct, seen = totals[0].item(), int(totals[1].item()), int(totals[2].item())
        metrics = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1),
                   "train_top1": 100.0 * correct / max(seen, 1), "lr": opt.param_groups[0]["lr"],
                   "time_s": round(train_s, 2), "images_per_s": round(seen / max(train_s, 1e-9), 1),
                   "data_wait": round(data_wait / max(train_s, 1e-9), 3)}  # share of the epoch waiting on data
        if val_loader is not None and cfg.eval_every and ((epoch + 1) % cfg.eval_every == 0
                                                          or epoch + 1 == cfg.epochs):
            ev = evaluate(model, val_loader, device=device)
            metrics.update(val_top1=ev["top1"], val_loss=ev["loss"])
        result.history.append(metrics)
        if show:  # one line per epoch, kept above the bar on a terminal
            shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k != "epoch")
            note(f"{cfg.label} {epoch + 1}/{cfg.epochs}: {shown}")
        for cb in callbacks:
            cb.on_epoch_end(model, epoch, metrics)
        checkpoint(epoch + 1, 0)
        rng_at_step = None
    bar.close()
    if cfg.channels_last:  # hand back the usual layout: safetensors and ONNX export expect contiguous tensors
        model.to(memory_format=torch.contiguous_format)
    D.barrier()  # rank 0's last checkpoint is on disk before any rank goes on
    for cb in callbacks:
        cb.on_fit_end(model)
    return result

"""Teacher-student training: Hinton KD, attention transfer, FitNets hints; `distill` is the verb.

    student = torchslim.distill(student, teacher, data, method=["kd", "at"])

Every method is a `Term` of one `DistillLoss`, the `loss_fn` of `torchslim.train.fit`. As the
recovery step after compression, the uncompressed model teaches its compressed copy.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

from torchslim.distill.attention import AttentionTransfer, at_loss, attention_map, input_gradient
from torchslim.distill.cache import TeacherCache
from torchslim.distill.core import Batch, DistillLoss, Term, capture, match_pairs, stage_ends
from torchslim.distill.fitnets import Hint
from torchslim.data import as_loaders
from torchslim.distill.kd import KD, kd_loss
from torchslim.errors import InvalidInputError
from torchslim.registry import Registry
from torchslim.train import FitConfig, FitResult, fit

METHODS: Registry[Callable[["DistillConfig"], Term]] = Registry("distillation method")


@dataclass
class DistillConfig:
    """Settings of `distill`; the defaults are the papers' (KD: T=4, alpha=0.9; AT: beta=1000, p=2).

    Args:
        fit: the training run (epochs, lr, schedule, ...) handed to `torchslim.train.fit`.
        temperature, alpha: Hinton KD.
        beta, p, at_pairs, at_mode: attention transfer ("auto" pairs by spatial size; "activation" or "gradient").
        hint_weight, hint_pairs: FitNets hints ("middle", "all" or [(student, teacher), ...]).
        cache_teacher: precompute teacher targets once (only for training data without augmentation).
        checkpoint_dir: resumable checkpoints of the run.
    """

    fit: FitConfig = field(default_factory=lambda: FitConfig(epochs=1, lr=0.01))
    temperature: float = 4.0
    alpha: float = 0.9
    beta: float = 1000.0
    p: float = 2.0
    at_pairs: str | list = "auto"
    at_mode: str = "activation"
    hint_weight: float = 1.0
    hint_pairs: str | list = "middle"
    cache_teacher: bool = False
    checkpoint_dir: str | None = None


def _register(name: str, term: type, build: Callable[[DistillConfig], Term]) -> None:
    build.term = term  # the class that implements it (the method table points to its code)
    METHODS.register(name)(build)


_register("kd", KD, lambda c: KD(c.temperature, c.alpha))
_register("at", AttentionTransfer, lambda c: AttentionTransfer(c.beta, c.p, c.at_pairs, c.at_mode))
_register("hint", Hint, lambda c: Hint(c.hint_weight, c.hint_pairs))


def from_original(original: nn.Module, temperature: float = 4.0, alpha: float = 0.9) -> DistillLoss:
    """The default recovery loss after compression: Hinton KD from the uncompressed model.

    A compressed copy starts close to its original, so the original's soft targets are a far richer
    signal than the hard labels for the few epochs a CPU budget allows. `original` is copied and frozen.

    Example:
        >>> fit(pruned, data.train, loss_fn=from_original(model), config=FitConfig(epochs=2))
    """
    import copy

    return DistillLoss(copy.deepcopy(original).eval(), [KD(temperature, alpha)])


@dataclass
class DistillResult:
    student: nn.Module
    fit: FitResult
    loss: DistillLoss


def build_loss(teacher: nn.Module, method: str | Sequence[str] = "kd", config: DistillConfig | None = None) -> DistillLoss:
    """The `DistillLoss` of the named methods (see `METHODS.names()`)."""
    cfg = config or DistillConfig()
    names = [method] if isinstance(method, str) else list(method)
    if not names:
        raise InvalidInputError(f"no distillation method given; choose from {', '.join(METHODS.names())}")
    return DistillLoss(teacher, [METHODS.get(n)(cfg) for n in names])


def _config(config, checkpoint_dir, overrides: dict) -> DistillConfig:
    """A DistillConfig from a DistillConfig, a FitConfig (the recipe runner's) or None, plus field overrides."""
    if config is None:
        cfg = DistillConfig()
    elif isinstance(config, DistillConfig):
        cfg = dataclasses.replace(config)
    elif isinstance(config, FitConfig):
        cfg = DistillConfig(fit=config)
    else:
        raise InvalidInputError(f"config must be a DistillConfig or a FitConfig, got {type(config).__name__}")
    known = {f.name for f in dataclasses.fields(DistillConfig)} - {"fit"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise InvalidInputError(f"unknown distillation setting(s) {', '.join(unknown)}; "
                                f"known: {', '.join(sorted(known))}")
    cfg = dataclasses.replace(cfg, **overrides)
    if checkpoint_dir is not None:
        cfg.checkpoint_dir = str(checkpoint_dir)
    return cfg


def distill_fit(student: nn.Module, teacher: nn.Module, data, method: str | Sequence[str] = "kd",
                config: DistillConfig | FitConfig | None = None, callbacks: Sequence = (),
                checkpoint_dir=None, **overrides) -> DistillResult:
    """`distill`, returning also the training history and the loss (with its adapters)."""
    cfg = _config(config, checkpoint_dir, overrides)
    train, val = as_loaders(data)
    requires_grad = [p.requires_grad for p in teacher.parameters()]
    loss = build_loss(teacher, method, cfg)
    from torchslim.train.device import resolve_device

    device = resolve_device(cfg.fit.device, student)
    student.to(device)
    x0, _ = next(iter(train))
    torch.manual_seed(cfg.fit.seed)  # adapters (FitNets) start from the run's seed: the same run, the same student
    loss.setup(student, x0.to(device))
    if cfg.cache_teacher:
        loss.cache = TeacherCache(loss, train, device=device)
    # Adapters (FitNets) train with the student: one optimizer over both, built as fit would build it.
    from torchslim.train.fit import make_optimizer

    opt = make_optimizer(nn.ModuleList([student, loss.terms]), cfg.fit)
    try:
        result = fit(student, train, val_loader=val, config=cfg.fit, loss_fn=loss, optimizer=opt,
                     callbacks=[loss.callback(), *callbacks], checkpoint_dir=cfg.checkpoint_dir)
    finally:
        for p, r in zip(teacher.parameters(), requires_grad):
            p.requires_grad_(r)
    return DistillResult(student, result, loss)


def distill(model: nn.Module, method_or_config: str | Sequence[str] | DistillConfig | None = None, *args, data=None,
            teacher: nn.Module | None = None, filter_fn=None, method: str | Sequence[str] | None = None, config: DistillConfig | FitConfig | None = None,
            callbacks: Sequence = (), checkpoint_dir=None, **options) -> nn.Module:
    """Train `model` (the student, in place) to imitate `teacher` on `data`; returns the student.

    Args:
        model: the model to train, e.g. a pruned/decomposed/quantization-aware copy of the teacher.
        method_or_config (or method=): "kd" (default), "at", "hint" or a list of them (their losses add
            up), e.g. ["kd", "at"]; or a `DistillConfig` (then "kd").
        data: a `DataBundle` (`torchslim.data.get_data`), a train DataLoader, (train, val) loaders or a name.
        teacher: the trained model; frozen and run in eval mode. Same number of classes as the student.
        filter_fn: not used (distillation trains every layer); accepted for the shape every verb shares.
        config: `DistillConfig` (epochs and lr live in `config.fit`), or a bare `FitConfig` (paper defaults
            for the rest).
        callbacks: extra `fit` callbacks (masks that keep pruned weights at zero, ...).
        checkpoint_dir: resumable checkpoints of the run.
        **options: `DistillConfig` fields, e.g. `temperature=4.0, alpha=0.9` (how YAML recipes pass them).

    Example:
        >>> teacher = create_model("resnet56", pretrained=True)
        >>> student = create_model("resnet20")
        >>> cfg = DistillConfig(fit=FitConfig(epochs=30, lr=0.1))
        >>> torchslim.distill(student, ["kd", "at"], data=get_data("cifar10"), teacher=teacher, config=cfg)

    As recovery after compression, keep the original as the teacher:
        >>> teacher = copy.deepcopy(model); small = torchslim.prune(model, ...)
        >>> torchslim.distill(small, "kd", data=data, teacher=teacher)

    The old call `distill(student, teacher, data, method, config)` still works, with a DeprecationWarning.
    """
    from torchslim import verbs

    if isinstance(method_or_config, nn.Module):  # distill(student, teacher, data, method, config): the old shape
        verbs.deprecated("torchslim.distill(student, teacher, data, method)",
                           "torchslim.distill(student, method, data=data, teacher=teacher)")
        if len(args) > 3:
            raise TypeError("distill(student, teacher, data, method, config) takes at most 5 positional arguments")
        teacher, method_or_config = method_or_config, None
        data = args[0] if args else data
        method = args[1] if len(args) > 1 else method
        config = args[2] if len(args) > 2 else config
    elif args:
        raise TypeError("distill(model, method, *, data=..., teacher=...): give the other arguments by keyword")
    if teacher is None or data is None:
        raise InvalidInputError("distill trains the model to imitate a teacher: pass data= and teacher=")
    if filter_fn is not None:
        raise InvalidInputError("distill trains every layer: filter_fn does not apply")
    if method_or_config is not None and method is not None:
        raise TypeError("distill: give the method once (method_or_config or method=)")
    method = method_or_config if method_or_config is not None else method if method is not None else "kd"
    if isinstance(method, DistillConfig):
        config, method = method, "kd"
    names = [method] if isinstance(method, str) else list(method)
    names = [METHODS.canonical(n) for n in names]
    result = distill_fit(model, teacher, data, names, config, callbacks, checkpoint_dir, **options)
    if names:
        verbs.attach_report(result.student, "distill", names[0], {"methods": names, "history": result.fit.history})
    return result.student


__all__ = ["AttentionTransfer", "Batch", "DistillConfig", "DistillLoss", "DistillResult", "Hint", "KD", "METHODS",
           "TeacherCache", "Term", "at_loss", "attention_map", "build_loss", "capture", "distill", "distill_fit",
           "input_gradient", "kd_loss", "match_pairs", "stage_ends"]

"""Kernel-level pruning: whole k x k kernels W[o, i] of a conv are masked (Anwar & Sung 2016, "Coarse
Pruning of Convolutional Neural Networks with Random Masks", kernel-level granularity).

A kernel connects input channel i to output channel o; removing it leaves every channel in place, so a
dense conv cannot shrink and the result is a mask (W * M with M constant over each k x k kernel). The
zeros are stored or executed sparsely by `to_sparse` (CSR) like any other mask.

- `random_masks` (Anwar & Sung): for each conv in turn, draw N random kernel masks that remove `sparsity`
  of its kernels, evaluate the network with each (earlier layers keep their chosen masks) on validation
  batches, keep the best; `search="network"` draws N masks for all layers at once instead.
- `kernel_magnitude`: the baseline, keep the kernels of largest L1 norm in each layer.

Both then fine-tune `finetune_epochs` with the masks held (`KeepMasks`).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from torchslim.errors import InvalidInputError
from torchslim.sparsity.api import register_method
from torchslim.sparsity.masks import FilterFn, KeepMasks, attach_masks, set_mask
from torchslim.train import FitConfig, fit


def _kernel_convs(m: nn.Module, fqn: str) -> bool:
    """Default layers: dense (groups=1) 2-D convs with kernels larger than 1x1."""
    return isinstance(m, nn.Conv2d) and m.groups == 1 and m.kernel_size[0] * m.kernel_size[1] > 1


def kernel_count(layer: nn.Module, sparsity: float) -> int:
    """Kernels removed from a conv at `sparsity`: round(s * out * in), at least one kept."""
    n = layer.weight.shape[0] * layer.weight.shape[1]
    return min(int(round(sparsity * n)), n - 1)


def expand_kernel_mask(keep: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """(out, in) bool kernel mask -> weight-shaped mask (constant over each kernel)."""
    return keep[:, :, None, None].expand_as(layer.weight)


def random_kernel_mask(layer: nn.Module, sparsity: float, gen: torch.Generator) -> torch.Tensor:
    """(out, in) mask removing `kernel_count` kernels chosen uniformly at random."""
    o, i = layer.weight.shape[:2]
    keep = torch.ones(o * i, dtype=torch.bool)
    keep[torch.randperm(o * i, generator=gen)[:kernel_count(layer, sparsity)]] = False
    return keep.view(o, i)


def magnitude_kernel_mask(layer: nn.Module, sparsity: float) -> torch.Tensor:
    """(out, in) mask removing the `kernel_count` kernels of smallest L1 norm."""
    norms = layer.weight.detach().abs().sum(dim=(2, 3)).flatten()
    keep = torch.ones_like(norms, dtype=torch.bool)
    keep[torch.argsort(norms)[:kernel_count(layer, sparsity)]] = False
    return keep.view(layer.weight.shape[:2])


def _check(sparsity) -> float:
    if not isinstance(sparsity, (int, float)) or not 0.0 <= float(sparsity) < 1.0:
        raise InvalidInputError(f"kernel sparsity must be a fraction in [0, 1), got {sparsity!r}")
    return float(sparsity)


def _layers(model, filter_fn) -> dict[str, nn.Module]:
    flt = filter_fn or _kernel_convs
    chosen = lambda m, fqn: _kernel_convs(m, fqn) and flt(m, fqn)  # noqa: E731
    layers = {n: m for n, m in attach_masks(model, chosen).items() if chosen(m, n)}  # not other masked layers
    if not layers:
        raise InvalidInputError(f"{type(model).__name__} has no conv layer with k x k kernels (groups=1, k > 1) "
                                "to prune; pass filter_fn= to choose layers")
    return layers


def val_loss_fn(batches: list) -> Callable[[nn.Module], float]:
    """Mean cross-entropy of the model over `batches` (the default evaluation of a candidate mask)."""
    @torch.no_grad()
    def loss(model: nn.Module) -> float:
        was = model.training
        model.eval()
        dev = next(model.parameters()).device
        total = sum(float(F.cross_entropy(model(x.to(dev)), y.to(dev), reduction="sum")) for x, y in batches)
        model.train(was)
        return total / sum(len(y) for _, y in batches)

    return loss


def _finetune(model, cfg, train, val) -> list[dict]:
    if not cfg.finetune_epochs or train is None:
        return []
    return fit(model, train, val_loader=val, config=replace(cfg.fit, epochs=cfg.finetune_epochs),
               callbacks=[KeepMasks(), *cfg.callbacks]).history


@dataclass
class RandomMasksConfig:
    """Random kernel masks (Anwar & Sung).

    sparsity: fraction of the kernels of every selected conv to remove. candidates: N masks drawn per layer
    (search="layer", N x layers evaluations) or for the whole network (search="network", N evaluations).
    eval_fn: model -> loss (lower is better) used to compare candidates; default: cross-entropy over
    `batches` validation batches (the training data if there is no validation split).
    """

    EPOCHS_FIELD: ClassVar[str] = "finetune_epochs"  # what `torchslim sparsify --epochs` sets

    sparsity: float = 0.5
    candidates: int = 20
    search: str = "layer"  # layer | network
    batches: int = 4  # validation batches each candidate is scored on
    seed: int = 0  # seed of the random candidates
    eval_fn: Callable[[nn.Module], float] | None = None
    finetune_epochs: int = 0  # fine-tuning epochs with the chosen masks held
    fit: FitConfig = field(default_factory=lambda: FitConfig(lr=0.01, weight_decay=0.0, progress=False))
    filter_fn: FilterFn | None = None
    callbacks: list = field(default_factory=list)


@dataclass
class KernelMagnitudeConfig:
    """Kernel-wise magnitude baseline: remove the `sparsity` of each conv's kernels of smallest L1 norm."""

    EPOCHS_FIELD: ClassVar[str] = "finetune_epochs"  # what `torchslim sparsify --epochs` sets

    sparsity: float = 0.5  # fraction of each conv's k x k kernels removed (smallest L1 norm first)
    finetune_epochs: int = 0  # fine-tuning epochs with the masks held
    fit: FitConfig = field(default_factory=lambda: FitConfig(lr=0.01, weight_decay=0.0, progress=False))
    filter_fn: FilterFn | None = None
    callbacks: list = field(default_factory=list)


def _summary(losses: list[float], k: int, n: int) -> dict:
    return {"kernels": n, "pruned": k, "losses": losses, "best": min(losses), "mean": sum(losses) / len(losses),
            "worst": max(losses)}


@register_method("random_masks", RandomMasksConfig)
def run_random_masks(model: nn.Module, cfg: RandomMasksConfig, train, val) -> dict:
    s = _check(cfg.sparsity)
    if cfg.search not in ("layer", "network"):
        raise InvalidInputError(f"search must be 'layer' or 'network', got {cfg.search!r}")
    if cfg.candidates < 1:
        raise InvalidInputError(f"candidates must be at least 1, got {cfg.candidates}")
    evaluate = cfg.eval_fn
    if evaluate is None:
        source = val if val is not None else train
        if source is None:
            raise InvalidInputError("random_masks compares candidate masks on data: pass data= (a DataBundle "
                                    "or (train, val) loaders) or eval_fn=")
        batches = [b for _, b in zip(range(max(1, cfg.batches)), source)]
        evaluate = val_loss_fn(batches)
    layers = _layers(model, cfg.filter_fn)
    gen = torch.Generator().manual_seed(int(cfg.seed))
    dense = evaluate(model)
    info: dict = {"search": cfg.search, "candidates": cfg.candidates, "loss_dense": dense, "layers": {}}
    if cfg.search == "layer":
        for name, layer in layers.items():
            draws = [random_kernel_mask(layer, s, gen) for _ in range(cfg.candidates)]
            losses = []
            for keep in draws:
                set_mask(layer, expand_kernel_mask(keep, layer), zero_weights=False)
                losses.append(evaluate(model))
            best = min(range(len(draws)), key=losses.__getitem__)
            set_mask(layer, expand_kernel_mask(draws[best], layer), zero_weights=False)
            info["layers"][name] = _summary(losses, kernel_count(layer, s), draws[best].numel())
    else:
        draws, losses = [], []
        for _ in range(cfg.candidates):
            draws.append({n: random_kernel_mask(l, s, gen) for n, l in layers.items()})
            for n, keep in draws[-1].items():
                set_mask(layers[n], expand_kernel_mask(keep, layers[n]), zero_weights=False)
            losses.append(evaluate(model))
        best = min(range(len(draws)), key=losses.__getitem__)
        for n, keep in draws[best].items():
            set_mask(layers[n], expand_kernel_mask(keep, layers[n]), zero_weights=False)
        info["network"] = _summary(losses, sum(kernel_count(l, s) for l in layers.values()),
                                   sum(k.numel() for k in draws[best].values()))
        info["layers"] = {n: {"kernels": l.weight.shape[0] * l.weight.shape[1], "pruned": kernel_count(l, s)}
                          for n, l in layers.items()}
    for layer in layers.values():
        set_mask(layer, layer.weight_mask)  # zero the weights under the chosen masks
    info["loss_masked"] = evaluate(model)
    info["history"] = _finetune(model, cfg, train, val)
    return info


@register_method("kernel_magnitude", KernelMagnitudeConfig, needs_data=False)
def run_kernel_magnitude(model: nn.Module, cfg: KernelMagnitudeConfig, train, val) -> dict:
    s = _check(cfg.sparsity)
    layers = _layers(model, cfg.filter_fn)
    for layer in layers.values():
        set_mask(layer, expand_kernel_mask(magnitude_kernel_mask(layer, s), layer))
    info = {"layers": {n: {"kernels": l.weight.shape[0] * l.weight.shape[1], "pruned": kernel_count(l, s)}
                       for n, l in layers.items()}}
    info["history"] = _finetune(model, cfg, train, val)
    return info

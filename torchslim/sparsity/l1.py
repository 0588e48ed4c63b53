"""Elementwise L1 regularisation, the simple baseline of sparsity learning: train with
lambda * sum |w| added to the loss (its subgradient drives small weights towards zero), then prune the
weights that stayed smallest to the target and retrain briefly with the masks held.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import nn

from torchslim.sparsity.api import need_data, register_method
from torchslim.sparsity.magnitude import prune_by_magnitude
from torchslim.sparsity.masks import MASKABLE, FilterFn, KeepMasks, is_masked
from torchslim.train import FitConfig, fit


class L1Regularizer:
    """`model -> lambda * sum |W|` over Linear/Conv weights; usable in `fit(regularizers=[...])` or a
    user's own loop (`loss = loss + reg(model)`).

    Example:
        >>> fit(model, data.train, regularizers=[L1Regularizer(1e-5)])
    """

    def __init__(self, lam: float = 1e-5, filter_fn: FilterFn | None = None):
        self.lam, self.filter_fn = float(lam), filter_fn

    def __call__(self, model: nn.Module) -> torch.Tensor:
        total = None
        for name, m in model.named_modules():
            if isinstance(m, MASKABLE) and (self.filter_fn is None or self.filter_fn(m, name)):
                w = m.masked_weight() if is_masked(m) else m.weight
                term = w.abs().sum()
                total = term if total is None else total + term
        if total is None:
            return torch.zeros(())
        return self.lam * total


@dataclass
class L1Config:
    sparsity: float | dict = 0.9  # target fraction of zeros (or {layer: fraction})
    l1: float = 1e-4  # lambda (per weight; the loss adds lambda * sum |w|)
    scope: str = "layer"
    epochs: int = 2  # training with the L1 term
    finetune_epochs: int = 1  # after pruning, with masks held (0: none)
    fit: FitConfig = field(default_factory=lambda: FitConfig(lr=0.01, weight_decay=0.0, progress=False))
    filter_fn: FilterFn | None = None
    callbacks: list = field(default_factory=list)


@register_method("l1", L1Config)
def run_l1(model: nn.Module, cfg: L1Config, train, val) -> dict:
    need_data(train, "l1")
    reg = L1Regularizer(cfg.l1, cfg.filter_fn)
    history = [{"phase": "l1", **h} for h in fit(model, train, val_loader=val, config=replace(cfg.fit, epochs=cfg.epochs, label="l1: regularised"),
                                                  regularizers=[reg], callbacks=list(cfg.callbacks)).history]
    prune_by_magnitude(model, cfg.sparsity, scope=cfg.scope, filter_fn=cfg.filter_fn)
    if cfg.finetune_epochs:
        history += [{"phase": "finetune", **h} for h in
                    fit(model, train, val_loader=val, config=replace(cfg.fit, epochs=cfg.finetune_epochs,
                                                                         label="l1: fine-tuning"),
                        callbacks=[KeepMasks(), *cfg.callbacks]).history]
    return {"history": history}

"""Iterative hard thresholding / dense-sparse-dense training (Jin et al. 2016, "Training Skinny Deep
Neural Networks with Iterative Hard Thresholding Methods").

Alternate two phases (algorithm 1): train dense for s1 steps; keep the k largest weights of each layer
(hard thresholding, k = (1 - sparsity) n) and train only those for s2 steps; release all weights
(the pruned ones restart from zero) and train densely again. Repeat; the last phase is sparse, so the
result has the target sparsity. The dense phases let the network escape the support chosen earlier.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import ClassVar

import torch
from torch import nn

from torchslim.sparsity.api import need_data, register_method
from torchslim.sparsity.magnitude import prune_by_magnitude
from torchslim.sparsity.masks import FilterFn, KeepMasks, attach_masks, masked_layers
from torchslim.train import FitConfig, fit


@dataclass
class IHTConfig:
    """`cycles` of (dense `dense_epochs`, hard threshold, sparse `sparse_epochs`); a trained model may
    skip the first dense phase (`dense_first=False`)."""

    EPOCHS_FIELD: ClassVar[str] = "sparse_epochs"  # what `torchslim sparsify --epochs` sets

    sparsity: float | dict = 0.9  # target fraction of zeros (float, or {layer: fraction})
    scope: str = "layer"  # layer | global threshold
    cycles: int = 2  # dense -> sparse cycles
    dense_epochs: int = 1  # epochs of each dense phase
    sparse_epochs: int = 1  # epochs of each sparse phase (masks held)
    dense_first: bool = False  # start with a dense phase (False: the model is trained already)
    fit: FitConfig = field(default_factory=lambda: FitConfig(lr=0.01, weight_decay=0.0, progress=False))
    filter_fn: FilterFn | None = None
    callbacks: list = field(default_factory=list)


def release_masks(model: nn.Module) -> None:
    """Dense phase: every connection trainable again (the pruned ones start from zero)."""
    for _, m in masked_layers(model):
        m.weight_mask.fill_(True)


@register_method("iht", IHTConfig)
def run_iht(model: nn.Module, cfg: IHTConfig, train, val) -> dict:
    need_data(train, "iht")
    attach_masks(model, cfg.filter_fn)
    history: list[dict] = []
    for c in range(1, max(1, cfg.cycles) + 1):
        if c > 1 or cfg.dense_first:
            release_masks(model)
            for h in fit(model, train, val_loader=val, config=replace(cfg.fit, epochs=cfg.dense_epochs,
                                                                     label=f"iht: dense {c}/{cfg.cycles}"),
                         callbacks=list(cfg.callbacks)).history:
                history.append({"cycle": c, "phase": "dense", **h})
        with torch.no_grad():
            prune_by_magnitude(model, cfg.sparsity, scope=cfg.scope, filter_fn=cfg.filter_fn)
        for h in fit(model, train, val_loader=val, config=replace(cfg.fit, epochs=cfg.sparse_epochs,
                                                                 label=f"iht: sparse {c}/{cfg.cycles}"),
                     callbacks=[KeepMasks(), *cfg.callbacks]).history:
            history.append({"cycle": c, "phase": "sparse", **h})
    return {"cycles": cfg.cycles, "history": history}

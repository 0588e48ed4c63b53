"""Connection pruning by activation correlation (Sun, Wang & Tang 2016, "Sparsifying Neural Network
Connections for Face Recognition"), for fully connected layers and extended to convolutions.

For a layer with inputs x_i and outputs y_j, the correlation coefficient
r_ij = cov(x_i, y_j) / (std(x_i) std(y_j)) is measured on training data. Each output neuron j keeps K
of its connections: the most positively correlated and the most negatively correlated, K+ and K-
in proportion to how many of its r_ij are positive and negative; weakly correlated connections go.
Layers are sparsified one at a time from the top (output) layer down, retraining after each (their
schedule), so the statistics of a lower layer are measured in the already sparsified network.

For a convolution the "input neurons" of a filter are its im2col rows (c, kh, kw): the correlation is
between each patch element and the filter's output at the same location (sampled locations).
Here y is the layer's output before its activation function (the activation is a separate module).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from torchslim.errors import InvalidInputError
from torchslim.sparsity.api import need_data, register_method
from torchslim.sparsity.masks import FilterFn, KeepMasks, attach_masks, set_mask
from torchslim.train import FitConfig, fit


class _Moments:
    def __init__(self):
        self.n = 0
        self.sx = self.sy = self.sxx = self.syy = self.sxy = None

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:  # x (S, I), y (S, O)
        x, y = x.double(), y.double()
        parts = (x.sum(0), y.sum(0), (x * x).sum(0), (y * y).sum(0), y.T @ x)
        if self.sx is None:
            self.sx, self.sy, self.sxx, self.syy, self.sxy = parts
        else:
            for name, p in zip(("sx", "sy", "sxx", "syy", "sxy"), parts):
                setattr(self, name, getattr(self, name) + p)
        self.n += x.shape[0]

    def correlation(self) -> torch.Tensor:  # (O, I)
        n = self.n
        mx, my = self.sx / n, self.sy / n
        cov = self.sxy / n - my[:, None] * mx[None, :]
        sx = (self.sxx / n - mx ** 2).clamp_min(0).sqrt()
        sy = (self.syy / n - my ** 2).clamp_min(0).sqrt()
        return (cov / (sy[:, None] * sx[None, :]).clamp_min(1e-12)).float()


def _rows(layer: nn.Module, x: torch.Tensor, y: torch.Tensor, max_locations: int, gen: torch.Generator):
    """(inputs, outputs) of one batch as samples: neurons for Linear, im2col rows for convs."""
    if isinstance(layer, nn.Linear):
        return x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
    if isinstance(layer, nn.Conv2d):
        if layer.groups != 1:
            raise InvalidInputError(f"correlation pruning of grouped conv {layer} is not supported")
        cols = F.unfold(x, layer.kernel_size, layer.dilation, layer.padding, layer.stride)  # (B, I, L)
        outs = y.flatten(2)  # (B, O, L)
        L = cols.shape[2]
        if L > max_locations:
            idx = torch.randperm(L, generator=gen)[:max_locations]
            cols, outs = cols[:, :, idx], outs[:, :, idx]
        return cols.transpose(1, 2).reshape(-1, cols.shape[1]), outs.transpose(1, 2).reshape(-1, outs.shape[1])
    raise InvalidInputError(f"correlation pruning supports Linear and Conv2d, not {type(layer).__name__}")


@torch.no_grad()
def activation_correlation(model: nn.Module, layer: nn.Module, batches, *, max_batches: int = 20,
                           max_locations: int = 64) -> torch.Tensor:
    """r_ij between the layer's outputs and inputs, shaped like the layer's weight."""
    stats, gen = _Moments(), torch.Generator().manual_seed(0)

    def hook(m, args, out):
        stats.add(*_rows(m, args[0], out, max_locations, gen))

    handle = layer.register_forward_hook(hook)
    was = model.training
    model.eval()
    device = layer.weight.device
    try:
        for i, batch in enumerate(batches):
            if i >= max_batches:
                break
            model((batch[0] if isinstance(batch, (tuple, list)) else batch).to(device))
    finally:
        handle.remove()
        model.train(was)
    if stats.n == 0:
        raise InvalidInputError("no data reached the layer: pass a non-empty loader")
    return stats.correlation().view_as(layer.weight)


def correlation_mask(r: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Per output neuron keep K = (1 - s) fan-in connections: the K+ most positive and K- most negative r,
    K+ : K- as the neuron's counts of positive and negative r."""
    r2 = r.flatten(1)
    fan_in = r2.shape[1]
    k = max(1, int(round((1.0 - sparsity) * fan_in)))
    n_pos = (r2 > 0).sum(1, keepdim=True).float()
    k_pos = torch.round(k * n_pos / fan_in).long().clamp(0, k)
    order_pos = r2.argsort(dim=1, descending=True)  # most positive first
    order_neg = r2.argsort(dim=1)  # most negative first
    rank = torch.arange(fan_in)[None, :]
    mask = torch.zeros_like(r2, dtype=torch.bool)
    mask.scatter_(1, order_pos, rank < k_pos)
    mask.scatter_(1, order_neg, (rank < (k - k_pos)) | mask.gather(1, order_neg))
    return mask.view_as(r)


@dataclass
class CorrelationConfig:
    """Per layer, top layer first: measure r on `stat_batches` batches, keep the strong correlations,
    retrain `epochs_per_layer` with the masks held; then `finetune_epochs` more."""

    EPOCHS_FIELD: ClassVar[str] = "epochs_per_layer"  # what `torchslim sparsify --epochs` sets

    sparsity: float | dict = 0.9  # fraction of connections removed per layer (or {layer: fraction})
    stat_batches: int = 20  # training batches the correlations are measured on
    max_locations: int = 64  # spatial positions sampled per image (convolutions)
    epochs_per_layer: int = 1  # retraining epochs after each layer's masks, masks held
    finetune_epochs: int = 0  # fine-tuning epochs at the end, masks held
    fit: FitConfig = field(default_factory=lambda: FitConfig(lr=0.01, weight_decay=0.0, progress=False))
    filter_fn: FilterFn | None = None
    callbacks: list = field(default_factory=list)


@register_method("correlation", CorrelationConfig)
def run_correlation(model: nn.Module, cfg: CorrelationConfig, train, val) -> dict:
    need_data(train, "correlation")
    layers = attach_masks(model, cfg.filter_fn)
    history = []
    for name in reversed(list(layers)):  # top layer first
        s = cfg.sparsity.get(name) if isinstance(cfg.sparsity, dict) else cfg.sparsity
        if s is None:
            continue
        r = activation_correlation(model, layers[name], train, max_batches=cfg.stat_batches,
                                   max_locations=cfg.max_locations)
        set_mask(layers[name], correlation_mask(r, s) & layers[name].weight_mask)
        if cfg.epochs_per_layer:
            history += [{"layer": name, **h} for h in
                        fit(model, train, val_loader=val, config=replace(cfg.fit, epochs=cfg.epochs_per_layer,
                                                                             label=f"correlation: {name}"),
                            callbacks=[KeepMasks(), *cfg.callbacks]).history]
    if cfg.finetune_epochs:
        history += [{"phase": "finetune", **h} for h in
                    fit(model, train, val_loader=val, config=replace(cfg.fit, epochs=cfg.finetune_epochs,
                                                                         label="correlation: fine-tuning"),
                        callbacks=[KeepMasks(), *cfg.callbacks]).history]
    return {"history": history}

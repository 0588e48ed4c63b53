"""Dynamic Network Surgery (Guo, Yao & Chen 2016, "Dynamic Network Surgery for Efficient DNNs").

Each layer k keeps its full weights W_k and a binary mask T_k. The forward uses W_k * T_k, while the
gradient of the loss with respect to W_k * T_k updates *all* of W_k (eq. 4, straight-through), so a
connection cut too early can grow back. Every so often T_k is re-derived from |W_k| with two thresholds
a_k < b_k (eq. 3):

    h_k(w) = 0     if |w| < a_k          (pruning)
             T     if a_k <= |w| < b_k   (unchanged)
             1     if |w| >= b_k         (splicing)

The surgery happens at iteration t with probability sigma(t) = (1 + gamma t)^(-power), which decays
so that the masks settle (section 3.3). Thresholds come from layer statistics: the authors' code uses
t_k = max(mean|W| + c_k std|W|, 0), a_k = 0.9 t_k, b_k = 1.1 t_k with mean and std taken once at the
start (`crate`). With `sparsity` instead, each surgery keeps exactly (1 - s) of the layer: the largest
of |w| * (b/a if the connection is currently kept else 1), so a cut connection is spliced back when it
outgrows a kept one by the paper's ratio b_k / a_k = 1.1 / 0.9 (the same hysteresis, at a fixed count).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import nn

from torchslim.errors import InvalidInputError
from torchslim.sparsity.api import need_data, register_method
from torchslim.sparsity.masks import FilterFn, apply_masks, attach_masks, masked_layers
from torchslim.train import Callback, FitConfig, fit


class NetworkSurgery(Callback):
    """Prune-and-splice masks during `fit`; weights under the mask keep learning (straight-through).

    Args:
        sparsity: target fraction of zeros per layer (float or {fqn: float}); or
        crate: the paper's c_k (float or {fqn: float}): t_k = mean|W| + c_k std|W| at the start.
        margin: a_k = (1 - margin) t_k, b_k = (1 + margin) t_k (0.1 in the authors' code).
        gamma, power: surgery probability sigma(t) = (1 + gamma t)^(-power).
        bake: at the end, zero the weights under the masks and switch straight-through off.
    """

    def __init__(self, sparsity: float | dict | None = None, *, crate: float | dict | None = None,
                 margin: float = 0.1, gamma: float = 1e-4, power: float = 1.0, bake: bool = True):
        if (sparsity is None) == (crate is None):
            raise InvalidInputError("NetworkSurgery needs exactly one of sparsity= or crate=")
        self.sparsity, self.crate, self.margin = sparsity, crate, float(margin)
        self.gamma, self.power, self.bake = float(gamma), float(power), bake
        self.centres: dict[str, float] = {}
        self.surgeries = 0

    def _per_layer(self, value, name):
        if isinstance(value, dict):
            return value.get(name)
        return value

    def probability(self, step: int) -> float:
        return (1.0 + self.gamma * step) ** (-self.power)

    def on_fit_begin(self, model: nn.Module, optimizer) -> None:
        layers = dict(masked_layers(model))
        if not layers:
            raise InvalidInputError("NetworkSurgery needs masked layers: call attach_masks(model) first")
        for name, m in layers.items():
            m.straight_through = True
            if self.crate is not None and name not in self.centres:
                c = self._per_layer(self.crate, name)
                if c is not None:
                    w = m.weight.detach().abs()
                    self.centres[name] = max(float(w.mean() + c * w.std()), 0.0)
        self.surgery(model)  # the first iteration always operates (sigma(0) = 1)

    @torch.no_grad()
    def surgery(self, model: nn.Module) -> None:
        for name, m in masked_layers(model):
            w = m.weight.detach().abs()
            mask = m.weight_mask
            if self.sparsity is not None:
                s = self._per_layer(self.sparsity, name)
                if s is None:
                    continue
                if not 0.0 <= s < 1.0:
                    raise InvalidInputError(f"sparsity of {name} must be in [0, 1), got {s}")
                # keep exactly round((1 - s) n): the k largest of |w| * (b/a if currently kept else 1), i.e. a
                # cut weight returns only when it outgrows a kept one by the paper's b_k / a_k = 1.1 / 0.9
                ratio = (1.0 + self.margin) / (1.0 - self.margin)
                score = torch.where(mask, w * ratio, w)
                k = max(1, int(round((1.0 - s) * w.numel())))
                keep = torch.zeros(w.numel(), dtype=torch.bool, device=w.device)
                keep[torch.topk(score.flatten(), k, sorted=False).indices] = True
                mask.copy_(keep.view_as(mask))
                continue
            if name not in self.centres:
                continue
            t = self.centres[name]
            a, b = (1.0 - self.margin) * t, (1.0 + self.margin) * t
            mask &= ~(w < a)  # prune
            mask |= w >= b  # splice
        self.surgeries += 1

    def after_step(self, model: nn.Module, step: int) -> None:
        if float(torch.rand(())) < self.probability(step + 1):
            self.surgery(model)

    def on_fit_end(self, model: nn.Module) -> None:
        for _, m in masked_layers(model):
            m.straight_through = False
        if self.bake:
            apply_masks(model)

    def state_dict(self) -> dict:
        return {"centres": dict(self.centres), "surgeries": self.surgeries}

    def load_state_dict(self, state: dict) -> None:
        self.centres = dict(state.get("centres", {}))
        self.surgeries = int(state.get("surgeries", 0))


@dataclass
class DNSConfig:
    """Dynamic Network Surgery settings: `sparsity` (or the paper's `crate`), `epochs` of surgery
    training, then `finetune_epochs` with the masks frozen (the paper keeps training after surgery
    stops; freezing makes the final accuracy that of the final masks)."""

    sparsity: float | dict | None = 0.9  # target fraction of zeros (float, or {layer: fraction})
    crate: float | dict | None = None  # the paper's c_rate instead of a target: thresholds at mean + crate * std
    margin: float = 0.1  # hysteresis between the prune and splice thresholds (fraction of the threshold)
    gamma: float = 1e-4  # surgery probability sigma(t) = (1 + gamma t)^(-power)
    power: float = 1.0  # see gamma
    epochs: int = 4  # surgery epochs (masks pruned and spliced while training)
    finetune_epochs: int = 1  # epochs with the masks frozen after surgery
    fit: FitConfig = field(default_factory=lambda: FitConfig(lr=0.01, weight_decay=0.0, progress=False))
    filter_fn: FilterFn | None = None
    callbacks: list = field(default_factory=list)


@register_method("dns", DNSConfig)
def run_dns(model: nn.Module, cfg: DNSConfig, train, val) -> dict:
    need_data(train, "dns")
    if cfg.crate is not None:
        cfg = replace(cfg, sparsity=None)
    attach_masks(model, cfg.filter_fn)
    surgery = NetworkSurgery(cfg.sparsity, crate=cfg.crate, margin=cfg.margin, gamma=cfg.gamma, power=cfg.power)
    history = fit(model, train, val_loader=val, config=replace(cfg.fit, epochs=cfg.epochs, label="dns: surgery"),
                  callbacks=[surgery, *cfg.callbacks]).history
    if cfg.finetune_epochs:
        from torchslim.sparsity.masks import KeepMasks

        history += [{"phase": "finetune", **h} for h in
                    fit(model, train, val_loader=val, config=replace(cfg.fit, epochs=cfg.finetune_epochs,
                                                                         label="dns: fine-tuning"),
                        callbacks=[KeepMasks(), *cfg.callbacks]).history]
    return {"surgeries": surgery.surgeries, "history": history}

"""Force Regularization (Wen, Xu, Wu, Wang, Chen & Li, "Coordinating Filters for Faster Deep Neural
Networks", ICCV 2017, Sec. 3): during training, the filters of each layer attract each other, so
their directions gather in a low-dimensional subspace and a later low-rank decomposition (`decompose`,
e.g. `tucker1`: a rank-K filter basis and a 1x1 recombination) keeps more of the layer at the same rank.

Each filter w_i (a row of the layer's N x (C kh kw) matrix) is a particle on the unit sphere,
w^_i = w_i / ||w_i||. Filter j pulls filter i with

    f_ji = (w^_j - w^_i) / ||w^_j - w^_i||^p

p = 0 is the paper's L2-norm-based force, f_ji = -d(||w^_i - w^_j||^2 / 2)/dw^_i: its magnitude is
the distance, so it fades as filters converge (`force="l2"`, the default; `Degradation` in the
authors' Caffe code). The paper's Lennard-Jones-like alternative keeps only an attraction that grows
as filters come closer; `force="gravity"` (p = 3: magnitude 1/d^2, the authors' `Gravity`) is that
short-range attraction here, with `constant` (p = 1, unit magnitude: the gradient of
sum ||w^_i - w^_j||) and `linear` (p = 2, magnitude 1/d) between the two.

Only the part of the resultant force tangent to the sphere moves the filter (its norm, which the
data loss sets, is left alone), scaled back by ||w_i||; the update of w_i is

    w_i <- w_i - lr * (dE/dw_i - lambda_f ||w_i|| (F_i - (F_i . w^_i) w^_i)),   F_i = sum_j f_ji

with lambda_f the strength (`force_decay` in the authors' code, which also offers the `adaptive`
strength: lambda_f times ||dE/dW|| / ||force|| per layer, so lambda_f is the force's share of the
step). Filters of norm ~0 are left out. The force enters the gradient before the optimizer step, so
momentum and the learning-rate schedule act on it as on the data gradient.

Example:
    >>> smooth = torchslim.sparsify(model, "force", data=data, strength=1e-3, epochs=2)
    >>> small = torchslim.decompose(smooth, method="tucker1", rank=0.25)
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import nn

from torchslim.errors import InvalidInputError
from torchslim.sparsity.api import need_data, register_method
from torchslim.sparsity.masks import FilterFn
from torchslim.train import Callback, FitConfig, fit

FORCES = {"l2": 0, "constant": 1, "linear": 2, "gravity": 3}  # the exponent p of the distance
EPS = 1e-8


def filter_force(W: torch.Tensor, force: str = "l2") -> torch.Tensor:
    """||w_i|| times the tangent part of sum_j f_ji for each row w_i of W (N x D); zero rows get zero."""
    p = FORCES[force]
    W = W.detach().double()
    norms = W.norm(dim=1)
    live = norms > EPS
    out = torch.zeros_like(W)
    if live.sum() < 2:
        return out
    U = W[live] / norms[live, None]
    if p == 0:  # sum_j (u_j - u_i) = sum_j u_j - n u_i, no pairwise matrix needed
        pull = U.sum(0, keepdim=True) - len(U) * U
    else:
        dist = (2 - 2 * U @ U.T).clamp(min=0).sqrt()
        coef = torch.where(dist > EPS, dist.clamp(min=EPS) ** -p, torch.zeros_like(dist))
        coef.fill_diagonal_(0)
        pull = coef @ U - coef.sum(1, keepdim=True) * U
    tangent = pull - (pull * U).sum(1, keepdim=True) * U
    out[live] = norms[live, None] * tangent
    return out


def force_layers(model: nn.Module, filter_fn: FilterFn | None = None) -> list[tuple[str, nn.Module]]:
    """Layers whose filters attract each other: Conv2d (groups=1) and Linear, or those `filter_fn` picks."""
    out = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1):
            if m.weight.shape[0] > 1 and (filter_fn is None or filter_fn(m, name)):
                out.append((name, m))
    return out


class ForceRegularizer(Callback):
    """Adds the force to each selected layer's weight gradient after `backward` (use in `fit(callbacks=)`).

    Args:
        strength: lambda_f.
        force: l2 (the paper's L2-norm-based force), constant, linear or gravity (Lennard-Jones-like).
        adaptive: scale lambda_f per layer by ||dE/dW|| / ||force||.
        filter_fn: `(module, fqn) -> bool` selecting layers (default: every Conv2d with groups=1 and Linear).

    Example:
        >>> fit(model, data.train, callbacks=[ForceRegularizer(1e-3)])
    """

    def __init__(self, strength: float = 1e-3, force: str = "l2", adaptive: bool = False,
                 filter_fn: FilterFn | None = None):
        if force not in FORCES:
            raise InvalidInputError(f"unknown force {force!r}; use one of {', '.join(FORCES)}")
        if strength < 0:
            raise InvalidInputError(f"force strength must be >= 0, got {strength}")
        self.strength, self.force, self.adaptive, self.filter_fn = float(strength), force, adaptive, filter_fn
        self.layers: list = []

    def on_fit_begin(self, model, optimizer):
        self.layers = [m for _, m in force_layers(model, self.filter_fn)]
        if not self.layers:
            raise InvalidInputError(f"{type(model).__name__} has no Conv2d/Linear layer for force regularization")

    @torch.no_grad()
    def after_backward(self, model, step):
        for m in self.layers:
            w = m.weight
            if w.grad is None:
                continue
            f = filter_force(w.reshape(w.shape[0], -1), self.force).reshape(w.shape).to(w.grad.dtype)
            lam = self.strength
            if self.adaptive:
                fn = f.norm()
                lam = lam * float(w.grad.norm() / fn) if fn > 0 else 0.0
            w.grad.sub_(lam * f)  # descent moves w along +force: towards the other filters


def energy_kept(weight: torch.Tensor, rank: int) -> float:
    """Fraction of ||W||_F^2 that the best rank-`rank` approximation of the filter matrix keeps
    (sum of the `rank` largest squared singular values of W reshaped to N x (C kh kw), over all)."""
    s = torch.linalg.svdvals(weight.detach().double().reshape(weight.shape[0], -1)) ** 2
    return float(s[:rank].sum() / s.sum().clamp(min=1e-300))


@dataclass
class ForceConfig:
    """Train `epochs` with the force on (no weights are removed: follow with `decompose`)."""

    strength: float = 1e-3  # lambda_f
    force: str = "l2"  # l2 | constant | linear | gravity
    adaptive: bool = False  # scale lambda_f per layer by the ratio of the loss gradient to the force
    epochs: int = 2  # training epochs with the force on
    fit: FitConfig = field(default_factory=lambda: FitConfig(lr=0.01, progress=False))
    filter_fn: FilterFn | None = None
    callbacks: list = field(default_factory=list)


@register_method("force", ForceConfig)
def run_force(model: nn.Module, cfg: ForceConfig, train, val) -> dict:
    need_data(train, "force")
    layers = force_layers(model, cfg.filter_fn)
    ranks = {n: max(1, m.weight.shape[0] // 4) for n, m in layers}  # a quarter of the filters: a common target
    before = {n: energy_kept(m.weight, ranks[n]) for n, m in layers}
    reg = ForceRegularizer(cfg.strength, cfg.force, cfg.adaptive, cfg.filter_fn)
    history = [{"phase": "force", **h} for h in fit(model, train, val_loader=val, config=replace(cfg.fit, epochs=cfg.epochs),
                                                     callbacks=[reg, *cfg.callbacks]).history]
    energy = {n: {"rank": ranks[n], "before": round(before[n], 4), "after": round(energy_kept(m.weight, ranks[n]), 4)}
              for n, m in layers}
    return {"history": history, "energy_at_quarter_rank": energy}

"""Energy-aware pruning (Yang, Chen & Sze, CVPR 2017, "Designing Energy-Efficient Convolutional Neural
Networks using Energy-Aware Pruning").

The method prunes where the energy is, not where the weights are:
1. estimate each layer's energy (computation + data movement, `torchslim.analysis.energy`);
2. repeatedly take the layer that now costs the most energy and prune more of its smallest weights;
3. after each pruning step, restore the layer's outputs by least squares: the kept weights of each
   output unit are refitted so that the pruned layer, fed the *current* (already pruned) network's
   input features, reproduces the *original* layer's outputs on sampled images (Yang et al. sec. 4.2,
   "closest weight restoration"; the same least-squares fit as He et al. 2017's channel pruning);
4. stop when the estimated energy reaches the target; then fine-tune globally with the masks kept.

Registered as sparsity method "energy-aware": `torchslim.sparsify(model, "energy-aware", data=...,
target_energy=0.5)`. Pruned weights stay zero through masks, so the energy model sees them skipped.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from torchslim.analysis.energy import EnergyCosts, estimate_energy
from torchslim.analysis.profile import profile
from torchslim.data import as_batches
from torchslim.errors import InvalidInputError
from torchslim.sparsity.api import need_data, register_method
from torchslim.sparsity.magnitude import keep_largest
from torchslim.sparsity.masks import KeepMasks, attach_masks, set_mask
from torchslim.train import FitConfig, fit


@dataclass
class EnergyAwareConfig:
    """Energy-aware pruning settings.

    target_energy: stop when the estimated energy is at most this fraction of the original.
    step: how much more of a layer's weights one greedy step prunes (fraction of the layer).
    max_layer_sparsity: no layer is pruned beyond this.
    calib_images / samples: images fed to sample features, rows of (im2col) features per layer fit.
    restore: least-squares restoration after each step (False: plain magnitude in energy order).
    max_restore_dim: layers with more inputs per output (C_in * k * k) than this skip restoration.
    ridge: Tikhonov term, relative to the mean diagonal of X^T X.
    epochs: global fine-tuning epochs at the end (with masks kept).
    """

    target_energy: float = 0.5
    step: float = 0.1
    max_layer_sparsity: float = 0.95
    calib_images: int = 2048  # training images whose layer inputs the restoration fits
    samples: int = 8192
    restore: bool = True
    max_restore_dim: int = 4608
    ridge: float = 1e-4
    epochs: int = 1
    costs: EnergyCosts = field(default_factory=EnergyCosts)
    fit: FitConfig = field(default_factory=lambda: FitConfig(lr=0.01, weight_decay=0.0, progress=False))


class _Stop(Exception):
    """Raised by a capture hook: nothing after the captured layer needs computing."""


def _layer_io(model: nn.Module, fqn: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The input and output of layer `fqn` when `model` runs on `x`; the forward stops at the layer."""
    layer = model.get_submodule(fqn)
    got = {}

    def hook(m, args, out):
        got["x"], got["y"] = args[0].detach(), out.detach()
        raise _Stop  # so no later (possibly in-place) op touches the captured tensors, and none is paid for

    h = layer.register_forward_hook(hook)
    try:
        with torch.no_grad():
            model.eval()(x)
    except _Stop:
        pass
    finally:
        h.remove()
    if "x" not in got:
        raise InvalidInputError(f"layer {fqn!r} is not called in {type(model).__name__}'s forward")
    return got["x"], got["y"]


def _rows(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's input as rows of features X (im2col for a conv), so that its output is X W^T + b."""
    if isinstance(layer, nn.Conv2d):
        cols = F.unfold(x, layer.kernel_size, layer.dilation, layer.padding, layer.stride)  # N, D, L
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])
    return x.reshape(-1, x.shape[-1])


def _targets(layer: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """The layer's output as rows matching `_rows`, bias removed."""
    Y = y.flatten(2).transpose(1, 2).reshape(-1, y.shape[1]) if isinstance(layer, nn.Conv2d) else \
        y.reshape(-1, y.shape[-1])
    return Y - layer.bias.detach() if layer.bias is not None else Y


class _OriginalTargets:
    """Per layer, a fixed sample of row positions and the original network's outputs there.

    The original network never changes, so its outputs are computed once per layer (a few MB at the
    default 8192 rows) instead of at every greedy step; each step then only runs the pruned network
    up to the layer.
    """

    def __init__(self, original: nn.Module, calib: torch.Tensor, samples: int, seed: int = 0):
        self.original, self.calib, self.samples, self.seed = original, calib, samples, seed
        self.cache: dict[str, tuple[torch.Tensor | None, torch.Tensor]] = {}

    def __call__(self, name: str, layer: nn.Module) -> tuple[torch.Tensor | None, torch.Tensor]:
        if name not in self.cache:
            _, y = _layer_io(self.original, name, self.calib)
            Y = _targets(layer, y)
            rows = None
            if len(Y) > self.samples:
                gen = torch.Generator().manual_seed(self.seed + len(self.cache))
                rows = torch.randperm(len(Y), generator=gen)[: self.samples]
                Y = Y[rows]
            self.cache[name] = (rows, Y.double())
        return self.cache[name]


def restore_least_squares(layer: nn.Module, X: torch.Tensor, Y: torch.Tensor, ridge: float = 1e-4,
                          iterations: int = 40) -> None:
    """Refit the kept weights of every output unit: min ||Y_f - X_S w_S||^2 + λ||w_S||^2 over its support S.

    Solved for all units at once by conjugate gradients on the masked normal equations
    (M G M + λ) w = M X^T y, warm-started from the current weights: each iteration is one (T x D) @
    (D x D) product instead of T separate D x D factorisations.
    """
    T = layer.weight.shape[0]
    m = layer.weight_mask.reshape(T, -1).to(torch.float64)  # T, D
    G = X.T @ X
    lam = ridge * float(G.diagonal().mean()) + 1e-12
    b = (Y.T @ X) * m  # T, D

    def A(v):  # the masked normal-equation operator, row by row
        return ((v * m) @ G) * m + lam * v

    w = layer.weight.detach().reshape(T, -1).to(torch.float64) * m
    r = b - A(w)
    p = r.clone()
    rr = (r * r).sum(1, keepdim=True)
    for _ in range(iterations):
        Ap = A(p)
        alpha = rr / (p * Ap).sum(1, keepdim=True).clamp_min(1e-300)
        w = w + alpha * p
        r = r - alpha * Ap
        rr_new = (r * r).sum(1, keepdim=True)
        if float(rr_new.max()) < 1e-20:
            break
        p = r + (rr_new / rr.clamp_min(1e-300)) * p
        rr = rr_new
    with torch.no_grad():
        layer.weight.copy_((w * m).reshape(layer.weight.shape).to(layer.weight.dtype))


def _layer_energy(model: nn.Module, input_size, costs: EnergyCosts, names: set[str]) -> tuple[dict, float]:
    rows = estimate_energy(profile(model, input_size), costs)
    return {r.name: r.total_pj for r in rows if r.name in names}, sum(r.total_pj for r in rows)


def energy_aware_prune(model: nn.Module, calib: torch.Tensor, cfg: EnergyAwareConfig = EnergyAwareConfig(),
                       log=None) -> list[dict]:
    """Greedy energy-ordered pruning with least-squares restoration, in place; returns the steps taken."""
    if not 0 < cfg.target_energy < 1:
        raise InvalidInputError(f"target_energy must be in (0, 1), got {cfg.target_energy}")
    if not 0 < cfg.step < 1 or not 0 < cfg.max_layer_sparsity < 1:
        raise InvalidInputError("step and max_layer_sparsity must be in (0, 1)")
    original = copy.deepcopy(model).eval()
    layers = attach_masks(model, lambda m, fqn: isinstance(m, (nn.Linear, nn.Conv2d)) and getattr(m, "groups", 1) == 1)
    if not layers:
        raise InvalidInputError(f"{type(model).__name__} has no Linear or (ungrouped) Conv2d layer to prune")
    input_size = tuple(calib.shape[1:])
    energy, total0 = _layer_energy(model, input_size, cfg.costs, set(layers))
    sparsity = {n: 1.0 - float(l.weight_mask.float().mean()) for n, l in layers.items()}
    targets = _OriginalTargets(original, calib, cfg.samples)
    steps, total = [], total0
    while total > cfg.target_energy * total0:
        open_layers = [n for n in layers if sparsity[n] + 1e-9 < cfg.max_layer_sparsity]
        if not open_layers:
            break
        name = max(open_layers, key=lambda n: energy[n])
        layer = layers[name]
        sparsity[name] = min(cfg.max_layer_sparsity, sparsity[name] + cfg.step)
        set_mask(layer, keep_largest((layer.weight.detach() * layer.weight_mask).abs(), sparsity[name]))
        restored = False
        if cfg.restore and layer.weight[0].numel() <= cfg.max_restore_dim:
            rows, Y = targets(name, layer)
            X = _rows(layer, _layer_io(model, name, calib)[0])
            X = (X if rows is None else X[rows]).double()
            restore_least_squares(layer, X, Y, cfg.ridge)
            restored = True
        energy, total = _layer_energy(model, input_size, cfg.costs, set(layers))
        steps.append({"layer": name, "sparsity": round(sparsity[name], 4), "restored": restored,
                      "energy_fraction": total / total0})
        if log:
            log(steps[-1])
    return steps


@register_method("energy-aware", EnergyAwareConfig)
def run_energy_aware(model: nn.Module, cfg: EnergyAwareConfig, train, val) -> dict:
    need_data(train, "energy-aware")
    calib = torch.cat(as_batches(train, cfg.calib_images))
    steps = energy_aware_prune(model, calib, cfg)
    history = []
    if cfg.epochs > 0:
        from dataclasses import replace

        history = fit(model, train, val_loader=val, config=replace(cfg.fit, epochs=cfg.epochs),
                      callbacks=[KeepMasks()]).history
    return {"steps": steps, "energy_fraction": steps[-1]["energy_fraction"] if steps else 1.0,
            "history": history}

"""Magnitude pruning with retraining (Han et al. 2015, "Learning both Weights and Connections for
Efficient Neural Networks") and the gradual AGP schedule (Zhu & Gupta 2017, "To prune, or not to prune").

Han et al.: prune every connection whose |w| is below a threshold, retrain the remaining ones with the
pruned ones held at zero, and repeat. The threshold is "a quality parameter multiplied by the standard
deviation of a layer's weights" (section 4), or here equally a target sparsity, per layer or global.

AGP (Zhu & Gupta eq. 1): during training the sparsity rises from s_i to s_f over n pruning steps
spaced Δt apart, starting at t0:  s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n Δt))^3.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from torchslim.errors import InvalidInputError
from torchslim.sparsity.api import need_data, register_method
from torchslim.sparsity.masks import FilterFn, KeepMasks, attach_masks, masked_layers, set_mask
from torchslim.train import Callback, FitConfig, fit


# ---------------------------------------------------------------- thresholds -> masks
def _check_fraction(s: float, what: str) -> float:
    if not 0.0 <= float(s) < 1.0:
        raise InvalidInputError(f"{what} must be in [0, 1), got {s}")
    return float(s)


def keep_largest(score: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Mask keeping the round((1 - s) n) largest scores (at least one)."""
    n = score.numel()
    k = max(1, int(round((1.0 - sparsity) * n)))
    if k >= n:
        return torch.ones_like(score, dtype=torch.bool)
    idx = torch.topk(score.flatten(), k, sorted=False).indices
    mask = torch.zeros(n, dtype=torch.bool, device=score.device)
    mask[idx] = True
    return mask.view_as(score)


def magnitude_masks(layers: dict[str, nn.Module], *, sparsity: float | dict | None = None,
                    quality: float | None = None, scope: str = "layer",
                    scores: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Masks that keep the largest-magnitude weights of each masked layer.

    Args:
        layers: {fqn: masked layer} (from `attach_masks`).
        sparsity: fraction of weights to prune: one float for every layer (scope="layer") or for the
            whole set of layers (scope="global": one threshold over all weights); or {fqn: fraction}
            (layers not named are left as they are).
        quality: Han et al.'s rule instead: prune |w| < quality * std(w) per layer, std taken over
            the layer's surviving weights.
        scores: importance per layer (default |W * M|: already pruned weights stay pruned).
    """
    if (sparsity is None) == (quality is None):
        raise InvalidInputError("give exactly one of sparsity= or quality=")
    scores = scores or {n: (m.weight.detach() * m.weight_mask).abs() for n, m in layers.items()}
    if quality is not None:
        out = {}
        for n, m in layers.items():
            alive = m.weight.detach()[m.weight_mask]  # std of the signed surviving weights
            thr = float(quality) * float(alive.std()) if alive.numel() > 1 else 0.0
            out[n] = (scores[n] >= thr) & m.weight_mask
        return out
    if isinstance(sparsity, dict):
        unknown = set(sparsity) - set(layers)
        if unknown:
            raise InvalidInputError(f"sparsity names unknown layer(s) {sorted(unknown)}; masked layers: "
                                    f"{', '.join(layers)}")
        return {n: keep_largest(scores[n], _check_fraction(s, f"sparsity of {n}")) for n, s in sparsity.items()}
    s = _check_fraction(sparsity, "sparsity")
    if scope == "layer":
        return {n: keep_largest(scores[n], s) for n in layers}
    if scope == "global":
        flat = torch.cat([scores[n].flatten() for n in layers])
        k = max(1, int(round((1.0 - s) * flat.numel())))
        thr = torch.topk(flat, k, sorted=True).values[-1]
        return {n: scores[n] >= thr for n in layers}
    raise InvalidInputError(f"scope must be 'layer' or 'global', got {scope!r}")


def prune_by_magnitude(model: nn.Module, sparsity: float | dict | None = None, *, quality: float | None = None,
                       scope: str = "layer", filter_fn: FilterFn | None = None) -> dict[str, torch.Tensor]:
    """One-shot magnitude pruning in place: attach masks (if needed) and prune; returns the new masks.

    Example:
        >>> prune_by_magnitude(model, 0.9, scope="global")
    """
    layers = attach_masks(model, filter_fn)
    if not layers:
        raise InvalidInputError(f"{type(model).__name__} has no Linear/Conv layer to prune")
    masks = magnitude_masks(layers, sparsity=sparsity, quality=quality, scope=scope)
    for n, mask in masks.items():
        set_mask(layers[n], mask)
    return masks


# ---------------------------------------------------------------- AGP as a fit callback
class AGPSchedule(Callback):
    """Gradual pruning during `fit` (Zhu & Gupta eq. 1): every `every` steps between `start` and `end`
    the masks are recomputed by magnitude to reach s_t; weights under the mask are kept at zero.

    Args:
        final_sparsity: s_f (float or {fqn: s_f}).
        start_step / end_step: t0 and t0 + n Δt, in optimizer steps.
        every: Δt in steps.
        initial_sparsity: s_i.
    """

    def __init__(self, final_sparsity: float | dict, start_step: int, end_step: int, every: int = 50,
                 initial_sparsity: float = 0.0, scope: str = "layer"):
        if end_step < start_step:
            raise InvalidInputError(f"AGP end_step {end_step} is before start_step {start_step}")
        self.final, self.start, self.end = final_sparsity, int(start_step), int(end_step)
        self.every, self.initial, self.scope = max(1, int(every)), float(initial_sparsity), scope
        self.current: float = 0.0

    def target(self, step: int) -> float:
        """Fraction of s_f reached at `step` (1 at and after end_step)."""
        if step < self.start:
            return 0.0
        if self.end == self.start:
            return 1.0
        t = min(1.0, (step - self.start) / (self.end - self.start))
        return 1.0 - (1.0 - t) ** 3

    def _sparsity_at(self, frac: float):
        scale = lambda sf: self.initial + (sf - self.initial) * frac  # noqa: E731
        if isinstance(self.final, dict):
            return {n: scale(s) for n, s in self.final.items()}
        return scale(self.final)

    def prune(self, model: nn.Module, step: int) -> None:
        frac = self.target(step)
        self.current = frac
        layers = dict(masked_layers(model))
        if frac <= 0:
            return
        # reset masks to dense first: AGP re-selects from all weights each time (pruned weights are zero,
        # so in practice the selection is monotone)
        masks = magnitude_masks(layers, sparsity=self._sparsity_at(frac), scope=self.scope,
                                scores={n: m.weight.detach().abs() for n, m in layers.items()})
        for n, mask in masks.items():
            set_mask(layers[n], mask)

    def on_fit_begin(self, model, optimizer):
        if not dict(masked_layers(model)):
            raise InvalidInputError("AGPSchedule needs masked layers: call attach_masks(model) first")

    def after_step(self, model: nn.Module, step: int) -> None:
        if self.start <= step <= self.end + self.every and (step - self.start) % self.every == 0:
            self.prune(model, step)

    def on_fit_end(self, model: nn.Module) -> None:
        self.prune(model, max(self.end, self.start))  # reach s_f exactly

    def state_dict(self) -> dict:
        return {"current": self.current}

    def load_state_dict(self, state: dict) -> None:
        self.current = state.get("current", 0.0)


# ---------------------------------------------------------------- the method
@dataclass
class MagnitudeConfig:
    """Magnitude pruning settings.

    sparsity: target fraction of zeros (float, or {fqn: fraction}); quality: Han's q (threshold
    q * std per layer) instead of a target. schedule: "oneshot" (prune once, then `epochs` of
    retraining), "iterative" (`rounds` of prune + retrain `epochs`, density shrinking geometrically;
    Han et al.), or "agp" (gradual pruning across `epochs`, Zhu & Gupta; pruning ends at
    `agp_end` of the training, then fine-tunes with the final masks).
    """

    sparsity: float | dict | None = 0.9
    quality: float | None = None
    scope: str = "layer"  # layer | global
    schedule: str = "iterative"  # oneshot | iterative | agp
    rounds: int = 3  # iterative: prune + retrain rounds
    epochs: int = 1  # retraining epochs per round (oneshot/iterative), total epochs (agp)
    agp_end: float = 0.75  # agp: fraction of the training at which pruning ends
    agp_every: int = 50  # agp: steps between two mask updates
    fit: FitConfig = field(default_factory=lambda: FitConfig(lr=0.01, weight_decay=0.0, progress=False))
    filter_fn: FilterFn | None = None
    callbacks: list = field(default_factory=list)


def _fit(model, train, val, cfg: MagnitudeConfig, epochs: int, callbacks, label: str) -> list[dict]:
    from dataclasses import replace

    if epochs <= 0 or train is None:
        return []
    res = fit(model, train, val_loader=val, config=replace(cfg.fit, epochs=epochs, label=label),
              callbacks=[KeepMasks(), *callbacks, *cfg.callbacks])
    return res.history


@register_method("magnitude", MagnitudeConfig, needs_data=False)  # one-shot: no data
def run_magnitude(model: nn.Module, cfg: MagnitudeConfig, train, val) -> dict:
    if cfg.schedule not in ("oneshot", "iterative", "agp"):
        raise InvalidInputError(f"schedule must be oneshot, iterative or agp, got {cfg.schedule!r}")
    history: list[dict] = []
    if cfg.schedule == "agp":
        need_data(train, "magnitude (agp)")
        if cfg.quality is not None or cfg.sparsity is None:
            raise InvalidInputError("the agp schedule needs a target sparsity=, not quality=")
        attach_masks(model, cfg.filter_fn)
        steps = len(train) if not cfg.fit.max_steps_per_epoch else min(len(train), cfg.fit.max_steps_per_epoch)
        total = max(1, cfg.epochs * steps)
        agp = AGPSchedule(cfg.sparsity, 0, int(cfg.agp_end * total), every=cfg.agp_every, scope=cfg.scope)
        history = _fit(model, train, val, cfg, cfg.epochs, [agp], "magnitude: agp")
        return {"schedule": "agp", "history": history}
    rounds = 1 if cfg.schedule == "oneshot" else max(1, cfg.rounds)
    for r in range(1, rounds + 1):
        if cfg.quality is not None:
            # Han et al. raise the threshold a little each round; here q grows linearly to its target
            prune_by_magnitude(model, quality=cfg.quality * r / rounds, filter_fn=cfg.filter_fn)
        else:
            # density shrinks geometrically: d_r = d^(r / R)
            target = (cfg.sparsity if isinstance(cfg.sparsity, dict) else {"": cfg.sparsity})
            step = {n: 1.0 - (1.0 - s) ** (r / rounds) for n, s in target.items()}
            prune_by_magnitude(model, step if isinstance(cfg.sparsity, dict) else step[""], scope=cfg.scope,
                               filter_fn=cfg.filter_fn)
        for h in _fit(model, train, val, cfg, cfg.epochs, [], f"magnitude: round {r}/{rounds}"):
            history.append({"round": r, **h})
    return {"schedule": cfg.schedule, "rounds": rounds, "history": history}

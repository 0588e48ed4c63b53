"""Selection: turn unit scores into a plan (which units to remove), per group or globally, and search
the ratio that meets a MACs / parameter target."""
from __future__ import annotations

import fnmatch

import torch

from torchslim.errors import InvalidInputError
from torchslim.graph import ChannelGraph


def normalise(graph: ChannelGraph, scores: torch.Tensor) -> torch.Tensor:
    """Divide each group's scores by their mean magnitude, so groups compare (global ranking)."""
    out = scores.clone().float()
    for g in graph.groups:
        s = out[g.units]
        out[g.units] = s / s.abs().mean().clamp(min=1e-12)
    return out


def _eligible(graph, skip) -> list:
    return [g for g in graph.groups if not any(fnmatch.fnmatch(g.name, p) for p in skip)]


def select(graph: ChannelGraph, scores: torch.Tensor, ratio: float, *, allocation: str = "uniform",
           layer_ratios: dict[str, float] | None = None, skip: tuple[str, ...] = (),
           min_keep: float = 0.05, round_to: int = 1) -> torch.Tensor:
    """Plan removing the lowest-scored units.

    Args:
        scores: one score per unit (higher = keep).
        ratio: fraction of units to remove (per group for "uniform", of all units for "global").
        allocation: "uniform" (same ratio in every group), "global" (rank normalised scores across
            groups), "layers" (ratio per group name from `layer_ratios`, e.g. from a sensitivity
            analysis; `ratio` for groups it does not name).
        skip: group-name patterns never pruned (sensitive layers).
        min_keep: every group keeps at least this fraction of its units (and at least one).
        round_to: every pruned group keeps a multiple of this many units (rounded up, as Torch-Pruning's
            `round_to`): runtimes run blocked kernels only on channel counts that are multiples of the
            vector width (ONNX Runtime's NCHWc convolutions: 8 with AVX2, 16 with AVX-512).
    """
    if round_to < 1:
        raise InvalidInputError(f"round_to must be a positive integer, got {round_to}")
    if not 0 <= ratio < 1:
        raise InvalidInputError(f"pruning ratio must be in [0, 1), got {ratio}")
    plan = graph.empty_plan()
    groups = _eligible(graph, skip)
    cap = {g.index: len(g) - max(1, int(round(min_keep * len(g)))) for g in groups}
    if allocation in ("uniform", "layers"):
        for g in groups:
            r = (layer_ratios or {}).get(g.name, ratio) if allocation == "layers" else ratio
            k = min(int(r * len(g)), cap[g.index])
            if k > 0:
                plan[g.units[torch.argsort(scores[g.units], stable=True)[:k]]] = True
        return _round_kept(plan, groups, scores, round_to)
    if allocation != "global":
        raise InvalidInputError(f"unknown allocation {allocation!r}; use uniform, global or layers")
    norm = normalise(graph, scores)
    cand, vals = [], []
    for g in groups:  # the k-th weakest of a group is a candidate only while the group keeps enough
        order = torch.argsort(norm[g.units], stable=True)[: cap[g.index]]
        cand.append(g.units[order])
        vals.append(norm[g.units][order])
    if not cand:
        return plan
    cand, vals = torch.cat(cand), torch.cat(vals)
    k = min(int(ratio * sum(len(g) for g in groups)), len(cand))
    plan[cand[torch.argsort(vals, stable=True)[:k]]] = True
    return _round_kept(plan, groups, norm, round_to)


def group_step(size: int, round_to: int) -> int:
    """The multiple a group of `size` units keeps: `round_to`, or for a small group the largest power of
    two up to half of it, so every group can still lose channels (an 8-channel layer under round_to 8
    could otherwise only stay whole; it keeps multiples of 4)."""
    step = 1
    while step * 2 <= min(round_to, size // 2):
        step *= 2
    return step if step < round_to else round_to


def _round_kept(plan: torch.Tensor, groups: list, scores: torch.Tensor, round_to: int) -> torch.Tensor:
    """Give back each group's best-scored removed units until it keeps a multiple of its step."""
    if round_to == 1:
        return plan
    for g in groups:
        removed = g.units[plan[g.units]]
        kept = len(g) - len(removed)
        if len(removed) == 0:
            continue
        restore = min(-kept % group_step(len(g), round_to), len(removed))
        if restore:
            plan[removed[torch.argsort(scores[removed], descending=True, stable=True)[:restore]]] = False
    return plan


def search_ratio(graph: ChannelGraph, scores: torch.Tensor, target: float, *, metric: str = "macs",
                 reference: float | None = None, **select_kw) -> tuple[float, torch.Tensor]:
    """Smallest ratio whose plan brings `metric` to at most `target` x `reference` (default: the
    graph's own count). Raises if even the largest ratio cannot reach it."""
    if metric not in ("macs", "params"):
        raise InvalidInputError(f"target metric must be macs or params, got {metric!r}")
    if not 0 < target <= 1:
        raise InvalidInputError(f"target must be a fraction in (0, 1], got {target}")
    ref = reference if reference is not None else graph.base[metric]
    goal = target * ref
    if graph.base[metric] <= goal:
        return 0.0, graph.empty_plan()
    lo, hi = 0.0, 0.99
    best = select(graph, scores, hi, **select_kw)
    if graph.estimate(best)[metric] > goal:
        got = graph.estimate(best)[metric] / ref
        raise InvalidInputError(f"cannot reach {metric} <= {target:.0%} of the original: pruning every "
                                f"prunable group to its minimum gives {got:.1%}")
    for _ in range(18):
        mid = (lo + hi) / 2
        plan = select(graph, scores, mid, **select_kw)
        if graph.estimate(plan)[metric] <= goal:
            hi, best = mid, plan
        else:
            lo = mid
    if select_kw.get("round_to", 1) > 1:
        best = _give_back(graph, best, scores, goal, metric, _eligible(graph, select_kw.get("skip", ())),
                          select_kw["round_to"])
    return hi, best


def _give_back(graph, plan, scores, goal, metric, groups, round_to) -> torch.Tensor:
    """Rounded counts move in steps of `round_to` in every group at once, so the plan found by the ratio
    search can land far below the goal (ResNet-56 at 0.66x MACs, round_to 8: 0.25x). Give back
    `round_to` units at a time, to the most-pruned group first, while the goal still holds."""
    step = {g.index: group_step(len(g), round_to) for g in groups}
    open_groups = [g for g in groups if plan[g.units].sum() >= step[g.index]]
    while open_groups:
        g = max(open_groups, key=lambda g: (plan[g.units].float().mean().item(), -g.index))
        removed = g.units[plan[g.units]]
        trial = plan.clone()
        trial[removed[torch.argsort(scores[removed], descending=True, stable=True)[:step[g.index]]]] = False
        if graph.estimate(trial)[metric] <= goal:
            plan = trial
            if trial[g.units].sum() >= step[g.index]:
                continue
        open_groups.remove(g)
    return plan

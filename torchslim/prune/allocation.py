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
           min_keep: float = 0.05) -> torch.Tensor:
    """Plan removing the lowest-scored units.

    Args:
        scores: one score per unit (higher = keep).
        ratio: fraction of units to remove (per group for "uniform", of all units for "global").
        allocation: "uniform" (same ratio in every group), "global" (rank normalised scores across
            groups), "layers" (ratio per group name from `layer_ratios`, e.g. from a sensitivity
            analysis; `ratio` for groups it does not name).
        skip: group-name patterns never pruned (sensitive layers).
        min_keep: every group keeps at least this fraction of its units (and at least one).
    """
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
        return plan
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
    return hi, best

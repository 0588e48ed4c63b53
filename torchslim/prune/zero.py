"""Remove channels that are identically zero (after group-lasso / SSL training): exact, no retraining."""
from __future__ import annotations

import torch
from torch import nn

from torchslim.graph import ChannelGraph
from torchslim.prune.surgery import apply_plan


def zero_units(graph: ChannelGraph, tol: float = 0.0) -> torch.Tensor:
    """Units whose every writer is zero, so the channel is 0 for any input.

    A unit qualifies when each conv/linear filter and bias writing it has all |w| <= tol, each
    batch norm maps 0 to 0 (|beta - gamma * mean / sqrt(var + eps)| <= tol, eval statistics), and
    any other per-channel parameter (layer scale, bias) is <= tol. Units with a LayerNorm are
    left alone: removing a channel changes its statistics.
    """
    ok = torch.ones(graph.num_units, dtype=torch.bool)
    seen = torch.zeros(graph.num_units, dtype=torch.bool)
    for i, u in enumerate(graph.uses):
        uo = graph.unit_of[i]
        if not (uo >= 0).any() or u.kind == "in" or u.name.startswith("_"):
            continue
        m = graph.model.get_submodule(u.module)
        kind = graph.trace.module_kind.get(u.module)
        if u.kind == "norm" and kind == "layernorm":
            bad = torch.ones(len(uo), dtype=torch.bool)
        elif u.kind == "norm" and isinstance(m, nn.modules.batchnorm._BatchNorm):
            if u.name != "weight":
                continue
            gamma = m.weight.detach() if m.weight is not None else torch.ones(m.num_features)
            beta = m.bias.detach() if m.bias is not None else torch.zeros(m.num_features)
            if m.track_running_stats and m.running_mean is not None:
                out0 = beta - gamma * m.running_mean / torch.sqrt(m.running_var + m.eps)
            else:  # batch statistics of an all-zero channel are 0 -> output beta
                out0 = beta
            bad = out0.abs() > tol
        else:
            t = getattr(m, u.name).detach()
            if u.dim < 0:  # element-labelled parameter: judge per element
                bad = t.abs().flatten() > tol
                flat = uo.flatten()
                sel = flat >= 0
                ok[flat[sel][bad[sel]]] = False
                seen[flat[sel]] = True
                continue
            bad = t.movedim(u.dim, 0).reshape(t.shape[u.dim], -1).abs().amax(1) > tol
        sel = uo >= 0
        seen[uo[sel]] = True
        ok[uo[sel][bad[sel]]] = False
    return ok & seen


def remove_zero_channels(model: nn.Module, example_input: torch.Tensor, tol: float = 0.0) -> nn.Module:
    """Physically remove every channel whose producing weights are all zero (|w| <= tol).

    The outputs are unchanged (up to float rounding) because the removed channels are zero for any
    input; see `zero_units` for the exact rule. Each group keeps at least one channel.

    Args:
        model: any traceable CNN; modified in place and returned.
        example_input: a tensor the model accepts.
        tol: weights with |w| <= tol count as zero.

    Example:
        >>> model = remove_zero_channels(model, torch.randn(1, 3, 32, 32), tol=1e-8)
    """
    graph = ChannelGraph(model, example_input)
    plan = zero_units(graph, tol)
    for g in graph.groups:  # a layer cannot lose all its channels
        if bool(plan[g.units].all()):
            plan[g.units[0]] = False
    if plan.any():
        apply_plan(model, graph, plan)
    return model

"""Candidate actions: one change to one layer (or coupled group), applied to a copy of the model.

An action knows how to apply itself and how a recipe writes it, so the search's choice can be
replayed with `torchslim compress`. Actions on the same `layer` exclude each other.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from torch import nn


@dataclass
class Action:
    layer: str  # what it changes; the search picks at most one action per layer
    name: str  # e.g. "tucker 2x"
    apply: Callable[[nn.Module], nn.Module] = field(repr=False)  # model -> changed model (may modify its input)
    stage: dict = field(default_factory=dict)  # the recipe stage that does the same: {"method", "params"}


def lowrank_actions(model: nn.Module, input_size, compressions=(2.0, 4.0), method: str = "tucker") -> list[Action]:
    """Tucker-2 (convs) / SVD (linears) of each layer alone at each compression ratio."""
    from torchslim.lowrank import decompose_with_report

    actions = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and (m.groups != 1 or m.kernel_size == (1, 1)):
            continue  # nothing to gain (torchslim.lowrank says why); keeps the search small
        if not isinstance(m, (nn.Conv2d, nn.Linear)):
            continue
        for x in compressions:
            def apply(net, name=name, x=x):
                out, report = decompose_with_report(net, method, {"compression": x}, layers=[name],
                                                    input_size=input_size, inplace=True)
                if not report.decomposed:
                    raise ValueError(report.layers[0].reason if report.layers else "not decomposable")
                return out

            actions.append(Action(name, f"{method} {x:g}x", apply,
                                  {"method": "decompose", "params": {"method": method,
                                                                     "rank": {name: {"compression": x}}}}))
    return actions

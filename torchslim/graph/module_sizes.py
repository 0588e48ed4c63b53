"""Sizes a model reads from its own modules (`torch.split(x, [self.conv.in_channels, ...])`,
`x.reshape(n, self.hidden_dim, -1)`) follow the pruning instead of locking the channels they touch.

torch.fx records such a size as a plain int. While tracing, every int attribute of every module is
replaced by a `ModuleSize`: an int that remembers the attributes it is a linear combination of, so the
graph's literal says where it came from. The labeler (trace.py) records a `SizeConstraint` for each such
size that cuts a channel dim; `resolve` then checks, once all channels are joined, that the dim keeps as
many channels as the expression will compute after pruning:

* an attribute the surgery updates (`in_channels`, `num_features`, ...) counts the channels of its layer;
  the constraint holds for every plan when the dim's channels and the layers' channels are the same
  units, with the same multiplicities (`in_channels - other.num_features` is fine when the dim holds the
  first layer's channels minus the second's);
* a model's own attribute used alone (`self.hidden_dim`) becomes a virtual parameter use `_int:<name>`
  that the surgery sets to the number of channels kept;
* anything else pins the dim's channels, as a literal size did before.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

# attribute -> which side of the layer's channels it counts (the surgery keeps these up to date)
MANAGED = {"in_channels": "in", "in_features": "in", "out_channels": "out", "out_features": "out",
           "num_features": "in", "num_channels": "in", "num_parameters": "in", "embed_dim": "in"}


class ModuleSize(int):
    """An int read from module attributes: `terms` maps (module, attribute) -> coefficient."""

    terms: dict

    def __new__(cls, value: int, terms: dict):
        obj = super().__new__(cls, value)
        obj.terms = terms
        return obj

    def _combine(self, other, sign: int):
        if isinstance(other, ModuleSize):
            terms = dict(self.terms)
            for k, c in other.terms.items():
                terms[k] = terms.get(k, 0) + sign * c
            return ModuleSize(int(self) + sign * int(other), {k: c for k, c in terms.items() if c})
        if type(other) is int:
            return ModuleSize(int(self) + sign * other, self.terms)
        return NotImplemented

    def __add__(self, other):
        return self._combine(other, 1)

    __radd__ = __add__

    def __sub__(self, other):
        return self._combine(other, -1)

    def __rsub__(self, other):
        return (-self)._combine(other, 1)

    def __neg__(self):
        return ModuleSize(-int(self), {k: -c for k, c in self.terms.items()})

    def __mul__(self, other):
        if type(other) is int:
            return ModuleSize(int(self) * other, {k: c * other for k, c in self.terms.items() if c * other})
        return int(self) * other

    __rmul__ = __mul__


@contextlib.contextmanager
def tracked_sizes(model: nn.Module):
    """Within the block, every int attribute of `model`'s modules is a `ModuleSize`."""
    saved = []
    for fqn, m in model.named_modules():
        for k, v in list(vars(m).items()):
            if type(v) is int:
                saved.append((m, k, v))
                m.__dict__[k] = ModuleSize(v, {(fqn, k): 1})
    try:
        yield
    finally:
        for m, k, v in saved:
            m.__dict__[k] = v


@dataclass
class SizeConstraint:
    """`labels[i]`: the channels at position i of a dim whose size the model computes as `size`."""

    size: ModuleSize
    labels: torch.Tensor  # (n, k): the labels of each of the n slices along the dim
    where: str


def resolve(constraints: list[SizeConstraint], comp: torch.Tensor, layer_sides: dict, model: nn.Module) -> list[tuple]:
    """Decide each constraint, given the channel components `comp` and `layer_sides[(module, "in"|"out")]`
    (the labels of a layer's input/output channels). Returns actions: ("attr", module, attribute, labels)
    for a model's own attribute that must become the kept count, or ("pin", labels, [layer labels], why)."""
    actions = []
    for c in constraints:
        terms = list(c.size.terms.items())
        layers = [layer_sides.get((m, MANAGED[a])) for (m, a), _ in terms if a in MANAGED]
        layers = [ch for ch in layers if ch is not None]
        if c.labels is None:  # a dim kept whole: the layers it reads must keep their size too
            if layers:
                actions.append(("pin", None, layers, f"{c.where}: a size read from {_describe(terms)} "
                                                     "must not change: those layers are kept"))
            continue
        cl = comp[c.labels.clamp(min=0)]
        why = f"{c.where}: a size read from {_describe(terms)} does not follow the channels it cuts: they are kept"
        if not bool((cl == cl[:, :1]).all()):
            actions.append(("pin", c.labels, layers, why))
            continue
        const = int(c.size) - sum(coef * _value(model, k) for k, coef in terms)
        if len(terms) == 1 and terms[0][1] == 1 and const == 0 and terms[0][0][1] not in MANAGED:
            (module, attr), _ = terms[0]
            actions.append(("attr", module, attr, c.labels[:, 0]))
            continue
        lhs, rhs = [cl[:, 0]], []  # dim + negative terms == positive terms, as multisets of units
        ok = const == 0
        for (module, attr), coef in terms:
            ch = layer_sides.get((module, MANAGED.get(attr)))
            if ch is None:
                ok = False
                break
            (lhs if coef < 0 else rhs).extend([comp[ch.clamp(min=0)]] * abs(coef))
        if ok and torch.equal(torch.sort(torch.cat(lhs)).values, torch.sort(torch.cat(rhs)).values):
            continue  # the same units on both sides: the counts match after any plan
        actions.append(("pin", c.labels, layers, why))
    return actions


def _value(model: nn.Module, key: tuple) -> int:
    module, attr = key
    return int(getattr(model.get_submodule(module), attr))


def _describe(terms) -> str:
    return " and ".join(f"{m + '.' if m else ''}{a}" for (m, a), _ in terms)

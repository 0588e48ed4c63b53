"""What every criterion gets (`ScoreContext`) and the helpers they share.

A criterion maps a context to one score per prunable unit of `ctx.graph` (higher = keep). Scores of
one group are compared with each other (uniform allocation) or, normalised, across groups (global).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from torchslim.data import as_loaders
from torchslim.errors import InvalidInputError
from torchslim.graph import ChannelGraph
from torchslim.registry import Registry

# Each criterion file registers itself here (through `register_criterion`); the package imports them all.
CRITERIA: Registry = Registry("pruning criterion")


def register_criterion(name: str, *, needs_data: bool = False):
    """Register a criterion `ScoreContext -> Tensor[num_units]` under `name`; `needs_data=True` for one
    that reads images (the method table, `prune` and auto's actions read it from here)."""
    def add(fn):
        fn.needs_data = needs_data
        return CRITERIA.register(name)(fn)
    return add


def criterion_needs_data(name: str) -> bool:
    """Whether criterion `name` reads images (False for one registered without saying)."""
    return bool(getattr(CRITERIA.get(name), "needs_data", False))


@dataclass
class ScoreContext:
    """Args:
        model: the model being pruned (the one `graph` was traced from).
        graph: its ChannelGraph.
        data: a torchslim DataBundle (data-driven criteria), or None.
        ratio: the fraction of each group about to be removed (criteria that pick masks use it).
        batches: how many calibration/validation batches data-driven criteria read.
        options: criterion-specific settings, e.g. {"bins": 100} for entropy.
    """

    model: nn.Module
    graph: ChannelGraph
    data: object | None = None
    ratio: float | None = None
    batches: int = 8
    options: dict = field(default_factory=dict)
    state: dict = field(default_factory=dict)  # e.g. Taylor sums accumulated during fine-tuning

    def need_data(self, name: str):
        if self.data is None:
            raise InvalidInputError(f"criterion {name!r} needs data: pass data=get_data(...) (or --data on the CLI)")
        return self.data

    def train_batches(self):
        return _take(self.need_data("this"), "train", self.batches)

    def val_batches(self):
        return _take(self.need_data("this"), "val", self.batches)


def _take(data, split: str, n: int) -> list:
    """The first n (x, y) batches of data's train or val loader (one loader serves both)."""
    train, val = as_loaders(data)
    out = []
    for i, (x, y) in enumerate(val if split == "val" and val is not None else train):
        if i >= n:
            break
        out.append((x, y))
    return out


def per_unit(graph: ChannelGraph, values: dict[int, torch.Tensor], reduce: str = "mean") -> torch.Tensor:
    """Sum (or mean) per-index values of several uses into one score per unit.

    Args:
        values: use index -> tensor of one value per index along the use's dim.
    """
    total = torch.zeros(graph.num_units, dtype=torch.float64)
    count = torch.zeros(graph.num_units, dtype=torch.float64)
    for i, v in values.items():
        uo = graph.unit_of[i]
        ok = uo >= 0
        total.index_add_(0, uo[ok], v.detach().double().flatten()[ok].cpu())
        count.index_add_(0, uo[ok], torch.ones(int(ok.sum())).double())
    if reduce == "mean":
        total = total / count.clamp(min=1)
    return total.float()


def weight_scores(graph: ChannelGraph, fn: Callable[[torch.Tensor], torch.Tensor], kinds=("out",),
                  names=("weight",)) -> torch.Tensor:
    """Score each unit by `fn` of its weight slices (rows of out-filters by default), mean over layers."""
    values = {}
    for i, u in enumerate(graph.uses):
        if u.kind in kinds and u.name in names and u.dim >= 0:
            w = getattr(graph.model.get_submodule(u.module), u.name).detach()
            values[i] = fn(w.movedim(u.dim, 0).reshape(w.shape[u.dim], -1))
    return per_unit(graph, values)


def site_units(graph: ChannelGraph, node: str) -> torch.Tensor:
    labels = graph.trace.node_channels[node]
    return graph.unit_of_labels(labels)


def activation_sites(graph: ChannelGraph) -> list[str]:
    """Activation outputs (after ReLU etc.) whose channels are prunable; conv outputs if none."""
    kinds = graph.trace.node_kind
    for want in ("act", "out"):
        sites = [n for n, k in kinds.items() if k == want and (site_units(graph, n) >= 0).any()]
        if sites:
            return sites
    return []


class _Collect(fx.Interpreter):
    def __init__(self, gm, sites, fn):
        super().__init__(gm)
        self.sites, self.fn = set(sites), fn

    def run_node(self, n):
        v = super().run_node(n)
        if n.name in self.sites and isinstance(v, torch.Tensor):
            self.fn(n.name, v)
        return v


@torch.no_grad()
def collect_activations(ctx: ScoreContext, fn: Callable[[str, torch.Tensor, torch.Tensor], None],
                        split: str = "train", sites: list[str] | None = None) -> list[str]:
    """Run the traced graph on data batches, calling fn(site, activation, labels y) at each site."""
    g = ctx.graph
    sites = activation_sites(g) if sites is None else sites
    batches = ctx.train_batches() if split == "train" else ctx.val_batches()
    was = ctx.model.training
    ctx.model.eval()
    for x, y in batches:
        _Collect(g.trace.gm, sites, lambda n, v: fn(n, v, y)).run(x)
    ctx.model.train(was)
    return sites


def sites_to_units(ctx: ScoreContext, per_site: dict[str, torch.Tensor]) -> torch.Tensor:
    """Average per-channel values of each site into units (mean over the sites a unit appears at)."""
    g = ctx.graph
    total = torch.zeros(g.num_units, dtype=torch.float64)
    count = torch.zeros(g.num_units, dtype=torch.float64)
    for n, v in per_site.items():
        uo = site_units(g, n)
        ok = uo >= 0
        total.index_add_(0, uo[ok], v.double()[ok])
        count.index_add_(0, uo[ok], torch.ones(int(ok.sum())).double())
    return (total / count.clamp(min=1)).float()


def masked_loss(ctx: ScoreContext, batches, remove: torch.Tensor) -> float:
    """Loss with the units in `remove` cut out, simulated by zeroing their consumers' input weights.

    Zeroing every weight that reads a channel is exactly what removing it does to the rest of the
    network, without copying the model.
    """
    g = ctx.graph
    saved = []
    with torch.no_grad():
        for i, u in enumerate(g.uses):
            if u.kind != "in":
                continue
            uo = g.unit_of[i]
            hit = (uo >= 0) & remove[uo.clamp(min=0)]
            if hit.any():
                w = getattr(g.model.get_submodule(u.module), u.name)
                idx = torch.nonzero(hit).flatten()
                saved.append((w, u.dim, idx, w.index_select(u.dim, idx).clone()))
                w.index_fill_(u.dim, idx, 0.0)
        was = g.model.training
        g.model.eval()
        loss, n = 0.0, 0
        for x, y in batches:
            loss += F.cross_entropy(g.model(x), y, reduction="sum").item()
            n += len(y)
        g.model.train(was)
        for w, d, idx, old in saved:
            w.index_copy_(d, idx, old)
    return loss / max(n, 1)

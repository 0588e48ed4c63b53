"""Channel dependency groups: which channels of which layers must be removed together.

`ChannelGraph(model, example_input)` traces the model once (trace.py), merges joined labels into
*units* (connected components: one unit = one set of coupled channel slices, e.g. output channel 5
of every conv writing into a residual stage), and groups units that touch the same layers into a
`Group` (e.g. the 16 units of `layer1.0.conv1`). A pruning plan is a boolean mask over units;
`estimate(plan)` predicts MACs and parameters without touching the model, and
`torchslim.prune.surgery.apply_plan` removes the channels.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from torchslim.graph.trace import PINNED, ParamUse, TraceResult, components, trace


def _macs_key(key: str) -> tuple[str, str]:
    """macs_per_weight keys: "module" (its weight) or "module:tensor" (e.g. attention's in_proj_weight)."""
    mname, _, tname = key.partition(":")
    return mname, tname or "weight"


@dataclass
class Group:
    """Units that touch the same layers; `name` is the first layer whose filters they are."""

    index: int
    name: str
    units: torch.Tensor  # dense unit ids
    uses: list[int]  # indices into ChannelGraph.uses

    def __len__(self) -> int:
        return len(self.units)


class ChannelGraph:
    """Coupled channels of a model, traced once.

    Args:
        model: the network; it is traced in eval mode and not modified.
        example_input: a tensor the model accepts (one sample is enough), a tuple of positional inputs
            or a dict of keyword inputs.

    Example:
        >>> g = ChannelGraph(model, torch.randn(1, 3, 32, 32))
        >>> plan = g.empty_plan(); plan[g.groups[0].units[:4]] = True
        >>> apply_plan(model, g, plan)   # torchslim.prune.surgery
    """

    def __init__(self, model: nn.Module, example_input: torch.Tensor):
        self.model = model
        self.example_input = example_input
        tr: TraceResult = trace(model, example_input)
        self.trace = tr
        comp = components(tr.num_labels, tr.edges)
        self.comp = comp
        pinned = comp[PINNED]
        out_units = [comp[u.labels] for u in tr.uses if u.kind == "out"]
        units = torch.unique(torch.cat(out_units)) if out_units else torch.zeros(0, dtype=torch.long)
        units = units[units != pinned]
        self.num_units = len(units)
        dense = torch.full((tr.num_labels,), -1, dtype=torch.long)
        dense[units] = torch.arange(len(units))
        self._dense = dense
        self.uses: list[ParamUse] = tr.uses
        # unit id of each index (or element, for "free" uses); -1: never removed
        self.unit_of: list[torch.Tensor] = [dense[comp[u.labels]] for u in tr.uses]
        touching: dict[int, list[int]] = {}
        for i, uo in enumerate(self.unit_of):
            for unit in torch.unique(uo).tolist():
                if unit >= 0:
                    touching.setdefault(unit, []).append(i)
        by_sig: dict[tuple, list[int]] = {}
        for unit in range(self.num_units):
            by_sig.setdefault(tuple(touching.get(unit, ())), []).append(unit)
        self.groups: list[Group] = []
        for sig, us in sorted(by_sig.items(), key=lambda kv: kv[1][0]):
            outs = [self.uses[i].module for i in sig if self.uses[i].kind == "out"]
            self.groups.append(Group(len(self.groups), outs[0] if outs else self.uses[sig[0]].module,
                                     torch.tensor(us), list(sig)))
        self.group_of = torch.empty(self.num_units, dtype=torch.long)
        for g in self.groups:
            self.group_of[g.units] = g.index
        self._base = self.estimate(self.empty_plan())

    # -- plans ------------------------------------------------------------------------------------
    def empty_plan(self) -> torch.Tensor:
        """A boolean mask over units: True = remove."""
        return torch.zeros(self.num_units, dtype=torch.bool)

    def keep_mask(self, use_index: int, plan: torch.Tensor) -> torch.Tensor:
        """Which indices (elements, for free uses) of a use survive `plan`."""
        uo = self.unit_of[use_index]
        if plan.numel() == 0:
            return torch.ones(uo.shape, dtype=torch.bool)
        return (uo < 0) | ~plan[uo.clamp(min=0)]

    def kept_indices(self, plan: torch.Tensor) -> dict[tuple[str, str], dict[int, torch.Tensor]]:
        """(module, tensor name) -> {dim: indices kept along dim} for everything the plan touches."""
        out: dict[tuple[str, str], dict[int, torch.Tensor]] = {}
        for i, u in enumerate(self.uses):
            keep = self.keep_mask(i, plan)
            dims = out.setdefault((u.module, u.name), {})
            if u.dim >= 0:
                dims[u.dim] = torch.nonzero(keep).flatten()
                continue
            for d in range(keep.dim()):  # element-wise labelled tensor: keep a rectangle
                other = [x for x in range(keep.dim()) if x != d]
                k = keep.any(dim=other) if other else keep
                dims[d] = torch.nonzero(k).flatten()
        return out

    def estimate(self, plan: torch.Tensor) -> dict:
        """MACs (conv + linear) and parameters the model will have after `plan`."""
        kept = self.kept_indices(plan)
        params = 0
        for mname, m in self.model.named_modules():
            for pname, p in m.named_parameters(recurse=False):
                dims = kept.get((mname, pname), {})
                n = 1
                for d, s in enumerate(p.shape):
                    n *= len(dims[d]) if d in dims else s
                params += n
        macs = 0.0
        for key, per_weight in self.trace.macs_per_weight.items():
            mname, tname = _macs_key(key)
            w = getattr(self.model.get_submodule(mname), tname)
            dims = kept.get((mname, tname), {})
            n = 1
            for d, s in enumerate(w.shape):
                n *= len(dims[d]) if d in dims else s
            macs += per_weight * n
        return {"macs": int(round(macs)), "params": int(params)}

    @property
    def base(self) -> dict:
        """MACs and parameters before pruning (same counting as `estimate`)."""
        return self._base

    def describe(self) -> list[dict]:
        """One row per group: name, units, layers touched."""
        return [{"group": g.index, "name": g.name, "channels": len(g),
                 "layers": sorted({self.uses[i].module for i in g.uses})} for g in self.groups]

    def unit_macs(self) -> torch.Tensor:
        """MACs saved by removing each unit alone (for FLOPs-aware criteria)."""
        cost = torch.zeros(self.num_units)
        for i, u in enumerate(self.uses):
            key = u.module if u.name == "weight" else f"{u.module}:{u.name}"
            if key not in self.trace.macs_per_weight or u.dim < 0:
                continue
            w = getattr(self.model.get_submodule(u.module), u.name)
            per_index = self.trace.macs_per_weight[key] * w.numel() / w.shape[u.dim]
            uo = self.unit_of[i]
            cost.index_add_(0, uo[uo >= 0], torch.full(((uo >= 0).sum().item(),), float(per_index)))
        return cost

    def unit_of_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Dense unit ids of raw labels (-1 where a channel is not prunable)."""
        return self._dense[self.comp[labels]]

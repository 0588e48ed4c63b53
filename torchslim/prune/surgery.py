"""Physical channel removal: slice every parameter a plan touches and fix the layers' attributes.

The result is an ordinary dense model (smaller nn.Conv2d / nn.BatchNorm2d / nn.Linear ...), with the
same module tree, so it trains, exports and saves like the original.
"""
from __future__ import annotations

import torch
from torch import nn

from torchslim.errors import InvalidInputError, UnsupportedModelError
from torchslim.graph import ChannelGraph
from torchslim.graph.trace import SPLIT_SIZE


def _slice(t: torch.Tensor, dims: dict[int, torch.Tensor]) -> torch.Tensor:
    for d, idx in sorted(dims.items()):
        if d < t.dim() and len(idx) != t.shape[d]:
            t = t.index_select(d, idx.to(t.device))
    return t.contiguous()


def _fix_attributes(name: str, m: nn.Module, kind: str | None, tensors: dict) -> None:
    channels = tensors.get("_channels", {}).get(0)  # kept channels of a norm layer
    if isinstance(m, nn.modules.conv._ConvNd):
        # weight: (out, in/g, k...) or, transposed, (in, out/g, k...); dim 0 spans all channels
        full = m.in_channels if m.transposed else m.out_channels
        if kind == "conv_dw":  # whole groups removed: each group keeps its size
            m.groups = m.groups * m.weight.shape[0] // full
        if m.transposed:
            m.in_channels, m.out_channels = m.weight.shape[0], m.weight.shape[1] * m.groups
        else:
            m.out_channels, m.in_channels = m.weight.shape[0], m.weight.shape[1] * m.groups
    elif isinstance(m, nn.Linear):
        m.out_features, m.in_features = m.weight.shape
    elif isinstance(m, nn.MultiheadAttention):
        m.embed_dim = m.kdim = m.vdim = m.in_proj_weight.shape[1]
        m.num_heads = m.embed_dim // m.head_dim  # whole heads removed
    elif isinstance(m, nn.GroupNorm):
        if channels is not None:
            per_group = m.num_channels // m.num_groups
            m.num_channels, m.num_groups = len(channels), len(channels) // per_group
    elif isinstance(m, (nn.modules.batchnorm._NormBase,)):
        if channels is not None:
            m.num_features = len(channels)
    elif isinstance(m, nn.LayerNorm):
        m.normalized_shape = tuple(m.weight.shape)
    elif isinstance(m, nn.PReLU):
        m.num_parameters = m.weight.shape[0]


def _pad_shortcut(m: nn.Module, keep_in: torch.Tensor, keep_out: torch.Tensor) -> None:
    """Keep the surviving input channels at the surviving output positions of a ChannelPadShortcut."""
    index = m.index.tolist()
    new_pos = {old: new for new, old in enumerate(keep_out.tolist())}
    try:
        new_index = [new_pos[index[i]] for i in keep_in.tolist()]
    except KeyError:
        raise UnsupportedModelError("ChannelPadShortcut: an input channel is kept but its output position "
                                    "is removed (inconsistent plan)") from None
    fresh = type(m)(len(keep_in), len(keep_out), m.stride, index=new_index)
    m.in_channels, m.out_channels = fresh.in_channels, fresh.out_channels
    m.index = fresh.index.to(m.index.device)
    m._pad = fresh._pad


def apply_plan(model: nn.Module, graph: ChannelGraph, plan: torch.Tensor) -> nn.Module:
    """Remove the units marked True in `plan` from `model` (in place) and return it.

    Args:
        model: the model `graph` was built from.
        graph: its `ChannelGraph`.
        plan: bool tensor over `graph.num_units` (True = remove). Each group keeps at least one unit.

    Example:
        >>> g = ChannelGraph(model, x); plan = g.empty_plan(); plan[g.groups[1].units[:8]] = True
        >>> apply_plan(model, g, plan)
    """
    if plan.shape != (graph.num_units,) or plan.dtype != torch.bool:
        raise InvalidInputError(f"plan must be a bool tensor of shape ({graph.num_units},), got "
                                f"{plan.dtype} {tuple(plan.shape)}")
    for g in graph.groups:
        if bool(plan[g.units].all()):
            raise InvalidInputError(f"the plan removes every channel of group {g.index} ({g.name}); keep at least one")
    if graph.model is not model:
        raise InvalidInputError("apply_plan: the graph was built from another model object")
    kept = graph.kept_indices(plan)
    by_module: dict[str, dict[str, dict[int, torch.Tensor]]] = {}
    for (mname, tname), dims in kept.items():
        by_module.setdefault(mname, {})[tname] = dims
    kinds = graph.trace.module_kind
    with torch.no_grad():
        for mname, tensors in by_module.items():
            m = model.get_submodule(mname)
            if kinds.get(mname) == "pad_shortcut":
                _pad_shortcut(m, tensors["_in"][0], tensors["_out"][0])
                continue
            for tname, dims in tensors.items():
                if tname.startswith(SPLIT_SIZE):  # a part of a list of channel counts: its new count
                    attr, part = tname[len(SPLIT_SIZE):].rsplit(".", 1)
                    sizes = list(getattr(m, attr))
                    sizes[int(part)] = len(dims[0])
                    setattr(m, attr, type(getattr(m, attr))(sizes))
                elif tname in m._parameters:
                    old = m._parameters[tname]
                    m._parameters[tname] = nn.Parameter(_slice(old.data, dims), requires_grad=old.requires_grad)
                elif tname in m._buffers:
                    m._buffers[tname] = _slice(m._buffers[tname], dims)
                elif tname.startswith("_int:"):  # a size the model reads from its own attribute
                    setattr(m, tname[len("_int:"):], len(dims[0]))
            _fix_attributes(mname, m, kinds.get(mname), tensors)
    return model

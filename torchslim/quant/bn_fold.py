"""Fold BatchNorm into the preceding convolution / linear layer (Jacob et al. 2018, sec. 3.2):
W' = W * gamma / sqrt(var + eps) per output channel, b' = (b - mean) * gamma / sqrt(var + eps) + beta.

The conv -> bn pairs are found on the FX graph (a BN whose only input is a conv used nowhere else);
the BN is replaced by nn.Identity, so the module tree (and torchslim.io files) keep their names.
"""
from __future__ import annotations

import copy

import torch.fx
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from torchslim.errors import UnsupportedModelError
from torchslim.module_swap import replace_modules


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """[(conv fqn, bn fqn)] of every foldable pair, in graph order."""
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception as e:  # data-dependent control flow
        raise UnsupportedModelError(f"{type(model).__name__} cannot be traced to find conv->BN pairs: {e}") from None
    mods = dict(model.named_modules())
    pairs = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(mods.get(node.target), nn.modules.batchnorm._BatchNorm):
            continue
        src = node.args[0]
        if (isinstance(src, torch.fx.Node) and src.op == "call_module" and len(src.users) == 1
                and isinstance(mods.get(src.target), (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))):
            pairs.append((src.target, node.target))
    return pairs


def fold_bn(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Return `model` (eval mode) with every BN that follows a conv/linear folded into it.

    Example:
        >>> folded = fold_bn(create_model("resnet20", pretrained=True))
    """
    model = model if inplace else copy.deepcopy(model)
    model.eval()
    folded = {}
    for conv_name, bn_name in conv_bn_pairs(model):
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        fuse = fuse_linear_bn_eval if isinstance(conv, nn.Linear) else fuse_conv_bn_eval
        fused = fuse(conv, bn)
        conv.weight, conv.bias = fused.weight, fused.bias
        folded[bn_name] = nn.Identity()
    return replace_modules(model, folded)

"""Least-squares reconstruction after channel pruning (He et al. 2017, "Channel Pruning for
Accelerating Very Deep Neural Networks", Sec. 3.1 step 2; Luo et al. 2017, ThiNet, Sec. 3.3).

A layer that lost input channels no longer produces the outputs the next layers were trained on.
Its remaining weights are refitted so that, on sampled images, its outputs on the *pruned* network's
inputs match the *original* network's outputs of the kept filters:

    W' = argmin_W || Y_orig[:, kept_out] - unfold(X_pruned) W^T ||^2 + lambda ||W||^2

(He et al.'s eq. 1 with the selection fixed; feeding the pruned network's inputs corrects the error
accumulated below the layer, as in their "error compensation" and Zhang et al.'s asymmetric fit).
Layers are refitted in forward order, each on the inputs its refitted predecessors produce.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# 3x3 convs of a CIFAR ResNet have at most 64*9 = 576 unknowns per filter: a few thousand sampled
# output positions determine them; more only costs time.
POSITIONS_PER_LAYER = 8192


def _patches(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Layer inputs as rows of a GEMM: (N*L, C*kh*kw) for a conv, (N*..., C) for a linear layer."""
    if isinstance(layer, nn.Linear):
        return x.reshape(-1, x.shape[-1])
    cols = F.unfold(x, layer.kernel_size, dilation=layer.dilation, padding=layer.padding, stride=layer.stride)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def _responses(layer: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """Layer outputs as rows matching `_patches`: (N*L, C_out)."""
    if isinstance(layer, nn.Linear):
        return y.reshape(-1, y.shape[-1])
    return y.flatten(2).transpose(1, 2).reshape(-1, y.shape[1])


def _refittable(layer: nn.Module) -> bool:
    if isinstance(layer, nn.Linear):
        return True
    return isinstance(layer, nn.Conv2d) and layer.groups == 1 and isinstance(layer.padding, tuple) \
        and layer.padding_mode == "zeros"


def _capture(model: nn.Module, names: list[str], batches, keep: str, forward=None) -> dict[str, list]:
    """Each named layer's inputs (`keep`="in") or outputs ("out") over `batches`, in eval mode."""
    seen: dict[str, list] = {n: [] for n in names}
    hooks = []
    for n in names:
        m = model.get_submodule(n)
        if keep == "in":
            hooks.append(m.register_forward_hook(lambda mod, i, o, n=n: seen[n].append(i[0].detach())))
        else:
            hooks.append(m.register_forward_hook(lambda mod, i, o, n=n: seen[n].append(o.detach())))
    try:
        with torch.no_grad():
            for x in batches:
                (forward or model)(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


def reconstruct(original: nn.Module, pruned: nn.Module, kept: dict, batches, *,
                ridge: float = 1e-5, positions: int = POSITIONS_PER_LAYER, seed: int = 0) -> list[dict]:
    """Refit, in place, every conv / linear layer of `pruned` that lost input channels.

    Args:
        original: the network before this pruning step (not modified).
        pruned: the same network after `apply_plan` (same module names).
        kept: `ChannelGraph.kept_indices(plan)` of that step: (module, "weight") -> {dim: kept indices}.
        batches: input batches (a few hundred training images are enough).
        ridge: Tikhonov weight, relative to the mean diagonal of the normal equations.
        positions: output positions sampled per layer.

    Returns one row per refitted layer: its relative output error before and after, on the samples.
    """
    names = [n for (n, t), dims in kept.items()
             if t == "weight" and 1 in dims and _refittable(pruned.get_submodule(n))
             and len(dims[1]) < original.get_submodule(n).weight.shape[1]]
    order = [n for n, _ in pruned.named_modules() if n in set(names)]
    if not order:
        return []
    was_training = (original.training, pruned.training)
    original.eval(), pruned.eval()
    g = torch.Generator().manual_seed(seed)
    targets = _capture(original, order, batches, "out")
    rows = []
    for name in order:
        layer = pruned.get_submodule(name)
        inputs = _capture(pruned, [name], batches, "in")[name]  # after its predecessors were refitted
        X = torch.cat([_patches(layer, x) for x in inputs])
        out_idx = kept[(name, "weight")].get(0)
        Y = torch.cat([_responses(layer, y) for y in targets[name]])
        if out_idx is not None and len(out_idx) < Y.shape[1]:
            Y = Y[:, out_idx]
        pick = torch.randperm(len(X), generator=g)[:positions]
        X, Y = X[pick].double(), Y[pick].double()
        has_bias = layer.bias is not None
        A = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], 1) if has_bias else X
        w_old = layer.weight.detach().reshape(layer.weight.shape[0], -1).double()
        b_old = layer.bias.detach().double() if has_bias else None
        before = _rel(A @ (torch.cat([w_old, b_old[:, None]], 1) if has_bias else w_old).T, Y)
        gram = A.T @ A
        lam = ridge * gram.diagonal().mean().clamp_min(1e-12)
        sol = torch.linalg.solve(gram + lam * torch.eye(len(gram), dtype=gram.dtype), A.T @ Y).T
        after = _rel(A @ sol.T, Y)
        if after < before:  # never make a layer worse on the samples
            with torch.no_grad():
                layer.weight.copy_(sol[:, : w_old.shape[1]].reshape(layer.weight.shape).to(layer.weight.dtype))
                if has_bias:
                    layer.bias.copy_(sol[:, -1].to(layer.bias.dtype))
        rows.append({"layer": name, "error_before": round(before, 4), "error_after": round(min(after, before), 4)})
    original.train(was_training[0]), pruned.train(was_training[1])
    return rows


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))

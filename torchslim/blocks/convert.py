"""Turn the D x D convolutions of a trained model into depthwise-separable (or grouped-separable) blocks.

Three steps:
1. Replace: each selected `Conv2d(M, N, D)` becomes `DepthwiseSeparableConv(M, N, D, groups=g)`, a
   linear factorisation (no BN/ReLU inside) of the same map: spatial conv per group, then 1x1.
2. Initialise from the weights: per group, the best rank-(M/g) approximation of the N x (M/g * D^2)
   weight matrix (truncated SVD, Eckart-Young) gives the pointwise (U S) and spatial (V^T) weights;
   for depthwise (g = M) that is a rank-1 fit per input channel.
3. Reconstruct layer by layer on sampled inputs: each new block is trained (Adam, MSE) to reproduce
   the original conv's output from the input it receives in the *converted* model, so errors of
   earlier layers are compensated as they accumulate (as in channel-pruning reconstruction,
   He et al. 2017). End-to-end distillation from the original (`torchslim.distill`) follows.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from torchslim.blocks.depthwise import DepthwiseSeparableConv
from torchslim.data import as_batches
from torchslim.errors import InvalidInputError
from torchslim.module_swap import replace_modules


@dataclass
class ConvertConfig:
    """Settings of `to_separable`.

    Args:
        groups: groups of the spatial conv; None = depthwise (groups = in_channels). An int g must
            divide every converted layer's input channels.
        group_channels: instead of `groups`, input channels per group (groups = in_channels / this).
        min_in_channels: leave convs with fewer input channels alone (the RGB stem gains nothing).
        filter_fn: `(module, name) -> bool` to choose layers yourself (overrides the defaults).
        svd_init: initialise from the truncated SVD of the original weights (else random).
        calib_images / steps / batch_size / lr: layer-wise reconstruction budget (steps per layer;
            steps = 0 skips reconstruction).
    """

    groups: int | None = None
    group_channels: int | None = None
    min_in_channels: int = 8
    filter_fn: Callable[[nn.Module, str], bool] | None = None
    svd_init: bool = True
    calib_images: int = 512
    steps: int = 200
    batch_size: int = 64
    lr: float = 1e-3


def _selected(conv: nn.Module, name: str, cfg: ConvertConfig) -> bool:
    if not isinstance(conv, nn.Conv2d) or type(conv) is not nn.Conv2d:
        return False
    if cfg.filter_fn is not None:
        return cfg.filter_fn(conv, name)
    return (conv.groups == 1 and max(conv.kernel_size) > 1 and conv.in_channels >= cfg.min_in_channels
            and conv.dilation == (1, 1))


def separable_from_conv(conv: nn.Conv2d, groups: int | None = None, svd_init: bool = True,
                        name: str = "conv") -> DepthwiseSeparableConv:
    """A `DepthwiseSeparableConv` approximating `conv`, initialised by per-group truncated SVD."""
    k = conv.kernel_size
    if k[0] != k[1] or conv.padding[0] != conv.padding[1] or conv.stride[0] != conv.stride[1] \
            or conv.groups != 1 or conv.padding_mode != "zeros" or conv.dilation != (1, 1):
        raise InvalidInputError(f"layer {name!r} ({conv}): only square, undilated, ungrouped, zero-padded convs "
                                "with equal strides convert to depthwise-separable blocks")
    M, N, D = conv.in_channels, conv.out_channels, k[0]
    g = M if groups is None else groups
    if M % g:
        raise InvalidInputError(f"layer {name!r}: groups={g} does not divide its {M} input channels")
    block = DepthwiseSeparableConv(M, N, D, conv.stride[0], conv.padding[0], groups=g, mid_norm=False,
                                   mid_act=False, out_norm=False, out_act=False, bias=conv.bias is not None)
    block.to(conv.weight.device)
    if svd_init:
        r = M // g
        W = conv.weight.detach().double()
        P = torch.zeros(N, M, dtype=torch.float64)
        Dw = torch.zeros(M, r, D, D, dtype=torch.float64)
        for gi in range(g):
            sl = slice(gi * r, (gi + 1) * r)
            U, S, Vh = torch.linalg.svd(W[:, sl].reshape(N, r * D * D).cpu(), full_matrices=False)
            q = min(r, S.numel())
            # split the singular values evenly so neither factor is badly scaled
            P[:, gi * r: gi * r + q] = U[:, :q] * S[:q].sqrt()
            Dw[gi * r: gi * r + q] = (S[:q].sqrt()[:, None] * Vh[:q]).reshape(q, r, D, D)
        with torch.no_grad():
            block.depthwise.weight.copy_(Dw.float())
            block.pointwise.weight.copy_(P.float()[:, :, None, None])
            if conv.bias is not None:
                block.pointwise.bias.copy_(conv.bias.detach())
    return block


class _Stop(Exception):
    pass


def _collect(model: nn.Module, module: nn.Module, batches, want: str) -> torch.Tensor:
    """The input (want="in") or output ("out") of `module` for every batch, stopping each pass there."""
    seen: list[torch.Tensor] = []

    def pre(_m, args):
        seen.append(args[0].detach())
        raise _Stop

    def post(_m, _a, out):
        seen.append(out.detach())
        raise _Stop

    h = module.register_forward_pre_hook(pre) if want == "in" else module.register_forward_hook(post)
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            for x in batches:
                try:
                    model(x.to(device))
                except _Stop:
                    pass
    finally:
        h.remove()
    return torch.cat(seen)


def reconstruct(block: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, steps: int = 200,
                batch_size: int = 64, lr: float = 1e-3, seed: int = 0) -> tuple[float, float]:
    """Train `block` so that block(inputs) ~ targets (MSE); returns the relative error before and after."""
    g = torch.Generator().manual_seed(seed)
    params = [p for p in block.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    block.train()

    def rel_err() -> float:
        with torch.no_grad():
            n = min(len(inputs), 256)
            out = block(inputs[:n])
            return float((out - targets[:n]).pow(2).sum() / targets[:n].pow(2).sum().clamp_min(1e-12))

    before = rel_err()
    for step in range(steps):
        idx = torch.randint(0, len(inputs), (min(batch_size, len(inputs)),), generator=g)
        loss = F.mse_loss(block(inputs[idx]), targets[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for grp in opt.param_groups:  # cosine decay to 0 over the layer's steps
            grp["lr"] = lr * 0.5 * (1 + torch.cos(torch.tensor((step + 1) / steps * torch.pi)).item())
    block.eval()
    return before, rel_err()


def to_separable(model: nn.Module, data=None, config: ConvertConfig | None = None) -> tuple[nn.Module, list[dict]]:
    """A copy of `model` with its D x D convs replaced by separable blocks, reconstructed layer by layer.

    Args:
        model: the trained model (left unchanged).
        data: input batches for reconstruction: a `DataBundle` (its `calibration_batches`), a DataLoader
            or a list of tensors; None skips reconstruction (SVD initialisation only).
        config: `ConvertConfig`.

    Returns:
        (converted model, one report row per converted layer: name, shapes, relative output error
        after SVD init and after reconstruction).

    Example:
        >>> small, rows = to_separable(create_model("resnet20", pretrained=True), get_data("cifar10"))
        >>> torchslim.distill(small, teacher, data, method="kd")  # end-to-end recovery
    """
    cfg = config or ConvertConfig()
    original = model.eval()
    converted = copy.deepcopy(model).eval()
    names = [n for n, m in original.named_modules() if n and _selected(m, n, cfg)]
    if not names:
        raise InvalidInputError(f"{type(model).__name__} has no conv to convert (kernel > 1, groups = 1, "
                                f">= {cfg.min_in_channels} input channels); adjust ConvertConfig")
    swaps = {}
    for n in names:
        conv = original.get_submodule(n)
        groups = conv.in_channels // cfg.group_channels if cfg.group_channels else cfg.groups
        swaps[n] = separable_from_conv(conv, groups, cfg.svd_init, n)
    replace_modules(converted, swaps)
    batches = as_batches(data, cfg.calib_images) if data is not None else []
    rows = []
    for n in names:
        conv, block = original.get_submodule(n), converted.get_submodule(n)
        row = {"layer": n, "in": conv.in_channels, "out": conv.out_channels, "kernel": conv.kernel_size[0],
               "groups": block.groups}
        if batches:
            targets = _collect(original, conv, batches, "out")
            inputs = _collect(converted, block, batches, "in")
            row["rel_err_init"], row["rel_err_reconstructed"] = reconstruct(
                block, inputs, targets, cfg.steps, cfg.batch_size, cfg.lr) if cfg.steps else (None, None)
            if not cfg.steps:
                with torch.no_grad():
                    out = block(inputs)
                    row["rel_err_init"] = float((out - targets).pow(2).sum() / targets.pow(2).sum())
        rows.append(row)
    arch = getattr(model, "_torchslim_arch", None)
    if arch is not None:
        object.__setattr__(converted, "_torchslim_arch", copy.deepcopy(arch))
    return converted.eval(), rows



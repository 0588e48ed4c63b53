"""Block-term decomposition of a conv: a sum of L Tucker-2 blocks (De Lathauwer 2008), realised as
grouped convolutions (Wang & Cheng et al., "Accelerating CNNs via block term decomposition", 2017).

K ~ sum_{l=1..L} C_l x_0 U^(4)_l x_1 U^(3)_l: a 1x1 conv S -> L*R3 (the U^(3)_l stacked), a D x D conv
L*R3 -> L*R4 with groups=L (one core per block, original stride/padding/dilation), and a 1x1 conv
L*R4 -> T (the U^(4)_l side by side, original bias). Fitted by block coordinate descent: each block
is the Tucker-2 (HOSVD + HOOI) of the residual left by the others, `BTD_SWEEPS` sweeps.
`rank` gives each block's (R3, R4); "vbmf" / a float split the Tucker ranks of the whole kernel
evenly over the L = `options["btd_blocks"]` (default 2) blocks.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from torchslim.lowrank.core import Analysis, Method, register_method
from torchslim.lowrank.linalg import left_singular, unfold
from torchslim.lowrank.tucker import tucker2, tucker2_to_tensor

BTD_BLOCKS = 2
BTD_SWEEPS = 5


def btd(W: torch.Tensor, L: int, R3: int, R4: int, sweeps: int = BTD_SWEEPS) -> list[tuple]:
    """[(core, U3, U4)] * L with W ~ sum of tucker2_to_tensor(block) (float64)."""
    W = W.double()
    blocks = [None] * L
    parts = [torch.zeros_like(W) for _ in range(L)]
    for _ in range(sweeps):
        for l in range(L):
            residual = W - sum(p for j, p in enumerate(parts) if j != l)
            blocks[l] = tucker2(residual, R3, R4, n_iter=1)
            parts[l] = tucker2_to_tensor(*blocks[l])
    return blocks


@register_method("btd")
class BlockTerm(Method):
    """Conv2d -> 1x1 (S->L*R3), grouped DxD (L blocks), 1x1 (L*R4->T)."""

    paper = "De Lathauwer 2008; Wang et al. 2017 (BTD for CNNs)"

    def skip_reason(self, layer):
        if layer.groups > 1:
            return f"grouped conv (groups={layer.groups}) is already factorised"
        if layer.kernel_size == (1, 1):
            return "1x1 conv: block terms reduce to an SVD (use svd)"
        return None

    def analyze(self, layer, need_spectra, ctx=None):
        L = ctx.options.get("btd_blocks", BTD_BLOCKS) if ctx else BTD_BLOCKS
        W = layer.weight.detach().double()
        T, S, kh, kw = W.shape
        full = (min(S, T * kh * kw), min(T, S * kh * kw))
        spectra = []
        if need_spectra:
            spectra = [(left_singular(unfold(W, 1))[1][: full[0]], (S, T * kh * kw)),
                       (left_singular(unfold(W, 0))[1][: full[1]], (T, S * kh * kw))]
        else:
            spectra = [(torch.ones(full[0]), (S, T * kh * kw)), (torch.ones(full[1]), (T, S * kh * kw))]
        return Analysis(spectra, full, {"L": L})

    def adjust_ranks(self, layer, rank, ranks, analysis):
        if isinstance(rank, float) and rank >= 1.0:
            return analysis.full  # full rank: the first block alone reproduces the kernel
        if isinstance(rank, (str, float)):  # whole-kernel Tucker ranks shared by the L blocks
            L = analysis.cache["L"]
            return tuple(max(1, math.ceil(r / L)) for r in ranks)
        return ranks

    def cost(self, layer, ranks, L=None):
        L = L or BTD_BLOCKS
        R3, R4 = ranks
        T, S, kh, kw = layer.weight.shape
        bias = 0 if layer.bias is None else T
        return S * L * R3 + kh * kw * L * R3 * R4 + L * R4 * T + bias, S * L * R3, kh * kw * L * R3 * R4 + L * R4 * T

    def resolve(self, layer, rank, analysis, budget):
        from torchslim.lowrank.ranks import resolve_ranks

        L = analysis.cache["L"]
        ranks = resolve_ranks(rank, analysis.spectra, analysis.full, lambda r: budget.fits(self.cost(layer, r, L)))
        return self.adjust_ranks(layer, rank, ranks, analysis)

    def factorize(self, layer, ranks, analysis, ctx):
        L = analysis.cache["L"]
        R3, R4 = ranks
        blocks = btd(layer.weight.detach(), L, R3, R4, ctx.options.get("btd_sweeps", BTD_SWEEPS))
        dtype = layer.weight.dtype
        first = nn.Conv2d(layer.in_channels, L * R3, 1, bias=False)
        mid = nn.Conv2d(L * R3, L * R4, layer.kernel_size, stride=layer.stride, padding=layer.padding,
                        dilation=layer.dilation, groups=L, bias=False, padding_mode=layer.padding_mode)
        last = nn.Conv2d(L * R4, layer.out_channels, 1, bias=layer.bias is not None)
        first.weight.data.copy_(torch.cat([U3.T for _, U3, _ in blocks]).to(dtype)[:, :, None, None])
        mid.weight.data.copy_(torch.cat([core for core, _, _ in blocks]).to(dtype))
        last.weight.data.copy_(torch.cat([U4 for _, _, U4 in blocks], 1).to(dtype)[:, :, None, None])
        if layer.bias is not None:
            last.bias.data.copy_(layer.bias.detach())
        w_hat = sum(tucker2_to_tensor(*b) for b in blocks)
        return nn.Sequential(first, mid, last), w_hat.to(dtype)

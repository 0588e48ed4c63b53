"""Tucker-2 decomposition of a conv kernel (Kim et al., ICLR 2016, Sec. 3, Eq. 5).

K (T x S x D x D) ~ sum_{r3, r4} C'(r4, r3, i, j) U^(3)(s, r3) U^(4)(t, r4): a 1x1 conv S -> R3
(U^(3)), a D x D conv R3 -> R4 with the original stride, padding and dilation (the core C'), and a
1x1 conv R4 -> T (U^(4)) carrying the original bias. Modes 1 and 2 (spatial) are not decomposed.
Layers with few input channels (the first layer, S <= `FIRST_LAYER_MAX_IN`) decompose only the output
mode, as Kim et al. do. 1x1 convs are a matrix: they go to the truncated SVD.

Factors: HOSVD (the leading eigenvectors of each mode unfolding's Gram matrix, the same spectra VBMF
reads), refined by `n_iter` HOOI sweeps (De Lathauwer et al. 2000). TensorLy's `partial_tucker` does
the same with a full SVD per sweep and up to 100 sweeps; see benchmarks/bench_lowrank.py for the
time and error side by side.
"""
from __future__ import annotations

import torch
from torch import nn

from torchslim.lowrank.core import METHODS, Analysis, Method, register_method
from torchslim.lowrank.linalg import left_singular, unfold

FIRST_LAYER_MAX_IN = 4
HOOI_ITERS = 2


def tucker2(W: torch.Tensor, R3: int | None, R4: int, n_iter: int = HOOI_ITERS, cache: dict | None = None):
    """Partial Tucker of W (T, S, kh, kw) on modes 0 (rank R4) and 1 (rank R3; None: not decomposed).

    Returns (core, U3, U4): core (R4, R3 or S, kh, kw), U3 (S, R3) or None, U4 (T, R4); float64.
    """
    W = W.double()
    cache = cache or {}
    U4 = (cache.get("U4") if "U4" in cache else left_singular(unfold(W, 0))[0])[:, :R4]
    U3 = None if R3 is None else (cache.get("U3") if "U3" in cache else left_singular(unfold(W, 1))[0])[:, :R3]
    if U3 is not None:
        for _ in range(n_iter):  # HOOI: each factor from W projected on the other
            U3 = left_singular(unfold(torch.einsum("tsij,tr->rsij", W, U4), 1))[0][:, :R3]
            U4 = left_singular(unfold(torch.einsum("tsij,sq->tqij", W, U3), 0))[0][:, :R4]
        core = torch.einsum("tsij,tr,sq->rqij", W, U4, U3)
    else:
        core = torch.einsum("tsij,tr->rsij", W, U4)
    return core, U3, U4


def tucker2_to_tensor(core, U3, U4) -> torch.Tensor:
    if U3 is None:
        return torch.einsum("rsij,tr->tsij", core, U4)
    return torch.einsum("rqij,tr,sq->tsij", core, U4, U3)


@register_method("tucker")
class Tucker2(Method):
    """Conv2d -> 1x1 (S->R3), DxD (R3->R4), 1x1 (R4->T). Ranks are given as (R3, R4)."""

    paper = "Kim et al. 2016 (ICLR), Eq. 5"
    n_iter = HOOI_ITERS

    def skip_reason(self, layer):
        if layer.groups > 1:
            return f"grouped conv (groups={layer.groups}) is already factorised"
        return None

    def _is_1x1(self, layer):
        return layer.kernel_size == (1, 1)

    def _output_only(self, layer):
        return layer.in_channels <= FIRST_LAYER_MAX_IN

    def analyze(self, layer, need_spectra, ctx=None):
        if self._is_1x1(layer):  # a matrix: both modes are the same SVD
            a = METHODS.get("svd").analyze(layer, need_spectra)
            return Analysis(a.spectra * 2, a.full * 2, a.cache)
        W = layer.weight.detach().double()
        T, S, kh, kw = W.shape
        full = (min(S, T * kh * kw), min(T, S * kh * kw))
        U3, s3 = left_singular(unfold(W, 1))
        U4, s4 = left_singular(unfold(W, 0))
        return Analysis([(s3[: full[0]], (S, T * kh * kw)), (s4[: full[1]], (T, S * kh * kw))], full,
                        {"U3": U3, "U4": U4})

    def adjust_ranks(self, layer, rank, ranks, analysis):
        if self._is_1x1(layer):
            return ranks[-1:]
        if not self._is_1x1(layer) and self._output_only(layer):
            return (layer.in_channels, ranks[-1])  # R3 = S: the input mode is kept whole
        return ranks

    def cost(self, layer, ranks):
        if self._is_1x1(layer):
            return METHODS.get("svd").cost(layer, ranks[-1:])
        T, S, kh, kw = layer.weight.shape
        R3, R4 = ranks
        if self._output_only(layer):
            R3 = S
        bias = 0 if layer.bias is None else T
        first = 0 if self._output_only(layer) else S * R3
        return first + kh * kw * R3 * R4 + R4 * T + bias, first, kh * kw * R3 * R4 + R4 * T

    def factorize(self, layer, ranks, analysis, ctx):
        if self._is_1x1(layer):
            return METHODS.get("svd").factorize(layer, ranks[-1:], analysis, ctx)
        R3, R4 = ranks
        out_only = self._output_only(layer)
        core, U3, U4 = tucker2(layer.weight.detach(), None if out_only else R3, R4,
                               n_iter=ctx.options.get("n_iter", self.n_iter), cache=analysis.cache)
        dtype = layer.weight.dtype
        mods = []
        if not out_only:
            first = nn.Conv2d(layer.in_channels, R3, 1, bias=False)
            first.weight.data.copy_(U3.T.to(dtype)[:, :, None, None])
            mods.append(first)
        mid = nn.Conv2d(core.shape[1], R4, layer.kernel_size, stride=layer.stride, padding=layer.padding,
                        dilation=layer.dilation, bias=False, padding_mode=layer.padding_mode)
        mid.weight.data.copy_(core.to(dtype))
        last = nn.Conv2d(R4, layer.out_channels, 1, bias=layer.bias is not None)
        last.weight.data.copy_(U4.to(dtype)[:, :, None, None])
        if layer.bias is not None:
            last.bias.data.copy_(layer.bias.detach())
        mods += [mid, last]
        return nn.Sequential(*mods), tucker2_to_tensor(core, U3, U4).to(dtype)


@register_method("tucker1")
class Tucker1(Tucker2):
    """Output mode only for every conv: DxD (S->R4), 1x1 (R4->T). The weight-reconstruction twin of
    `channel` (Zhang et al. 2015), at identical MACs for the same rank R4."""

    paper = "Kim et al. 2016 (first-layer variant); Zhang et al. 2015 (the weight-based baseline)"

    def _output_only(self, layer):
        return True

"""Separable low-rank expansion (Jaderberg, Vedaldi, Zisserman, BMVC 2014, scheme 2, Sec. 3.2).

W(t, s, j, i) ~ sum_k H(t, k, i) V(k, s, j): a D x 1 conv S -> K (vertical filters V) then a 1 x D
conv K -> T (horizontal filters H). Jaderberg et al. fit the filters by optimisation; the closed
form used here (and by Zhang et al. 2015 as initialisation) is the rank-K truncated SVD of the
kernel reshaped to an (S D) x (T D) matrix, which minimises the weight reconstruction error.
"""
from __future__ import annotations

import torch
from torch import nn

from torchslim.lowrank.core import Analysis, Method, register_method


def _reshaped(W: torch.Tensor) -> torch.Tensor:
    T, S, kh, kw = W.shape  # rows (s, j), columns (t, i)
    return W.double().permute(1, 2, 0, 3).reshape(S * kh, T * kw)


@register_method("separable")
class SeparableExpansion(Method):
    """Conv2d (DxD) -> Dx1 (S->K) and 1xD (K->T)."""

    paper = "Jaderberg et al. 2014 (BMVC), scheme 2"

    def skip_reason(self, layer):
        if layer.groups > 1:
            return f"grouped conv (groups={layer.groups}) is already factorised"
        if min(layer.kernel_size) == 1:
            return f"kernel {layer.kernel_size} is already separable"
        return None

    def analyze(self, layer, need_spectra, ctx=None):
        M = _reshaped(layer.weight.detach())
        U, s, Vh = torch.linalg.svd(M, full_matrices=False)
        return Analysis([(s, tuple(M.shape))], (min(M.shape),), {"svd": (U, s, Vh)})

    def cost(self, layer, ranks):
        (K,) = ranks
        T, S, kh, kw = layer.weight.shape
        bias = 0 if layer.bias is None else T
        return S * kh * K + K * kw * T + bias, 0, S * kh * K * layer.stride[1] + K * kw * T

    def factorize(self, layer, ranks, analysis, ctx):
        (K,) = ranks
        T, S, kh, kw = layer.weight.shape
        U, s, Vh = analysis.cache["svd"]
        root = s[:K].sqrt()
        V = (U[:, :K] * root).T.reshape(K, S, kh)  # vertical filters
        H = (root[:, None] * Vh[:K]).reshape(K, T, kw)  # horizontal filters
        dtype = layer.weight.dtype
        pad = layer.padding if isinstance(layer.padding, str) else None
        ph, pw = (0, 0) if pad else layer.padding
        vert = nn.Conv2d(S, K, (kh, 1), stride=(layer.stride[0], 1), padding=pad or (ph, 0),
                         dilation=(layer.dilation[0], 1), bias=False, padding_mode=layer.padding_mode)
        horiz = nn.Conv2d(K, T, (1, kw), stride=(1, layer.stride[1]), padding=pad or (0, pw),
                          dilation=(1, layer.dilation[1]), bias=layer.bias is not None, padding_mode=layer.padding_mode)
        vert.weight.data.copy_(V.to(dtype)[..., None])
        horiz.weight.data.copy_(H.permute(1, 0, 2).to(dtype)[:, :, None, :])
        if layer.bias is not None:
            horiz.bias.data.copy_(layer.bias.detach())
        w_hat = torch.einsum("kti,ksj->tsji", H, V)
        return nn.Sequential(vert, horiz), w_hat.to(dtype)

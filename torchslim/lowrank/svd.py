"""Truncated SVD of a fully connected layer (or a 1x1 conv) into two thinner ones.

W (T x S) ~ U_R Sigma_R V_R^T (Eckart-Young); the layer x -> W x + b becomes
x -> (Sigma_R^1/2 V_R^T) x -> (U_R Sigma_R^1/2) . + b, as in Girshick's Fast R-CNN (2015, Sec. 3.1)
and Denton et al. 2014 (Sec. 3.2). Parameters S T -> R (S + T). Ranks chosen from the spectrum
(VBMF, energy) read it off the Gram matrix of the smaller side, whose leading eigenvectors then give
the factors; large matrices with an explicit rank use a randomized SVD (Halko, Martinsson, Tropp
2011) via torch.svd_lowrank.
"""
from __future__ import annotations

import torch
from torch import nn

from torchslim.lowrank.core import Analysis, Method, register_method
from torchslim.lowrank.linalg import gram, singular_values, top_eigenvectors

RANDOMIZED_MIN_DIM = 1024  # matrices at least this large in both dims, explicit rank < min/4


def _matrix(layer: nn.Module) -> torch.Tensor:
    w = layer.weight.detach()
    return w.reshape(w.shape[0], -1)


def svd_factors(W: torch.Tensor, R: int, analysis: Analysis | None = None):
    """(A, B) with W ~ A @ B, A = U_R Sigma_R^1/2 (T x R), B = Sigma_R^1/2 V_R^T (R x S)."""
    T, S = W.shape
    if analysis is not None and "svd" in analysis.cache:
        U, s, Vh = analysis.cache["svd"]
    elif analysis is not None and "gram" in analysis.cache:  # from the spectrum's Gram: W ~ V_R V_R^T W
        G, transposed = analysis.cache["gram"]
        V, lam = top_eigenvectors(G, R)  # in G's precision: float32 for large matrices, as the Gram
        root = lam.clamp_min(float(lam[0]) * 1e-12).sqrt().sqrt()  # sigma^1/2; the split cancels in A @ B
        W = W.to(G.dtype)
        if transposed:  # V: right singular vectors
            return (W @ V) / root, root[:, None] * V.T
        return V * root, (V.T @ W) / root[:, None]
    elif min(T, S) >= RANDOMIZED_MIN_DIM and R < min(T, S) // 4:
        U, s, V = torch.svd_lowrank(W.double(), q=min(R + 10, min(T, S)), niter=4)
        Vh = V.T
    else:
        U, s, Vh = torch.linalg.svd(W.double(), full_matrices=False)
    root = s[:R].sqrt()
    return U[:, :R] * root, root[:, None] * Vh[:R]


@register_method("svd")
class TruncatedSVD(Method):
    """Linear (or 1x1 conv) -> two linears (1x1 convs) of rank R."""

    paper = "Girshick 2015 (Fast R-CNN, Sec. 3.1); Denton et al. 2014"
    layer_types = (nn.Linear, nn.Conv2d)

    def skip_reason(self, layer):
        if isinstance(layer, nn.Conv2d):
            if layer.groups > 1:
                return f"grouped conv (groups={layer.groups}) is already factorised"
            if layer.kernel_size != (1, 1):
                return f"svd factorises linears and 1x1 convs; this kernel is {layer.kernel_size} (use tucker)"
        return None

    def analyze(self, layer, need_spectra, ctx=None):
        W = _matrix(layer)
        T, S = W.shape
        cache, spectra = {}, []
        if need_spectra:  # values from the Gram (not an SVD: minutes on VGG's classifier), kept for the vectors
            cache["gram"] = gram(W)
            spectra = [(singular_values(G=cache["gram"][0]), (T, S))]
        else:
            spectra = [(torch.ones(min(T, S)), (T, S))]
        return Analysis(spectra, (min(T, S),), cache)

    def cost(self, layer, ranks):
        (R,) = ranks
        T, S = layer.weight.shape[:2]
        bias = 0 if layer.bias is None else T
        return R * (S + T) + bias, 0, R * (S + T)

    def factorize(self, layer, ranks, analysis, ctx):
        (R,) = ranks
        W = _matrix(layer)
        A, B = svd_factors(W, R, analysis)
        dtype = layer.weight.dtype
        if isinstance(layer, nn.Linear):
            first = nn.Linear(layer.in_features, R, bias=False)
            second = nn.Linear(R, layer.out_features, bias=layer.bias is not None)
            first.weight.data.copy_(B.to(dtype))
            second.weight.data.copy_(A.to(dtype))
        else:  # 1x1 conv: stride/padding on the first conv (it subsamples), the bias on the second
            first = nn.Conv2d(layer.in_channels, R, 1, stride=layer.stride, padding=layer.padding,
                              dilation=layer.dilation, bias=False, padding_mode=layer.padding_mode)
            second = nn.Conv2d(R, layer.out_channels, 1, bias=layer.bias is not None)
            first.weight.data.copy_(B.to(dtype)[:, :, None, None])
            second.weight.data.copy_(A.to(dtype)[:, :, None, None])
        if layer.bias is not None:
            second.bias.data.copy_(layer.bias.detach())
        return nn.Sequential(first, second), (A @ B).to(dtype)

"""Channel decomposition with response reconstruction (Zhang, Zou, He, Sun, TPAMI 2015 / CVPR 2015).

A conv's responses y = W x + b (T channels) are assumed to lie near an R-dimensional subspace:
y ~ M y + b' with rank(M) = R, M = P Q^T (Eq. 4). The layer becomes a D x D conv S -> R (filters
Q^T W) and a 1x1 conv R -> T (P, with the bias). The factors minimise the error of the *responses*
on sampled inputs, not of the weights:

- linear (Sec. 3.1, Eq. 5): P = Q = the leading R eigenvectors of the response covariance (PCA);
- through the ReLU r (Sec. 3.2, Eq. 6): min sum_i ||r(y_i) - r(M y_i + b')||^2, relaxed with auxiliary
  z_i and a penalty lambda ||z_i - (M y_i + b')||^2 (Eq. 7), solved by alternating a closed-form
  element-wise update of z (Eq. 11) with a rank-R reduced-rank regression of z on y (the generalised
  SVD of Eqs. 8-10), lambda raised from 0.01 to 1.

When a BatchNorm follows the conv, the ReLU acts on u = a y + c: the reconstruction is done on u.
Inputs come from the original network (the symmetric variant; the paper's asymmetric variant feeds
the approximated network's inputs). Only the channel (output) mode is decomposed here; the paper's
3-D scheme adds the spatial (Jaderberg) split on top.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from torchslim.lowrank.core import Analysis, Method, Skip, register_method

N_SAMPLES = 4096  # response vectors sampled from the calibration inputs
NONLINEAR_ITERS = 15


def _responses(layer: nn.Conv2d, inputs: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """Sampled responses y = W x + b as a T x n matrix (float64)."""
    with torch.no_grad():
        y = layer(inputs.to(layer.weight.dtype))
    y = y.permute(1, 0, 2, 3).reshape(y.shape[1], -1).double()
    if y.shape[1] > n:
        idx = torch.randperm(y.shape[1], generator=torch.Generator().manual_seed(seed))[:n]
        y = y[:, idx]
    return y


def _top_eig(C: torch.Tensor, R: int) -> torch.Tensor:
    lam, V = torch.linalg.eigh(C)
    return V.flip(1)[:, :R]


def reduced_rank_fit(Z: torch.Tensor, U: torch.Tensor, R: int, eps: float = 1e-8):
    """min ||Z - (M U + b)||_F over rank(M) <= R: (P, Q^T, b) with M = P Q^T (Zhang et al. Eqs. 8-10)."""
    u_bar, z_bar = U.mean(1, keepdim=True), Z.mean(1, keepdim=True)
    Uc, Zc = U - u_bar, Z - z_bar
    G = Uc @ Uc.T
    G = G + eps * G.diagonal().mean().clamp_min(1e-30) * torch.eye(len(G), dtype=G.dtype)
    A = torch.linalg.solve(G, Uc @ Zc.T).T  # full-rank least squares Z ~ A U
    Fit = A @ Uc
    P = _top_eig(Fit @ Fit.T, R)
    Qt = P.T @ A
    b = z_bar - P @ (Qt @ u_bar)
    return P, Qt, b.squeeze(1)


def fit_responses(U: torch.Tensor, R: int, nonlinear: bool = True, iters: int = NONLINEAR_ITERS):
    """(P, Q^T, b) with r(U) ~ r(P Q^T U + b); the linear (PCA) solution when `nonlinear` is False."""
    P, Qt, b = reduced_rank_fit(U, U, R)
    if not nonlinear:
        return P, Qt, b
    target = U.clamp_min(0)
    for lam in torch.logspace(-2, 0, iters).tolist():
        Yp = P @ (Qt @ U) + b[:, None]
        z_neg = Yp.clamp_max(0)  # z <= 0: r(z) = 0
        cost_neg = target**2 + lam * (z_neg - Yp) ** 2
        z_pos = ((lam * Yp + target) / (1 + lam)).clamp_min(0)
        cost_pos = (target - z_pos) ** 2 + lam * (z_pos - Yp) ** 2
        Z = torch.where(cost_neg < cost_pos, z_neg, z_pos)
        P, Qt, b = reduced_rank_fit(Z, U, R)
    return P, Qt, b


@register_method("channel")
class ChannelDecomposition(Method):
    """Conv2d -> DxD (S->R) then 1x1 (R->T), fitted to the layer's responses through the ReLU."""

    paper = "Zhang et al. 2015 (TPAMI), Eqs. 4-11"
    needs_data = True

    def analyze(self, layer, need_spectra, ctx=None):
        if ctx is None or ctx.inputs is None:
            raise Skip("needs calibration inputs (pass data=...)")
        y = _responses(layer, ctx.inputs, ctx.options.get("n_samples", N_SAMPLES))
        a, c = ctx.post_affine if ctx.post_affine is not None else (torch.ones(len(y)), torch.zeros(len(y)))
        a, c = a.double(), c.double()
        a = torch.where(a.abs() < 1e-8, torch.full_like(a, 1e-8), a)
        U = a[:, None] * y + c[:, None]
        Uc = U - U.mean(1, keepdim=True)
        s = torch.linalg.eigvalsh(Uc @ Uc.T).flip(0).clamp_min(0).sqrt()
        return Analysis([(s, tuple(U.shape))], (layer.out_channels,), {"U": U, "a": a, "c": c})

    def cost(self, layer, ranks):
        (R,) = ranks
        T, S, kh, kw = layer.weight.shape
        bias = T
        return S * kh * kw * R + R * T + bias, 0, S * kh * kw * R + R * T

    def factorize(self, layer, ranks, analysis, ctx):
        (R,) = ranks
        U, a, c = analysis.cache["U"], analysis.cache["a"], analysis.cache["c"]
        P, Qt, b = fit_responses(U, R, nonlinear=ctx.options.get("nonlinear", True),
                                 iters=ctx.options.get("iters", NONLINEAR_ITERS))
        W = layer.weight.detach().double()
        b0 = layer.bias.detach().double() if layer.bias is not None else torch.zeros(len(a), dtype=W.dtype)
        # u = a y + c; u' = P Q^T u + b; y' = (u' - c) / a
        first_w = torch.einsum("rt,t,tsij->rsij", Qt, a, W)
        last_w = P / a[:, None]
        last_b = (P @ (Qt @ (a * b0 + c)) + b - c) / a
        dtype = layer.weight.dtype
        first = nn.Conv2d(layer.in_channels, R, layer.kernel_size, stride=layer.stride, padding=layer.padding,
                          dilation=layer.dilation, bias=False, padding_mode=layer.padding_mode)
        last = nn.Conv2d(R, layer.out_channels, 1, bias=True)
        first.weight.data.copy_(first_w.to(dtype))
        last.weight.data.copy_(last_w.to(dtype)[:, :, None, None])
        last.bias.data.copy_(last_b.to(dtype))
        U_hat = P @ (Qt @ U) + b[:, None]
        ctx.options["response_error"] = float(torch.linalg.vector_norm(F.relu(U) - F.relu(U_hat))
                                              / torch.linalg.vector_norm(F.relu(U)).clamp_min(1e-30))
        w_hat = torch.einsum("tr,rsij->tsij", last_w, first_w)
        return nn.Sequential(first, last), w_hat.to(dtype)

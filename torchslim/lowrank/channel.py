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
- asymmetric (Sec. 3.3, the default): when earlier layers are already approximated, this layer sees
  approximated inputs x^ and responses y^ = W x^ + b. The target stays the original network's r(y_i):
  min sum_i ||r(y_i) - r(M y^_i + b')||^2, the same alternation with z regressed on y^, so each layer
  also corrects the error accumulated below it. `decompose` fits layers in forward order and gives each
  one its inputs through the partly decomposed model (`Context.approx_inputs`); options={"asymmetric":
  False} fits every layer on the original network's inputs (the symmetric variant).

When a BatchNorm follows the conv, the ReLU acts on u = a y + c: the reconstruction is done on u.
Only the channel (output) mode is decomposed here; `zhang3d` (the paper's 3-D scheme) adds the
spatial (Jaderberg) split on top, reusing `split_responses`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from torchslim.lowrank.core import Analysis, Method, Skip, register_method

N_SAMPLES = 4096  # response vectors sampled from the calibration inputs
NONLINEAR_ITERS = 15


def _responses(layer: nn.Module, inputs: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """Sampled responses y = W x + b (of a conv or a chain of convs) as a T x n matrix (float64)."""
    with torch.no_grad():
        y = layer(inputs.to(next(layer.parameters()).dtype))
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


def fit_responses(U: torch.Tensor, R: int, nonlinear: bool = True, iters: int = NONLINEAR_ITERS,
                  U_hat: torch.Tensor | None = None):
    """(P, Q^T, b) with r(U) ~ r(P Q^T U^ + b); U^ = U unless given (asymmetric: the approximated
    network's responses, column i paired with U's column i). The linear solution when `nonlinear` is False."""
    U_hat = U if U_hat is None else U_hat
    P, Qt, b = reduced_rank_fit(U, U_hat, R)
    if not nonlinear:
        return P, Qt, b
    target = U.clamp_min(0)
    for lam in torch.logspace(-2, 0, iters).tolist():
        Yp = P @ (Qt @ U_hat) + b[:, None]
        z_neg = Yp.clamp_max(0)  # z <= 0: r(z) = 0
        cost_neg = target**2 + lam * (z_neg - Yp) ** 2
        z_pos = ((lam * Yp + target) / (1 + lam)).clamp_min(0)
        cost_pos = (target - z_pos) ** 2 + lam * (z_pos - Yp) ** 2
        Z = torch.where(cost_neg < cost_pos, z_neg, z_pos)
        P, Qt, b = reduced_rank_fit(Z, U_hat, R)
    return P, Qt, b


def response_samples(layer: nn.Module, inputs: torch.Tensor, ctx, T: int) -> tuple[torch.Tensor, torch.Tensor,
                                                                                    torch.Tensor]:
    """(U, a, c): the responses of `layer` on `inputs`, sampled (T x n, float64) and mapped through the
    BatchNorm that follows (u = a y + c; a = 1, c = 0 without one). The same positions for every call
    with inputs of the same shape, so the original and approximated samples pair up."""
    y = _responses(layer, inputs, ctx.options.get("n_samples", N_SAMPLES))
    a, c = ctx.post_affine if ctx.post_affine is not None else (torch.ones(T), torch.zeros(T))
    a, c = a.double(), c.double()
    a = torch.where(a.abs() < 1e-8, torch.full_like(a, 1e-8), a)
    return a[:, None] * y + c[:, None], a, c


def split_responses(conv: nn.Conv2d, R: int, U: torch.Tensor, U_hat: torch.Tensor, a: torch.Tensor,
                    c: torch.Tensor, options: dict) -> tuple[nn.Conv2d, nn.Conv2d, float]:
    """`conv` (T outputs) -> (conv with R outputs, 1x1 R -> T, relative response error after the ReLU).

    U are the target responses r(U) to reconstruct, U_hat what `conv` (inside the approximated network)
    actually produces on the same samples, both after the following BatchNorm (u = a y + c)."""
    P, Qt, b = fit_responses(U, R, nonlinear=options.get("nonlinear", True),
                             iters=options.get("iters", NONLINEAR_ITERS), U_hat=U_hat)
    W = conv.weight.detach().double()
    b0 = conv.bias.detach().double() if conv.bias is not None else torch.zeros(len(a), dtype=W.dtype)
    # u = a y + c; u' = P Q^T u + b; y' = (u' - c) / a
    first_w = torch.einsum("rt,t,tsij->rsij", Qt, a, W)
    last_w = P / a[:, None]
    last_b = (P @ (Qt @ (a * b0 + c)) + b - c) / a
    dtype = conv.weight.dtype
    first = nn.Conv2d(conv.in_channels, R, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                      dilation=conv.dilation, bias=False, padding_mode=conv.padding_mode)
    last = nn.Conv2d(R, conv.out_channels, 1, bias=True)
    first.weight.data.copy_(first_w.to(dtype))
    last.weight.data.copy_(last_w.to(dtype)[:, :, None, None])
    last.bias.data.copy_(last_b.to(dtype))
    U_fit = P @ (Qt @ U_hat) + b[:, None]
    err = float(torch.linalg.vector_norm(F.relu(U) - F.relu(U_fit))
                / torch.linalg.vector_norm(F.relu(U)).clamp_min(1e-30))
    return first, last, err


def approx_inputs(ctx) -> torch.Tensor:
    """The inputs the approximated network feeds this layer (asymmetric), else the original ones."""
    use = ctx.options.get("asymmetric", True) and ctx.approx_inputs is not None
    return ctx.approx_inputs if use else ctx.inputs


@register_method("channel")
class ChannelDecomposition(Method):
    """Conv2d -> DxD (S->R) then 1x1 (R->T), fitted to the layer's responses through the ReLU."""

    paper = "Zhang et al. 2015 (TPAMI), Eqs. 4-11; asymmetric, Sec. 3.3"
    needs_data = True
    asymmetric = True

    def analyze(self, layer, need_spectra, ctx=None):
        if ctx is None or ctx.inputs is None:
            raise Skip("needs calibration inputs (pass data=...)")
        U, a, c = response_samples(layer, ctx.inputs, ctx, layer.out_channels)
        x_hat = approx_inputs(ctx)
        U_hat = U if x_hat is ctx.inputs else response_samples(layer, x_hat, ctx, layer.out_channels)[0]
        Uc = U - U.mean(1, keepdim=True)
        s = torch.linalg.eigvalsh(Uc @ Uc.T).flip(0).clamp_min(0).sqrt()
        return Analysis([(s, tuple(U.shape))], (layer.out_channels,), {"U": U, "U_hat": U_hat, "a": a, "c": c})

    def cost(self, layer, ranks):
        (R,) = ranks
        T, S, kh, kw = layer.weight.shape
        bias = T
        return S * kh * kw * R + R * T + bias, 0, S * kh * kw * R + R * T

    def factorize(self, layer, ranks, analysis, ctx):
        (R,) = ranks
        k = analysis.cache
        first, last, ctx.options["response_error"] = split_responses(layer, R, k["U"], k["U_hat"], k["a"], k["c"],
                                                                     ctx.options)
        w_hat = torch.einsum("tr,rsij->tsij", last.weight.detach()[:, :, 0, 0].double(), first.weight.detach().double())
        return nn.Sequential(first, last), w_hat.to(layer.weight.dtype)

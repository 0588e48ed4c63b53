"""CP decomposition of a conv kernel (Lebedev et al., ICLR 2015, Sec. 3, Eq. 4).

K(t, s, j, i) ~ sum_r K^t(t, r) K^s(s, r) K^y(j, r) K^x(i, r): a 1x1 conv S -> R (K^s), a D x 1
depthwise conv (K^y, vertical stride/padding), a 1 x D depthwise conv (K^x, horizontal), and a 1x1
conv R -> T (K^t with the CP weights lambda_r folded in, the original bias).

The factors come from CP-ALS with SVD initialisation (Lebedev et al. use non-linear least squares).
TensorLy's `parafac` runs the same ALS; on conv kernels it measured 1-5x slower in CPU time here
(it forms Khatri-Rao products and the reconstruction error each sweep; benchmarks/bench_lowrank.py),
so ALS is written here in ~30 lines of torch; `options={"cp_solver": "tensorly"}` selects TensorLy. Rank choice: "vbmf" and a float read
the output-mode unfolding; rank 1.0 means the exact rank bound R = S * D * D, for which the CP is
built exactly (one-hot factors on the input and spatial modes) instead of by ALS.
"""
from __future__ import annotations

import torch
from torch import nn

from torchslim.lowrank.core import Analysis, Method, Skip, register_method
from torchslim.lowrank.linalg import left_singular, unfold

ALS_ITERS = 100


def cp_als(X: torch.Tensor, R: int, n_iter_max: int = ALS_ITERS, tol: float = 1e-7, seed: int = 0):
    """CP-ALS (Kolda & Bader 2009, Fig. 3.3) of a 4-way tensor in float64 torch: (lambda, factors).

    Each sweep solves one factor at a time: A_n = X_(n) (Khatri-Rao of the others) V^+, V the Hadamard
    product of the other factors' Gram matrices; the MTTKRP is one einsum, the fit is computed from
    the Gram matrices without rebuilding the tensor. Initialised by the leading left singular vectors
    of each unfolding (HOSVD), padded with Gaussian columns where R exceeds a mode's size.
    """
    X = X.double()
    g = torch.Generator().manual_seed(seed)
    factors = []
    for n in range(X.ndim):
        U = left_singular(unfold(X, n))[0][:, :R]
        if U.shape[1] < R:
            U = torch.cat([U, torch.randn(X.shape[n], R - U.shape[1], generator=g, dtype=X.dtype)], 1)
        factors.append(U)
    letters = "abcd"
    specs = [f"{letters},{','.join(l + 'r' for l in letters if l != letters[n])}->{letters[n]}r" for n in range(4)]
    norm_x2 = float((X * X).sum())
    lam = X.new_ones(R)
    prev = float("inf")
    for _ in range(n_iter_max):
        for n in range(4):
            others = [f for m, f in enumerate(factors) if m != n]
            V = torch.ones(R, R, dtype=X.dtype)
            for f in others:
                V = V * (f.T @ f)
            mttkrp = torch.einsum(specs[n], X, *others)
            A = mttkrp @ torch.linalg.pinv(V)
            lam = torch.linalg.vector_norm(A, dim=0).clamp_min(1e-300)
            factors[n] = A / lam
        # ||X - X_hat||^2 = ||X||^2 - 2 <X, X_hat> + ||X_hat||^2, from the last mode's quantities
        G = torch.ones(R, R, dtype=X.dtype)
        for f in factors:
            G = G * (f.T @ f)
        fit2 = float(lam @ G @ lam)
        inner = float(((mttkrp @ torch.diag(lam)) * factors[3]).sum())
        err = max(norm_x2 - 2 * inner + fit2, 0.0) ** 0.5 / max(norm_x2, 1e-300) ** 0.5
        if abs(prev - err) < tol:
            break
        prev = err
    return lam, factors


def parafac4(W: torch.Tensor, R: int, n_iter_max: int = ALS_ITERS, seed: int = 0, solver: str = "torch"):
    """(lambda, [K^t, K^s, K^y, K^x]) with W ~ sum_r lambda_r K^t_r o K^s_r o K^y_r o K^x_r (float64).

    solver: "torch" (our CP-ALS above) or "tensorly" (tensorly.decomposition.parafac, PyTorch backend):
    the same ALS, slower on conv kernels here (benchmarks/bench_lowrank.py measures both).
    """
    T, S, kh, kw = W.shape
    W = W.double()
    if R >= S * kh * kw:  # exact: one term per (s, j, i)
        idx = torch.arange(S * kh * kw)
        Ks = W.new_zeros(S, R); Ky = W.new_zeros(kh, R); Kx = W.new_zeros(kw, R)
        Kt = W.new_zeros(T, R)
        Ks[idx // (kh * kw), idx] = 1
        Ky[(idx // kw) % kh, idx] = 1
        Kx[idx % kw, idx] = 1
        Kt[:, idx] = W.reshape(T, -1)
        return W.new_ones(R), [Kt, Ks, Ky, Kx]
    if solver == "torch":
        return cp_als(W, R, n_iter_max, seed=seed)
    import tensorly as tl
    from tensorly.decomposition import parafac

    with tl.backend_context("pytorch"):
        cp = parafac(W, rank=R, init="svd", n_iter_max=n_iter_max, tol=1e-7, random_state=seed)
    return cp.weights, list(cp.factors)


def cp_to_tensor(weights, factors) -> torch.Tensor:
    Kt, Ks, Ky, Kx = factors
    return torch.einsum("r,tr,sr,jr,ir->tsji", weights, Kt, Ks, Ky, Kx)


@register_method("cp")
class CPDecomposition(Method):
    """Conv2d -> 1x1 (S->R), Dx1 depthwise, 1xD depthwise, 1x1 (R->T)."""

    paper = "Lebedev et al. 2015 (ICLR), Eq. 4"

    def skip_reason(self, layer):
        if layer.groups > 1:
            return f"grouped conv (groups={layer.groups}) is already factorised"
        if layer.kernel_size == (1, 1):
            return "1x1 conv has no spatial modes for CP (use svd)"
        return None

    def analyze(self, layer, need_spectra, ctx=None):
        W = layer.weight.detach()
        T, S, kh, kw = W.shape
        spectra = [(left_singular(unfold(W, 0))[1][: min(T, S * kh * kw)], (T, S * kh * kw))] if need_spectra \
            else [(torch.ones(1), (T, S * kh * kw))]
        return Analysis(spectra, (S * kh * kw,))

    def adjust_ranks(self, layer, rank, ranks, analysis):
        if isinstance(rank, float) and rank >= 1.0:
            return analysis.full
        return ranks

    def cost(self, layer, ranks):
        (R,) = ranks
        T, S, kh, kw = layer.weight.shape
        bias = 0 if layer.bias is None else T
        sw = layer.stride[1]
        # the Dx1 conv runs at full width (H' x W): count its MACs per output pixel times the width stride
        return S * R + kh * R + kw * R + R * T + bias, S * R, kh * R * sw + kw * R + R * T

    def factorize(self, layer, ranks, analysis, ctx):
        (R,) = ranks
        T, S, kh, kw = layer.weight.shape
        lam, (Kt, Ks, Ky, Kx) = parafac4(layer.weight.detach(), R, ctx.options.get("als_iters", ALS_ITERS),
                                         solver=ctx.options.get("cp_solver", "torch"))
        if not torch.isfinite(Kt).all():
            raise Skip(f"CP-ALS diverged at rank {R}")
        dtype = layer.weight.dtype
        pad = layer.padding if isinstance(layer.padding, str) else None
        ph, pw = (0, 0) if pad else layer.padding
        first = nn.Conv2d(S, R, 1, bias=False)
        vert = nn.Conv2d(R, R, (kh, 1), stride=(layer.stride[0], 1), padding=pad or (ph, 0),
                         dilation=(layer.dilation[0], 1), groups=R, bias=False, padding_mode=layer.padding_mode)
        horiz = nn.Conv2d(R, R, (1, kw), stride=(1, layer.stride[1]), padding=pad or (0, pw),
                          dilation=(1, layer.dilation[1]), groups=R, bias=False, padding_mode=layer.padding_mode)
        last = nn.Conv2d(R, T, 1, bias=layer.bias is not None)
        first.weight.data.copy_(Ks.T.to(dtype)[:, :, None, None])
        vert.weight.data.copy_(Ky.T.to(dtype)[:, None, :, None])
        horiz.weight.data.copy_(Kx.T.to(dtype)[:, None, None, :])
        last.weight.data.copy_((Kt * lam).to(dtype)[:, :, None, None])
        if layer.bias is not None:
            last.bias.data.copy_(layer.bias.detach())
        return nn.Sequential(first, vert, horiz, last), cp_to_tensor(lam, [Kt, Ks, Ky, Kx]).to(dtype)

"""Small linear-algebra helpers shared by the methods (float64 for the factorisations, then cast back)."""
from __future__ import annotations

import torch


def unfold(W: torch.Tensor, mode: int) -> torch.Tensor:
    """Mode-n unfolding (Kolda & Bader 2009): mode `mode` becomes the rows (same as tensorly.unfold)."""
    return torch.movedim(W, mode, 0).reshape(W.shape[mode], -1)


def left_singular(Y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(U, sigma) of Y (n x m), descending, from the eigendecomposition of the n x n Gram matrix Y Y^T.

    The conv unfoldings are short and wide (T x S D^2): the Gram route costs O(n^2 m) and one small
    eigh, against a full SVD of the wide matrix; float64 keeps the squared spectrum accurate.
    """
    Y = Y.double()
    lam, U = torch.linalg.eigh(Y @ Y.T)
    lam, U = lam.flip(0), U.flip(1)
    return U, lam.clamp_min(0).sqrt()



EXACT_GRAM_MACS = 2**33  # below this a float64 Gram costs under a second on one core


def gram(Y: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """(G, transposed): the Gram matrix of Y's smaller side, Y Y^T, or Y^T Y when `transposed`.

    One GEMM of n^2 m for n <= m, in float64 up to EXACT_GRAM_MACS and in float32 above (half the
    time, and the eigensolver's too; VGG-16's 4096 x 25088 classifier): its eigenvalues then match
    the squared singular values to ~1e-6 relative for the large ones and ~1e-4 sigma_max absolute
    near zero, far below any noise level VBMF separates.
    """
    Y = Y.detach()
    transposed = Y.shape[0] > Y.shape[1]
    Y = Y.T if transposed else Y
    n, m = Y.shape
    Y = Y.double() if n * n * m <= EXACT_GRAM_MACS else Y.float()
    k = min(8, n // 256)  # row blocks of at least 256: each GEMM stays large enough to run at full speed
    if k < 2:
        return Y @ Y.T, transposed
    # G is symmetric: the blocks on and above the diagonal (k(k+1)/2 of k^2) are all the GEMM work needed
    G = Y.new_empty(n, n)
    edges = [round(i * n / k) for i in range(k + 1)]
    for i in range(k):
        rows = Y[edges[i]:edges[i + 1]]
        G[edges[i]:edges[i + 1], edges[i]:] = rows @ Y[edges[i]:].T
        G[edges[i + 1]:, edges[i]:edges[i + 1]] = G[edges[i]:edges[i + 1], edges[i + 1]:].T
    return G, transposed


def singular_values(Y: torch.Tensor | None = None, *, G: torch.Tensor | None = None) -> torch.Tensor:
    """Singular values (descending, float64) of Y, or of the matrix whose `gram` G is, from G's eigenvalues.

    The same values as torch.linalg.svdvals (see `gram` for the precision) for one GEMM and one n x n
    eigvalsh, instead of minutes for an SVD of a wide matrix. Values at the Gram's resolution are
    floored at 1e-15 sigma_max, like an SVD's for a rank-deficient matrix, so log(sigma) stays finite.
    """
    G = gram(Y)[0] if G is None else G
    lam = torch.linalg.eigvalsh(G).double().flip(0)
    return lam.clamp_min(float(lam[0]) * 1e-30 if lam.numel() else 0.0).sqrt()


def top_eigenvectors(G: torch.Tensor, R: int, n_iter: int = 4,
                     oversample: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """(V, lam): the R leading eigenpairs of a symmetric PSD G, descending.

    Exact (eigh) when R is a large part of G; otherwise subspace iteration with a Rayleigh-Ritz step
    (Halko, Martinsson & Tropp 2011, Algs. 4.4 and 5.3): a few products with the n x n G instead of
    passes over the much larger matrix it is the Gram of.
    """
    n = G.shape[0]
    k = min(R + oversample, n)
    if k * 4 >= n:
        lam, V = torch.linalg.eigh(G)
        return V.flip(1)[:, :R], lam.flip(0)[:R]
    g = torch.Generator().manual_seed(0)
    Q = torch.linalg.qr(G @ torch.randn(n, k, dtype=G.dtype, generator=g))[0]
    for _ in range(n_iter):
        Q = torch.linalg.qr(G @ Q)[0]
    lam, W = torch.linalg.eigh(Q.T @ G @ Q)
    return (Q @ W).flip(1)[:, :R], lam.flip(0)[:R]

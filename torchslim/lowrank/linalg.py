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


def singular_values(Y: torch.Tensor) -> torch.Tensor:
    """Singular values of Y (descending, float64) from the eigenvalues of its smaller Gram matrix.

    The same values as torch.linalg.svdvals for a fraction of the cost of an SVD of a wide matrix:
    one GEMM (n^2 m for n <= m) and one n x n eigvalsh (VGG-16's 4096 x 25088 classifier: seconds
    instead of minutes). The Gram is float64 up to EXACT_GRAM_MACS and float32 above (half the GEMM
    time): then the values agree to ~1e-6 relative for the large ones and ~3e-4 sigma_max absolute
    near zero, far below any noise level VBMF separates. Values at the Gram's resolution are floored
    at 1e-15 sigma_max, like an SVD's for a rank-deficient matrix, so log(sigma) stays finite.
    """
    Y = Y.detach()
    if Y.shape[0] > Y.shape[1]:
        Y = Y.T
    n, m = Y.shape
    Y = Y.double() if n * n * m <= EXACT_GRAM_MACS else Y.float()
    lam = torch.linalg.eigvalsh((Y @ Y.T).double()).flip(0)
    return lam.clamp_min(float(lam[0]) * 1e-30 if lam.numel() else 0.0).sqrt()

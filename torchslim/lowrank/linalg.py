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

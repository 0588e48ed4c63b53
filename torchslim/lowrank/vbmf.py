"""Analytic empirical VBMF (Nakajima, Sugiyama, Babacan, Tomioka, JMLR 2013): the rank a noisy matrix
supports, with the noise variance estimated from the data. Kim et al. (ICLR 2016, Sec. 3.1) use it on
the mode unfoldings of a conv kernel to pick the Tucker-2 ranks (R3, R4).

Notation of the paper: Y is L x M with L <= M, singular values gamma_h, alpha = L / M, sigma2 the noise
variance. Theorem 5: a component survives iff gamma_h > gamma_underline = sqrt(M sigma2 (1 + tau_bar)
(1 + alpha / tau_bar)), with tau_bar ~ 2.5129 sqrt(alpha). sigma2 minimises the free energy of Eq. (30)
(Corollary 2) over [sigma2_lower, sigma2_upper] (Eqs. 31-32).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import minimize_scalar

TAU_BAR_C = 2.5129  # tau_bar = 2.5129 sqrt(alpha), the solution of Eq. (26)


@dataclass
class VBMFResult:
    rank: int
    sigma2: float
    threshold: float  # gamma_underline: singular values above it are kept
    shrunk: np.ndarray  # gamma_hat_h of the kept components (Eq. 21)


def _tau(x: np.ndarray, alpha: float) -> np.ndarray:
    """Eq. (27): tau(x; alpha), the post-shrinkage signal-to-noise of a component with x = gamma^2/(M sigma2)."""
    return 0.5 * (x - (1 + alpha) + np.sqrt((x - (1 + alpha)) ** 2 - 4 * alpha))


def _free_energy(sigma2: float, L: int, M: int, gamma: np.ndarray, residual: float, x_bar: float) -> float:
    """Eq. (30): 2F / (LM) up to constants, as a function of sigma2 (Corollary 2)."""
    H, alpha = len(gamma), L / M
    x = gamma**2 / (M * sigma2)
    big, small = x[x > x_bar], x[x <= x_bar]
    tau_big = _tau(big, alpha)
    return float(np.sum(small - np.log(small)) + np.sum(big - tau_big) + np.sum(np.log((tau_big + 1) / big))
                 + alpha * np.sum(np.log(tau_big / alpha + 1)) + residual / (M * sigma2) + (L - H) * np.log(sigma2))


def evbmf(Y: torch.Tensor | np.ndarray | None = None, *, gamma: np.ndarray | None = None,
          shape: tuple[int, int] | None = None, sigma2: float | None = None) -> VBMFResult:
    """Empirical VBMF rank of a matrix (noise variance estimated when `sigma2` is None).

    Args:
        Y: the matrix; or give its singular values `gamma` and `shape` (L, M) instead.
        sigma2: known noise variance; None estimates it (the empirical Bayes variant).

    Example:
        >>> Y = torch.randn(64, 5) @ torch.randn(5, 100) + 0.1 * torch.randn(64, 100)
        >>> evbmf(Y).rank
        5
    """
    if gamma is None:
        Y = torch.as_tensor(Y, dtype=torch.float64)
        gamma = torch.linalg.svdvals(Y).numpy()
        shape = tuple(Y.shape)
    gamma = np.sort(np.asarray(gamma, dtype=np.float64))[::-1]
    L, M = sorted(shape)
    H = min(L, len(gamma))
    gamma = gamma[:H]
    alpha = L / M
    tau_bar = TAU_BAR_C * np.sqrt(alpha)
    x_bar = (1 + tau_bar) * (1 + alpha / tau_bar)
    residual = 0.0  # all singular values given: nothing outside the spectrum
    if not np.any(gamma > 0):
        return VBMFResult(0, 0.0, 0.0, np.zeros(0))
    if sigma2 is None:
        # Eqs. (31)-(32): the range that contains the free-energy minimiser.
        h_upper = int(min(np.ceil(L / (1 + alpha)) - 1, H)) - 1  # the largest rank EVB can return
        upper = (np.sum(gamma**2) + residual) / (L * M)
        tail = gamma[h_upper + 1:] if h_upper + 1 < H else gamma[-1:]
        lower = max(tail[0] ** 2 / (M * x_bar), np.mean(tail**2) / M, 1e-300)
        scale = 1.0 / lower  # work on a scale where the bounds are O(1)
        g = gamma * np.sqrt(scale)
        if upper * scale <= 1.0:
            sigma2 = lower
        else:
            opt = minimize_scalar(_free_energy, args=(L, M, g, residual * scale, x_bar),
                                  bounds=(1.0, upper * scale), method="bounded")
            sigma2 = opt.x / scale
    threshold = float(np.sqrt(M * sigma2 * (1 + tau_bar) * (1 + alpha / tau_bar)))
    rank = int(np.sum(gamma > threshold))
    g = gamma[:rank]
    # Eq. (21): the VB shrinkage estimator of each kept singular value.
    shrunk = g / 2 * (1 - (L + M) * sigma2 / g**2 + np.sqrt(np.maximum(
        (1 - (L + M) * sigma2 / g**2) ** 2 - 4 * L * M * sigma2**2 / g**4, 0)))
    return VBMFResult(rank, float(sigma2), threshold, shrunk)

"""Intra-class correlation of each filter's fire score (Tian et al. 2017, the importance measure beside
their LDA; ICC(1) of Shrout & Fleiss 1979, one-way random effects, classes as the groups).

With the fire scores f (maximum of the filter's output map, `lda.fire_scores`) of N images in K
classes, n_k images in class k:

    MSB = sum_k n_k (mean_k - mean)^2 / (K - 1),   MSW = sum_k sum_{i in k} (f_i - mean_k)^2 / (N - K)
    ICC(1) = (MSB - MSW) / (MSB + (n0 - 1) MSW),   n0 = (N - sum_k n_k^2 / N) / (K - 1)

the share of the score's variance that lies between classes: near 1 when images of one class agree
with each other and differ from the other classes, 0 (or below) when the class says nothing about
the score. Low ICC goes first; a constant filter scores the lowest value ICC(1) can take, -1/(n0 - 1).
"""
import torch

from torchslim.prune.criteria.base import ScoreContext, sites_to_units, register_criterion
from torchslim.prune.criteria.lda import fire_scores


def icc_scores(F: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """ICC(1) of each column of F (N x C) with the classes y as the groups."""
    F = F.double()
    classes, idx, counts = torch.unique(y, return_inverse=True, return_counts=True)
    N, K = F.shape[0], len(classes)
    if K < 2 or N <= K:
        return torch.zeros(F.shape[1])
    sums = torch.zeros(K, F.shape[1], dtype=torch.float64).index_add_(0, idx, F)
    means = sums / counts[:, None]
    ssb = (counts[:, None] * (means - F.mean(0)) ** 2).sum(0)
    ssw = ((F - means[idx]) ** 2).sum(0)
    msb, msw = ssb / (K - 1), ssw / (N - K)
    n0 = (N - (counts.double() ** 2).sum() / N) / (K - 1)
    lowest = -1.0 / max(float(n0) - 1, 1e-12)
    denom = msb + (n0 - 1) * msw
    live = denom > 1e-12 * max(float(denom.max()), 1e-300)
    out = torch.full((F.shape[1],), lowest, dtype=torch.float64)
    out[live] = (msb[live] - msw[live]) / denom[live]
    return out.float()


@register_criterion("icc", needs_data=True)
def icc(ctx: ScoreContext):
    return sites_to_units(ctx, {s: icc_scores(F, y) for s, (F, y) in fire_scores(ctx, "icc").items()})

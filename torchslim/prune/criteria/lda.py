"""Deep LDA-pruned net (Tian, Wang, Cheng & Li, "Efficient Gender Classification Using a Deep LDA-Pruned
Net", 2017): a linear discriminant analysis of the filters' *fire scores*.

A filter's fire score on an image is the maximum of its output map. Over N images the scores of a
layer's C filters form F (N x C); each column is standardised (zero mean, unit variance), so a filter's
weight in a direction does not depend on its activation scale. With class means mu_k, n_k images of
class k and the overall mean mu:

    S_w = sum_k sum_{i in k} (f_i - mu_k)(f_i - mu_k)^T        (within-class scatter)
    S_b = sum_k n_k (mu_k - mu)(mu_k - mu)^T                    (between-class scatter)
    S_b v = lambda S_w v                                        (Fisher's generalised eigenproblem)

S_w is singular whenever C exceeds N - K (fewer images per class than filters) and ill-conditioned
when filters are correlated, so it is shrunk towards a multiple of the identity,
S_w <- (1 - a) S_w + a tr(S_w)/C I, with the Ledoit-Wolf intensity a (options["shrinkage"] sets a
fixed one). The K - 1 directions with positive lambda_d span the discriminant space; filter c scores
sum_d lambda_d |v_d[c]| / ||v_d||, its weight in the discriminant directions, each counted by how
well that direction separates the classes. Filters the projection does not use go first. Unlike a
per-filter Fisher ratio, this reads the covariance between filters: a filter that separates nothing
alone but cancels the noise of another gets the weight the joint projection gives it.
"""
import numpy as np
import scipy.linalg
import torch
from sklearn.covariance import ledoit_wolf_shrinkage

from torchslim.prune.criteria.base import ScoreContext, collect_activations, sites_to_units, register_criterion


def fire_scores(ctx: ScoreContext, name: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per activation site: (F, y), the (images x channels) maxima of each channel's map and the labels."""
    ctx.need_data(name)
    fires: dict[str, list] = {}
    labels: dict[str, list] = {}

    def fn(s, a, y):
        fires.setdefault(s, []).append(a.flatten(2).amax(2) if a.dim() > 2 else a)
        labels.setdefault(s, []).append(y)

    collect_activations(ctx, fn)
    return {s: (torch.cat(fires[s]).double().cpu(), torch.cat(labels[s]).cpu()) for s in fires}


def lda_scores(F: torch.Tensor, y: torch.Tensor, shrinkage: float | None = None) -> torch.Tensor:
    """Each column's weight in the LDA discriminant directions of the rows of F (N x C) with labels y.

    Args:
        shrinkage: S_w shrinkage intensity in [0, 1]; None: Ledoit-Wolf.
    """
    X = F.double().numpy()
    y = y.numpy()
    std = X.std(0)
    live = std > 1e-12 * max(float(np.abs(X).max()), 1.0)  # constant filters: weight 0
    scores = np.zeros(X.shape[1])
    classes = np.unique(y)
    if live.sum() == 0 or len(classes) < 2:
        return torch.from_numpy(scores).float()
    Z = (X[:, live] - X[:, live].mean(0)) / std[live]
    C = Z.shape[1]
    means = np.stack([Z[y == k].mean(0) for k in classes])
    counts = np.array([(y == k).sum() for k in classes])
    within = Z - means[np.searchsorted(classes, y)]  # each image minus its class mean
    Sw = within.T @ within
    Sb = (means * counts[:, None]).T @ means  # sum_k n_k mu_k mu_k^T (the overall mean is 0)
    a = ledoit_wolf_shrinkage(within, assume_centered=True) if shrinkage is None else float(shrinkage)
    Sw = (1 - a) * Sw + a * np.trace(Sw) / C * np.eye(C)
    Sw += 1e-9 * np.trace(Sw) / C * np.eye(C)  # a = 0 on singular S_w would fail the Cholesky
    lam, V = scipy.linalg.eigh(Sb, Sw)
    keep = np.argsort(lam)[::-1][: len(classes) - 1]
    keep = keep[lam[keep] > 0]
    lam, V = lam[keep], V[:, keep]
    scores[live] = (np.abs(V) / np.linalg.norm(V, axis=0)) @ lam
    return torch.from_numpy(scores).float()


@register_criterion("lda", needs_data=True)
def lda(ctx: ScoreContext):
    shrink = ctx.options.get("shrinkage")
    return sites_to_units(ctx, {s: lda_scores(F, y, shrink) for s, (F, y) in fire_scores(ctx, "lda").items()})

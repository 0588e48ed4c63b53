"""Denton, Zaremba, Bruna, LeCun, Fergus, NIPS 2014, "Exploiting Linear Structure Within Convolutional
Networks for Efficient Evaluation".

- `monochromatic` (Sec. 3.2.1, first layer): each filter W_f (C_in x D x D) is approximated by a colour
  vector times one spatial filter, W_f ~ c_f (x) w_f (rank-1 SVD of its C_in x D^2 matrix). The colour
  vectors are clustered into C groups (k-means, balanced to T/C filters each), so the input is first
  projected onto C colour channels (a 1x1 conv C_in -> C) and every filter then convolves a single
  channel: a grouped D x D conv C -> T with groups=C, followed by a zero-cost channel permutation
  back to the original filter order. `rank` = the number of colour clusters C (a divisor of T).
- `bicluster` (Sec. 3.2.2, deeper layers): input channels are clustered into G groups and output
  channels into H groups (k-means on the kernel's mode unfoldings, balanced); every (input group,
  output group) block W_gh is approximated by a rank-k SVD of its (S/G D^2) x (T/H) matrix. Realised
  as: permute input channels, grouped D x D conv (groups=G, S/G -> H k each), permute, grouped 1x1
  conv (groups=H, G k -> T/H each), permute back. `rank` = k; `options={"bicluster": (G, H)}`
  (default (2, 2)).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from torchslim.lowrank.core import Analysis, Method, Skip, register_method


class ChannelPermute(nn.Module):
    """y[:, i] = x[:, index[i]]: reorders channels at no arithmetic cost."""

    def __init__(self, index):
        super().__init__()
        self.index = list(index)
        self.register_buffer("_index", torch.tensor(self.index, dtype=torch.long), persistent=False)

    def forward(self, x):
        return x.index_select(1, self._index)


def balanced_kmeans(X: np.ndarray, k: int, seed: int = 0, iters: int = 20) -> np.ndarray:
    """Cluster rows of X into k groups of exactly len(X)/k rows (k-means, then greedy balanced assignment)."""
    n = len(X)
    size = n // k
    rng = np.random.default_rng(seed)
    centers = X[rng.choice(n, k, replace=False)]
    labels = np.zeros(n, dtype=int)
    for _ in range(iters):
        d = ((X[:, None, :] - centers[None]) ** 2).sum(-1)  # n x k
        labels = -np.ones(n, dtype=int)
        counts = np.zeros(k, dtype=int)
        for idx in np.argsort(d, axis=None):  # closest (row, cluster) pairs first
            i, c = divmod(int(idx), k)
            if labels[i] < 0 and counts[c] < size:
                labels[i], counts[c] = c, counts[c] + 1
        new = np.stack([X[labels == c].mean(0) for c in range(k)])
        if np.allclose(new, centers):
            break
        centers = new
    return labels


def _divisor_near(n: int, k: int) -> int:
    divs = [d for d in range(1, n + 1) if n % d == 0]
    return min(divs, key=lambda d: (abs(d - k), d))


@register_method("monochromatic")
class Monochromatic(Method):
    """First layer: 1x1 colour projection (C_in -> C), grouped DxD (C -> T), channel permutation."""

    paper = "Denton et al. 2014 (NIPS), Sec. 3.2.1"
    exact_full_rank = False  # one colour per filter: rank 1.0 = C = T clusters, each filter's best rank-1

    def skip_reason(self, layer):
        if layer.groups > 1 or layer.in_channels > 4 or layer.kernel_size == (1, 1):
            return "monochromatic approximation is for a first layer (<= 4 input channels, DxD kernel)"
        return None

    def analyze(self, layer, need_spectra, ctx=None):
        T = layer.out_channels
        # rank 1.0 / vbmf: full = T clusters (every filter its own colour)
        return Analysis([(torch.ones(T), (T, T))], (T,))

    def resolve(self, layer, rank, analysis, params_before):
        T = layer.out_channels
        if isinstance(rank, float):
            C = T if rank >= 1.0 else max(1, round(rank * T))
        elif isinstance(rank, int):
            C = rank
        elif isinstance(rank, dict):
            C = 1
        else:
            raise Skip("monochromatic takes the number of colour clusters as rank (an int)")
        return (_divisor_near(T, min(C, T)),)

    def cost(self, layer, ranks):
        (C,) = ranks
        T, S, kh, kw = layer.weight.shape
        return S * C + T * kh * kw + (T if layer.bias is not None else 0), S * C, T * kh * kw

    def factorize(self, layer, ranks, analysis, ctx):
        (C,) = ranks
        W = layer.weight.detach().double()
        T, S, kh, kw = W.shape
        if C == T:  # every filter keeps its own colour: the best rank-1 colour x space approximation
            labels = np.arange(T)
        else:
            U, s, Vh = torch.linalg.svd(W.reshape(T, S, kh * kw))
            colour = (U[:, :, 0] * torch.sign(U[:, :1, 0])).numpy()  # unit colour vector per filter
            labels = balanced_kmeans(colour, C)
        order = np.argsort(labels, kind="stable")  # filters grouped by cluster
        centres = []
        for c in range(C):
            members = W[torch.as_tensor(np.where(labels == c)[0])]  # (n_c, S, kh, kw)
            # the colour vector best shared by the cluster: leading left singular vector of [W_f]
            M = members.permute(1, 0, 2, 3).reshape(S, -1)
            centres.append(torch.linalg.svd(M, full_matrices=False)[0][:, 0])
        P = torch.stack(centres)  # (C, S)
        mono = torch.einsum("cs,tsij->tcij", P, W)  # projection of every filter on every centre
        filt = mono[torch.as_tensor(order), torch.as_tensor(labels[order])]  # (T, kh, kw) in cluster order
        w_hat = torch.einsum("ts,tij->tsij", P[torch.as_tensor(labels)], mono[torch.arange(T), torch.as_tensor(labels)])
        dtype = layer.weight.dtype
        proj = nn.Conv2d(S, C, 1, bias=False)
        proj.weight.data.copy_(P.to(dtype)[:, :, None, None])
        conv = nn.Conv2d(C, T, layer.kernel_size, stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
                         groups=C, bias=layer.bias is not None, padding_mode=layer.padding_mode)
        conv.weight.data.copy_(filt.to(dtype)[:, None])
        if layer.bias is not None:
            conv.bias.data.copy_(layer.bias.detach()[torch.as_tensor(order)])
        inverse = np.argsort(order)
        return nn.Sequential(proj, conv, ChannelPermute(inverse.tolist())), w_hat.to(dtype)

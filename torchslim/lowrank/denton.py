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
    for_input_layer = True

    def skip_reason(self, layer):
        if layer.groups > 1 or layer.in_channels > 4 or layer.kernel_size == (1, 1):
            return "monochromatic approximation is for a first layer (<= 4 input channels, DxD kernel)"
        return None

    def analyze(self, layer, need_spectra, ctx=None):
        T = layer.out_channels
        # rank 1.0 / vbmf: full = T clusters (every filter its own colour)
        return Analysis([(torch.ones(T), (T, T))], (T,))

    def resolve(self, layer, rank, analysis, budget):
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


@register_method("bicluster")
class Bicluster(Method):
    """Deeper layers: G x H channel biclusters, each block a rank-k SVD (grouped convs + permutations)."""

    paper = "Denton et al. 2014 (NIPS), Sec. 3.2.2"

    def skip_reason(self, layer):
        if layer.groups > 1:
            return f"grouped conv (groups={layer.groups}) is already factorised"
        if layer.in_channels % 2 or layer.out_channels % 2:
            return f"{layer.in_channels} -> {layer.out_channels} channels do not split into 2 x 2 equal biclusters"
        return None

    def analyze(self, layer, need_spectra, ctx=None):
        G, H = tuple((ctx.options.get("bicluster") if ctx else None) or (2, 2))
        W = layer.weight.detach().double()
        T, S, kh, kw = W.shape
        if S % G or T % H:
            raise Skip(f"{S} input / {T} output channels do not split into {G} x {H} equal biclusters")
        from torchslim.lowrank.linalg import unfold

        def feats(M):  # cluster channels by their normalised filter rows
            M = M / M.norm(dim=1, keepdim=True).clamp_min(1e-12)
            return M.numpy()

        in_labels = balanced_kmeans(feats(unfold(W, 1)), G) if G > 1 else np.zeros(S, dtype=int)
        out_labels = balanced_kmeans(feats(unfold(W, 0)), H) if H > 1 else np.zeros(T, dtype=int)
        in_order, out_order = np.argsort(in_labels, kind="stable"), np.argsort(out_labels, kind="stable")
        Wp = W[torch.as_tensor(out_order)][:, torch.as_tensor(in_order)]
        s_g, t_h = S // G, T // H
        svds = {}
        for g in range(G):
            for h in range(H):
                blk = Wp[h * t_h:(h + 1) * t_h, g * s_g:(g + 1) * s_g]  # (T/H, S/G, kh, kw)
                M = blk.permute(1, 2, 3, 0).reshape(s_g * kh * kw, t_h)
                svds[g, h] = torch.linalg.svd(M, full_matrices=False)
        full = min(s_g * kh * kw, t_h)
        return Analysis([], (full,), {"G": G, "H": H, "in_order": in_order, "out_order": out_order, "svds": svds})

    def resolve(self, layer, rank, analysis, budget):
        from torchslim.lowrank.ranks import energy_rank, resolve_ranks

        full = analysis.full[0]
        svds = analysis.cache["svds"]
        if isinstance(rank, float):
            return (max(energy_rank(s, rank) for _, s, _ in svds.values()),)
        if isinstance(rank, str):
            from torchslim.lowrank.vbmf import evbmf

            return (max(1, max(evbmf(gamma=s.numpy(), shape=(len(U), Vh.shape[1])).rank
                               for U, s, Vh in svds.values())),)
        return resolve_ranks(rank, [(torch.ones(full), (full, full))], (full,),
                             lambda r: budget.fits(self.cost(layer, r, analysis)))

    def cost(self, layer, ranks, analysis=None):
        (k,) = ranks
        G, H = (analysis.cache["G"], analysis.cache["H"]) if analysis else (2, 2)
        T, S, kh, kw = layer.weight.shape
        first = S * kh * kw * H * k
        second = G * k * T
        return first + second + (T if layer.bias is not None else 0), 0, first + second

    def factorize(self, layer, ranks, analysis, ctx):
        (k,) = ranks
        c = analysis.cache
        G, H, svds = c["G"], c["H"], c["svds"]
        T, S, kh, kw = layer.weight.shape
        s_g, t_h = S // G, T // H
        first_w = torch.zeros(G * H * k, s_g, kh, kw, dtype=torch.float64)
        second_w = torch.zeros(T, G * k, dtype=torch.float64)
        Wp_hat = torch.zeros(T, S, kh, kw, dtype=torch.float64)
        for (g, h), (U, s, Vh) in svds.items():
            root = s[:k].sqrt()
            A = (U[:, :k] * root).T.reshape(k, s_g, kh, kw)  # k DxD filters on the group's inputs
            B = (root[:, None] * Vh[:k]).T  # (T/H, k)
            first_w[(g * H + h) * k:(g * H + h + 1) * k] = A
            second_w[h * t_h:(h + 1) * t_h, g * k:(g + 1) * k] = B
            Wp_hat[h * t_h:(h + 1) * t_h, g * s_g:(g + 1) * s_g] = torch.einsum("kshw,tk->tshw", A, B)
        # the second conv's group h reads (g, j) for all g: reorder (g, h, j) -> (h, g, j)
        mid = [(g * H + h) * k + j for h in range(H) for g in range(G) for j in range(k)]
        dtype = layer.weight.dtype
        conv1 = nn.Conv2d(S, G * H * k, layer.kernel_size, stride=layer.stride, padding=layer.padding,
                          dilation=layer.dilation, groups=G, bias=False, padding_mode=layer.padding_mode)
        conv2 = nn.Conv2d(G * H * k, T, 1, groups=H, bias=layer.bias is not None)
        conv1.weight.data.copy_(first_w.to(dtype))
        conv2.weight.data.copy_(second_w.to(dtype)[:, :, None, None])
        out_order, in_order = c["out_order"], c["in_order"]
        if layer.bias is not None:
            conv2.bias.data.copy_(layer.bias.detach()[torch.as_tensor(out_order)])
        chain = nn.Sequential(ChannelPermute(in_order.tolist()), conv1, ChannelPermute(mid), conv2,
                              ChannelPermute(np.argsort(out_order).tolist()))
        w_hat = torch.empty_like(Wp_hat)
        w_hat[torch.as_tensor(out_order)[:, None], torch.as_tensor(in_order)[None, :]] = Wp_hat
        return chain, w_hat.to(dtype)

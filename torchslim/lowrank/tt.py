"""Tensor-Train fully connected layer (Novikov, Podoprikhin, Osokin, Vetrov, NIPS 2015), TT-SVD init.

The weight W (M x N) with N = n_1...n_d, M = m_1...m_d is stored as TT cores G_k (r_{k-1}, n_k, m_k,
r_k), r_0 = r_d = 1 (Eq. 3): W((m_1..m_d), (n_1..n_d)) = G_1[n_1, m_1] ... G_d[n_d, m_d]. The forward
pass contracts the input with one core at a time (Sec. 4), never forming W. Cores are initialised
by TT-SVD (Oseledets 2011, Alg. 1) of the trained weight: sequential truncated SVDs of the
unfoldings; the rank argument is applied to each of the d-1 TT ranks (an int; a float q keeps the
fraction q of the energy overall, spread as delta-truncation over the d-1 steps; "vbmf" on each
unfolding; {"compression": x} the largest common rank meeting x).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from torchslim.errors import InvalidInputError
from torchslim.lowrank.core import Analysis, Method, Skip, register_method
from torchslim.lowrank.vbmf import evbmf

TT_ORDER = 3


class TTLinear(nn.Module):
    """y = W x + b with W in TT format; `in_modes`, `out_modes`, `ranks` (length d+1, ends 1)."""

    def __init__(self, in_modes, out_modes, ranks, bias: bool = True):
        super().__init__()
        self.in_modes, self.out_modes, self.ranks = list(in_modes), list(out_modes), list(ranks)
        d = len(self.in_modes)
        if len(self.out_modes) != d or len(self.ranks) != d + 1 or self.ranks[0] != 1 or self.ranks[-1] != 1:
            raise InvalidInputError(f"TTLinear: {d} input modes need {d} output modes and d+1 ranks "
                                    f"starting and ending with 1; got {out_modes}, {ranks}")
        self.in_features, self.out_features = math.prod(self.in_modes), math.prod(self.out_modes)
        for k in range(d):
            core = torch.empty(self.ranks[k], self.in_modes[k], self.out_modes[k], self.ranks[k + 1])
            nn.init.normal_(core, std=(1.0 / self.in_features) ** (0.5 / d))
            self.register_parameter(f"core_{k}", nn.Parameter(core))
        self.bias = nn.Parameter(torch.zeros(self.out_features)) if bias else None

    def cores(self) -> list[torch.Tensor]:
        return [getattr(self, f"core_{k}") for k in range(len(self.in_modes))]

    def spec_args(self) -> dict:
        return {"in_modes": self.in_modes, "out_modes": self.out_modes, "ranks": self.ranks,
                "bias": self.bias is not None}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        B = math.prod(lead)
        # t: (B, r_{k-1}, n_k, A = n_{k+1}..n_d, M = m_1..m_{k-1})
        t = x.reshape(B, 1, self.in_modes[0], self.in_features // self.in_modes[0], 1)
        for k, G in enumerate(self.cores()):
            t = torch.einsum("brnam,rnos->bsamo", t, G)  # (B, r_k, A, M, m_k)
            A, M = t.shape[2], t.shape[3] * t.shape[4]
            nxt = self.in_modes[k + 1] if k + 1 < len(self.in_modes) else 1
            t = t.reshape(B, t.shape[1], nxt, A // nxt, M)
        y = t.reshape(*lead, self.out_features)
        return y if self.bias is None else y + self.bias

    def weight_matrix(self) -> torch.Tensor:
        """The dense W (M x N) the cores represent (for checks; the forward pass never forms it)."""
        return self.forward(torch.eye(self.in_features, dtype=self.core_0.dtype)).T - (
            0 if self.bias is None else self.bias[:, None])

    def extra_repr(self) -> str:
        return f"in_modes={self.in_modes}, out_modes={self.out_modes}, ranks={self.ranks}"


def factor_modes(n: int, d: int) -> list[int]:
    """n as d factors, as equal as possible (largest first; 1s where n has too few prime factors)."""
    primes, m, p = [], n, 2
    while m > 1:
        while m % p == 0:
            primes.append(p)
            m //= p
        p += 1 if p == 2 else 2
        if p * p > m and m > 1:
            primes.append(m)
            break
    modes = [1] * d
    for q in sorted(primes, reverse=True):
        modes[modes.index(min(modes))] *= q
    return sorted(modes, reverse=True)


def tt_svd(W: torch.Tensor, in_modes, out_modes, rank) -> list[torch.Tensor]:
    """TT cores of W (M x N) by sequential truncated SVDs (Oseledets 2011, Alg. 1), float64."""
    d = len(in_modes)
    X = W.double().reshape(*out_modes, *in_modes)
    X = X.permute(*[i for k in range(d) for i in (d + k, k)])  # (n1, m1, n2, m2, ...)
    C = X.reshape(-1)
    total = float((W.double() ** 2).sum())
    cores, r_prev = [], 1
    for k in range(d - 1):
        C = C.reshape(r_prev * in_modes[k] * out_modes[k], -1)
        U, s, Vh = torch.linalg.svd(C, full_matrices=False)
        if isinstance(rank, str):
            r = max(1, evbmf(gamma=s.numpy(), shape=tuple(C.shape)).rank)
        elif isinstance(rank, float):
            # delta-truncation: drop at most (1 - q) ||W||^2 / (d - 1) at each step
            drop = (1 - rank) * total / (d - 1)
            tail = torch.cumsum((s**2).flip(0), 0).flip(0)  # tail[i] = sum_{j >= i} s_j^2
            r = max(1, int((tail > drop).sum()))
        else:
            r = int(rank[k] if isinstance(rank, (tuple, list)) else rank)
        r = min(r, len(s))
        cores.append(U[:, :r].reshape(r_prev, in_modes[k], out_modes[k], r))
        C = s[:r, None] * Vh[:r]
        r_prev = r
    cores.append(C.reshape(r_prev, in_modes[-1], out_modes[-1], 1))
    return cores


@register_method("tt")
class TensorTrain(Method):
    """Linear -> TTLinear (d = 3 modes by default; options={"tt_order": d})."""

    paper = "Novikov et al. 2015 (NIPS), Eq. 3; Oseledets 2011"
    layer_types = (nn.Linear,)

    def skip_reason(self, layer):
        return None

    def _modes(self, layer, d=TT_ORDER):
        return factor_modes(layer.in_features, d), factor_modes(layer.out_features, d)

    def analyze(self, layer, need_spectra, ctx=None):
        d = (ctx.options.get("tt_order", TT_ORDER) if ctx else TT_ORDER)
        n, m = self._modes(layer, d)
        if sum(1 for v in n if v > 1) < 2 and sum(1 for v in m if v > 1) < 2:
            raise Skip(f"{layer.in_features}x{layer.out_features} does not factor into TT modes")
        full = tuple(min(math.prod(n[:k + 1]) * math.prod(m[:k + 1]), math.prod(n[k + 1:]) * math.prod(m[k + 1:]))
                     for k in range(d - 1))
        return Analysis([], full, {"in_modes": n, "out_modes": m})

    def resolve(self, layer, rank, analysis, budget):
        n, m = analysis.cache["in_modes"], analysis.cache["out_modes"]
        if isinstance(rank, (str, float)):
            cores = tt_svd(layer.weight.detach(), n, m, rank)
            analysis.cache["cores"] = cores
            return tuple(c.shape[-1] for c in cores[:-1])
        if isinstance(rank, dict):
            r = max([1] + [r for r in range(1, max(analysis.full) + 1)
                           if budget.fits(self.cost(layer, tuple(min(r, f) for f in analysis.full), analysis))])
            return tuple(min(r, f) for f in analysis.full)
        rs = rank if isinstance(rank, (tuple, list)) else [rank] * len(analysis.full)
        if len(rs) != len(analysis.full):
            raise InvalidInputError(f"rank {tuple(rs)}: a TT layer of order {len(n)} has {len(analysis.full)} ranks")
        return tuple(min(r, f) for r, f in zip(rs, analysis.full))

    def cost(self, layer, ranks, analysis=None):
        n, m = (analysis.cache["in_modes"], analysis.cache["out_modes"]) if analysis else self._modes(layer, len(ranks) + 1)
        r = [1, *ranks, 1]
        params = sum(r[k] * n[k] * m[k] * r[k + 1] for k in range(len(n))) + (layer.out_features if layer.bias is not None else 0)
        macs = sum(r[k] * n[k] * math.prod(n[k + 1:]) * math.prod(m[:k + 1]) * r[k + 1] for k in range(len(n)))
        return params, 0, macs

    def factorize(self, layer, ranks, analysis, ctx):
        n, m = analysis.cache["in_modes"], analysis.cache["out_modes"]
        cores = analysis.cache.get("cores") or tt_svd(layer.weight.detach(), n, m, ranks)
        tt = TTLinear(n, m, [1, *ranks, 1], bias=layer.bias is not None)
        for k, c in enumerate(cores):
            getattr(tt, f"core_{k}").data.copy_(c.to(layer.weight.dtype))
        if layer.bias is not None:
            tt.bias.data.copy_(layer.bias.detach())
        with torch.no_grad():
            w_hat = tt.weight_matrix()
        return tt, w_hat

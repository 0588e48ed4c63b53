"""The 3-D decomposition of Zhang, Zou, He, Sun (TPAMI 2015): spatial (Jaderberg) + channel.

A D x D conv S -> T becomes three layers: D x 1 (S -> K), 1 x D (K -> R), 1 x 1 (R -> T).

1. Spatial (Jaderberg et al. 2014, scheme 2; `separable`): W ~ a D x 1 conv S -> K followed by a
   1 x D conv K -> T, from the rank-K SVD of the kernel reshaped to (S D) x (T D).
2. Channel (`channel`, Eqs. 4-11): the 1 x D conv K -> T is split into 1 x D K -> R and 1 x 1 R -> T
   by response reconstruction through the ReLU. The target is the *original* layer's responses
   r(y_i) while the regressor is what the spatial pair produces, from the inputs of the approximated
   network when earlier layers are decomposed (asymmetric, Sec. 3.3): the channel step also absorbs
   the error of the spatial step and of the layers below.

Ranks (K, R): K of the kernel SVD (full: min(S D, T D)), R of the responses (full: T). rank=1.0 keeps
both whole and reproduces the layer. Under a budget ({"compression": x}) the split between K and R
matters: `energy_split` takes the feasible (K, R) that maximises the product of the energy kept by
each factor (the kernel's singular values for K, the response PCA eigenvalues for R), the criterion
Zhang et al. use to share a budget among layers (their rank selection), applied here to the two
factors of one layer. On ResNet-20 it found lower response errors than any fixed ratio of K to R.

Cost per output pixel: S D K s_w (the D x 1 conv runs at the input width when the layer has a
horizontal stride s_w) + K D R + R T. It does not reduce MACs unless K and R are well below their full
values (at full rank it is larger than the layer), so the usual rule applies: a chain that would
not reduce both parameters and MACs is refused and the layer is kept.
"""
from __future__ import annotations

import torch
from torch import nn

from torchslim.lowrank.channel import approx_inputs, response_samples, split_responses
from torchslim.lowrank.core import METHODS, Analysis, Method, Skip, register_method
from torchslim.lowrank.ranks import resolve_ranks


def energy_split(spectra, full: tuple[int, int], fits) -> tuple[int, int]:
    """The (K, R) with fits((K, R)) true that maximises energy_K(K) * energy_R(R).

    energy_X(r): fraction of sum sigma^2 in the leading r values of that factor's spectrum; for each K
    the largest feasible R is taken (energy grows with R). (1, 1) when nothing fits."""
    (sk, _), (sr, _) = spectra
    ek, er = (torch.cumsum(s.double() ** 2, 0) / (s.double() ** 2).sum().clamp_min(1e-30) for s in (sk, sr))
    best, best_score = (1, 1), -1.0
    for K in range(1, full[0] + 1):
        if not fits((K, 1)):
            break  # cost grows with K
        lo, hi = 1, full[1]  # largest R that fits
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if fits((K, mid)) else (lo, mid - 1)
        score = float(ek[min(K, len(ek)) - 1] * er[min(lo, len(er)) - 1])
        if score > best_score:
            best, best_score = (K, lo), score
    return best


@register_method("zhang3d")
class Zhang3D(Method):
    """Conv2d (DxD) -> Dx1 (S->K), 1xD (K->R), 1x1 (R->T); ranks (K, R)."""

    paper = "Zhang et al. 2015 (TPAMI), 3-D decomposition (Jaderberg spatial + asymmetric channel)"
    needs_data = True
    asymmetric = True

    def skip_reason(self, layer):
        return METHODS.get("separable").skip_reason(layer)  # grouped, or 1x1 / Dx1 already separable

    def analyze(self, layer, need_spectra, ctx=None):
        if ctx is None or ctx.inputs is None:
            raise Skip("needs calibration inputs (pass data=...)")
        spatial = METHODS.get("separable").analyze(layer, need_spectra)
        U, a, c = response_samples(layer, ctx.inputs, ctx, layer.out_channels)
        Uc = U - U.mean(1, keepdim=True)
        s = torch.linalg.eigvalsh(Uc @ Uc.T).flip(0).clamp_min(0).sqrt()
        return Analysis(spatial.spectra + [(s, tuple(U.shape))], spatial.full + (layer.out_channels,),
                        {**spatial.cache, "U": U, "a": a, "c": c})

    def resolve(self, layer, rank, analysis, budget):
        if budget is not None:  # {"compression": x} / {"macs": x}: the best split of the budget
            return energy_split(analysis.spectra, analysis.full, lambda r: budget.fits(self.cost(layer, r)))
        return resolve_ranks(rank, analysis.spectra, analysis.full)

    def cost(self, layer, ranks):
        K, R = ranks
        T, S, kh, kw = layer.weight.shape
        return S * kh * K + K * kw * R + R * T + T, 0, S * kh * K * layer.stride[1] + K * kw * R + R * T

    def factorize(self, layer, ranks, analysis, ctx):
        K, R = ranks
        (vert, horiz), _ = METHODS.get("separable").factorize(layer, (K,), analysis, ctx)
        k = analysis.cache
        x_hat = approx_inputs(ctx)
        spatial = nn.Sequential(vert, horiz).to(layer.weight.dtype)
        U_hat = response_samples(spatial, x_hat, ctx, layer.out_channels)[0]
        first, last, ctx.options["response_error"] = split_responses(horiz, R, k["U"], U_hat, k["a"], k["c"],
                                                                     ctx.options)
        V = vert.weight.detach().double()[..., 0]  # (K, S, kh)
        H = first.weight.detach().double()[:, :, 0, :]  # (R, K, kw)
        P = last.weight.detach().double()[:, :, 0, 0]  # (T, R)
        w_hat = torch.einsum("tr,rki,ksj->tsji", P, H, V)
        return nn.Sequential(vert, first, last), w_hat.to(layer.weight.dtype)


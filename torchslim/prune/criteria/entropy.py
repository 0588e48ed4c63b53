"""Entropy of each channel's global-average-pooled response over images (Luo & Wu, "An Entropy-based
Pruning Method for CNN Compression", 2017, eq. 2): H_c = -sum_i p_i log p_i over m bins (options["bins"],
default 100 as in the paper). Low entropy = the channel carries little information."""
import torch

from torchslim.prune.criteria.base import ScoreContext, collect_activations, sites_to_units, register_criterion


@register_criterion("entropy", needs_data=True)
def entropy(ctx: ScoreContext):
    ctx.need_data("entropy")
    m = int(ctx.options.get("bins", 100))
    gap: dict[str, list] = {}
    collect_activations(ctx, lambda s, a, y: gap.setdefault(s, []).append(
        a.flatten(2).mean(2) if a.dim() > 2 else a))
    out = {}
    for s, parts in gap.items():
        v = torch.cat(parts)  # (images, channels)
        lo, hi = v.min(0).values, v.max(0).values
        idx = ((v - lo) / (hi - lo).clamp(min=1e-12) * m).long().clamp(0, m - 1)
        hist = torch.zeros(v.shape[1], m).scatter_add_(1, idx.t(), torch.ones_like(idx.t(), dtype=torch.float))
        p = hist / hist.sum(1, keepdim=True)
        out[s] = -(p * p.clamp(min=1e-12).log()).sum(1)
    return sites_to_units(ctx, out)

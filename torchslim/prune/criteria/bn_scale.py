"""BN scaling factor |gamma| (Liu et al., "Learning Efficient Convolutional Networks through Network
Slimming", ICCV 2017). Units without a norm layer fall back to their filters' L1 norm."""
import torch

from torchslim.prune.criteria.base import ScoreContext, weight_scores, register_criterion


@register_criterion("bn_scale")
def bn_scale(ctx: ScoreContext):
    gamma = weight_scores(ctx.graph, lambda rows: rows.abs().mean(1), kinds=("norm",), names=("weight",))
    has = weight_scores(ctx.graph, lambda rows: torch.ones(len(rows)), kinds=("norm",), names=("weight",)) > 0
    l1 = weight_scores(ctx.graph, lambda rows: rows.abs().mean(1))
    return torch.where(has, gamma, l1)

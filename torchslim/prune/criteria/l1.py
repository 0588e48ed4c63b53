"""L1 norm of each filter (Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017, sec. 3.1):
s_j = sum |F_j|; coupled filters (residual stages) average their norms."""
from torchslim.prune.criteria.base import ScoreContext, weight_scores, register_criterion


@register_criterion("l1")
def l1(ctx: ScoreContext):
    return weight_scores(ctx.graph, lambda rows: rows.abs().sum(1))

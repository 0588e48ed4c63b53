"""L2 norm of each filter (the variant Li et al. 2017 compare with L1): s_j = ||F_j||_2."""
from torchslim.prune.criteria.base import ScoreContext, weight_scores, register_criterion


@register_criterion("l2")
def l2(ctx: ScoreContext):
    return weight_scores(ctx.graph, lambda rows: rows.pow(2).sum(1).sqrt())

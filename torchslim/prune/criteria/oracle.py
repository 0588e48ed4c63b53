"""Oracle: the loss change when each unit alone is removed (Molchanov et al. 2017, sec. 2.2, the
reference ranking). Costs one evaluation per unit: for small models only."""
import torch

from torchslim.prune.criteria.base import ScoreContext, masked_loss, register_criterion


@register_criterion("oracle", needs_data=True)
def oracle(ctx: ScoreContext):
    batches = ctx.need_data("oracle") and ctx.val_batches()
    g = ctx.graph
    base = masked_loss(ctx, batches, g.empty_plan())
    scores = torch.zeros(g.num_units)
    for u in range(g.num_units):
        plan = g.empty_plan()
        plan[u] = True
        scores[u] = abs(masked_loss(ctx, batches, plan) - base)
    return scores

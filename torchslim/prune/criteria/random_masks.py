"""Random masks (Anwar & Sung, "Coarse Pruning of Convolutional Neural Networks with Random Masks", 2016):
draw N candidate masks that remove `ratio` of every group at random, evaluate each on validation
batches, keep the best. Returned as scores so the usual selection picks exactly that mask.
options: "candidates" (N, default 20), "seed"."""
import torch

from torchslim.errors import InvalidInputError
from torchslim.prune.criteria.base import ScoreContext, masked_loss, register_criterion


@register_criterion("random_masks", needs_data=True)
def random_masks(ctx: ScoreContext):
    batches = ctx.need_data("random_masks") and ctx.val_batches()
    if ctx.ratio is None:
        raise InvalidInputError("random_masks needs the pruning ratio (uniform allocation)")
    g = ctx.graph
    gen = torch.Generator().manual_seed(int(ctx.options.get("seed", 0)))
    best, best_loss = None, float("inf")
    for _ in range(int(ctx.options.get("candidates", 20))):
        plan = g.empty_plan()
        for grp in g.groups:
            k = min(int(ctx.ratio * len(grp)), len(grp) - 1)
            plan[grp.units[torch.randperm(len(grp), generator=gen)[:k]]] = True
        loss = masked_loss(ctx, batches, plan)
        if loss < best_loss:
            best, best_loss = plan, loss
    ctx.state["random_masks_loss"] = best_loss
    return (~best).float() + 0.5 * torch.rand(g.num_units, generator=gen)

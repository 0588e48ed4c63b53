"""Random scores: the baseline every criterion should beat (seeded by options["seed"], default 0)."""
import torch

from torchslim.prune.criteria.base import ScoreContext, register_criterion


@register_criterion("random")
def random_scores(ctx: ScoreContext):
    g = torch.Generator().manual_seed(int(ctx.options.get("seed", 0)))
    return torch.rand(ctx.graph.num_units, generator=g)

"""Average Percentage of Zeros after the activation (Hu et al., "Network Trimming", 2016, eq. 1):
APoZ_c = mean over images and positions of [a_c == 0]; score = 1 - APoZ (mostly-zero channels go first)."""
import torch

from torchslim.prune.criteria.base import ScoreContext, collect_activations, sites_to_units, register_criterion


@register_criterion("apoz", needs_data=True)
def apoz(ctx: ScoreContext):
    ctx.need_data("apoz")
    zeros: dict[str, torch.Tensor] = {}
    count: dict[str, int] = {}

    def fn(site, a, y):
        z = (a <= 0).float().transpose(0, 1).reshape(a.shape[1], -1)
        zeros[site] = zeros.get(site, 0) + z.sum(1)
        count[site] = count.get(site, 0) + z.shape[1]

    collect_activations(ctx, fn)
    return sites_to_units(ctx, {s: 1 - zeros[s] / count[s] for s in zeros})

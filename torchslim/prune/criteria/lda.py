"""Class-discriminative score (Tian et al., "Deep LDA-Pruned Nets", 2017): each channel's "fire" value
(its maximum response over positions) per image; score = between-class / within-class scatter of the
fire values (a per-channel Fisher ratio). Channels that do not separate classes go first."""
import torch

from torchslim.prune.criteria import CRITERIA
from torchslim.prune.criteria.base import ScoreContext, collect_activations, sites_to_units


@CRITERIA.register("lda")
def lda(ctx: ScoreContext):
    ctx.need_data("lda")
    fires: dict[str, list] = {}
    labels: dict[str, list] = {}

    def fn(s, a, y):
        fires.setdefault(s, []).append(a.flatten(2).amax(2) if a.dim() > 2 else a)
        labels.setdefault(s, []).append(y)

    collect_activations(ctx, fn)
    out = {}
    for s in fires:
        f, y = torch.cat(fires[s]).double(), torch.cat(labels[s])
        mu = f.mean(0)
        sb = torch.zeros(f.shape[1], dtype=torch.float64)
        sw = torch.zeros(f.shape[1], dtype=torch.float64)
        for k in torch.unique(y):
            fk = f[y == k]
            sb += len(fk) * (fk.mean(0) - mu) ** 2
            sw += ((fk - fk.mean(0)) ** 2).sum(0)
        out[s] = (sb / (sw + 1e-12)).float()
    return sites_to_units(ctx, out)

"""Sensitivity analysis (Li et al. 2017, fig. 2; Distiller): prune each group alone at 10 ... 90 % and
evaluate, to see which layers tolerate pruning. The result feeds `allocation="layers"`."""
from __future__ import annotations

import copy
import fnmatch
from dataclasses import dataclass, field

import torch
from torch import nn

from torchslim.graph import ChannelGraph
from torchslim.prune.allocation import select
from torchslim.prune.criteria import CRITERIA, ScoreContext
from torchslim.prune.surgery import apply_plan
from torchslim.train import evaluate
from torchslim.train.distributed import map_over_ranks


@dataclass
class Sensitivity:
    baseline: float
    ratios: list[float]
    curves: dict[str, list[float]] = field(default_factory=dict)  # group -> top-1 at each ratio

    def layer_ratios(self, max_drop: float = 2.0) -> dict[str, float]:
        """Per group, the largest ratio whose accuracy drop stays within `max_drop` points."""
        out = {}
        for name, accs in self.curves.items():
            ok = [r for r, a in zip(self.ratios, accs) if self.baseline - a <= max_drop]
            out[name] = max(ok) if ok else 0.0
        return out

    def rows(self) -> list[dict]:
        return [{"group": n, **{f"{int(r * 100)}%": round(a, 2) for r, a in zip(self.ratios, accs)}}
                for n, accs in self.curves.items()]

    def plot(self, path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 5))
        for n, accs in self.curves.items():
            ax.plot([r * 100 for r in self.ratios], accs, marker=".", label=n)
        ax.axhline(self.baseline, color="k", ls="--", lw=0.8)
        ax.set_xlabel("channels removed from this group alone (%)")
        ax.set_ylabel("top-1 (%)")
        ax.set_title("pruning sensitivity per group")
        if len(self.curves) <= 24:
            ax.legend(fontsize=6, ncol=2)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)


def sensitivity(model: nn.Module, example_input: torch.Tensor, data, *, criterion: str = "l1",
                ratios=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9), max_batches: int | None = 10,
                split: str = "val", groups=None, progress: bool = False) -> Sensitivity:
    """Prune every group alone at each ratio (weight criterion scores, computed once) and evaluate.

    `groups`: group-name patterns (fnmatch) to scan; None scans every group. Under torchrun the
    (group, ratio) evaluations are split across the ranks and every rank returns the whole result.

    Example:
        >>> s = sensitivity(model, torch.randn(1, 3, 32, 32), get_data("cifar10"), max_batches=4)
        >>> s.plot("sensitivity.png"); prune(model, "l1", allocation="layers", layer_ratios=s.layer_ratios(), ratio=0.5)
    """
    loader = data.split(split)
    base = evaluate(model, loader, max_batches=max_batches)["top1"]
    graph = ChannelGraph(model, example_input)
    scores = CRITERIA.get(criterion)(ScoreContext(model, graph, data))
    names = [g.name for g in graph.groups if groups is None or any(fnmatch.fnmatch(g.name, p) for p in groups)]

    def pruned_alone(job) -> float:
        name, r = job
        m = copy.deepcopy(model)
        gm = ChannelGraph(m, example_input)
        others = tuple(x.name for x in gm.groups if x.name != name)
        apply_plan(m, gm, select(gm, scores, r, skip=others))
        return evaluate(m, loader, max_batches=max_batches)["top1"]

    # independent (group, ratio) jobs: under torchrun each rank takes its share, every rank gets all
    accs = map_over_ranks(pruned_alone, [(n, r) for n in names for r in ratios])
    result = Sensitivity(base, list(ratios))
    for i, name in enumerate(names):
        result.curves[name] = accs[i * len(ratios):(i + 1) * len(ratios)]
        if progress:
            print(f"{name}: " + " ".join(f"{a:.1f}" for a in result.curves[name]), flush=True)
    return result

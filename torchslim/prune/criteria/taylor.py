"""First-order Taylor expansion (Molchanov et al., "Pruning Convolutional Neural Networks for Resource
Efficient Inference", ICLR 2017, eq. 8): Theta(z_c) = | 1/M sum_m a_m * dC/da_m | over the M positions
of feature map c, averaged over examples; then L2-normalised per layer (eq. 9) and, with the FLOPs
regulariser (eq. 10), Theta - lambda * FLOPs_c (FLOPs of the unit, normalised by the largest unit).

The sums accumulate during ordinary fine-tuning steps: pass `TaylorCallback(graph)` to
`torchslim.train.fit`; `score_taylor` then reads it. Without one, a short pass over
`ctx.batches` training batches computes gradients (no weight update).
options: "flops_lambda" (default 1e-3 as in the paper).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from torchslim.prune.criteria.base import ScoreContext, per_unit, register_criterion
from torchslim.train import Callback


def _out_dim(module) -> int:
    """The weight dim of a layer's output channels: 1 for transposed convs (in, out / groups, k, k), else 0."""
    return 1 if isinstance(module, (torch.nn.ConvTranspose1d, torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d)) else 0


class TaylorCallback(Callback):
    """Accumulates |mean_positions(a * g)| per output channel of every prunable conv/linear."""

    def __init__(self, graph):
        self.graph = graph
        self.uses = {u.module: i for i, u in enumerate(graph.uses)
                     if u.kind == "out" and u.name == "weight" and u.dim == _out_dim(graph.model.get_submodule(u.module))}
        self.sums: dict[str, torch.Tensor] = {}
        self.count: dict[str, int] = {}
        self.handles: list = []

    def _hook(self, name):
        channel_last = isinstance(self.graph.model.get_submodule(name), torch.nn.Linear)

        def forward_hook(module, inp, out):
            if not out.requires_grad:
                return
            a = out.detach()

            def grad_hook(g):
                if channel_last:  # linear: features on the last dim
                    ag = (a * g).reshape(-1, a.shape[-1])
                else:  # conv: mean over the M positions of each map
                    ag = (a * g).flatten(2).mean(2) if a.dim() > 2 else a * g
                self.sums[name] = self.sums.get(name, 0) + ag.abs().sum(0).detach().cpu()
                self.count[name] = self.count.get(name, 0) + ag.shape[0]

            out.register_hook(grad_hook)
        return forward_hook

    def on_fit_begin(self, model, optimizer=None):
        self.remove()
        for name in self.uses:
            self.handles.append(model.get_submodule(name).register_forward_hook(self._hook(name)))

    def on_fit_end(self, model):
        self.remove()

    def remove(self):
        for h in self.handles:
            h.remove()
        self.handles = []

    def scores(self, flops_lambda: float = 1e-3) -> torch.Tensor:
        g = self.graph
        values = {}
        for n, s in self.sums.items():
            i, v = self.uses[n], s / max(self.count[n], 1)
            width = len(g.unit_of[i])  # a grouped transposed conv's out use spans one group's channels:
            values[i] = v.view(-1, width).sum(0) if v.numel() != width else v  # its groups add up
        theta = per_unit(g, values, reduce="sum")
        for grp in g.groups:  # eq. 9: layer-wise L2 normalisation
            t = theta[grp.units]
            theta[grp.units] = t / t.norm().clamp(min=1e-12)
        if flops_lambda:
            cost = g.unit_macs()
            theta = theta - flops_lambda * cost / cost.max().clamp(min=1)
        return theta


@register_criterion("taylor", needs_data=True)
def taylor(ctx: ScoreContext):
    cb = ctx.state.get("taylor")
    if cb is None or cb.graph is not ctx.graph or not cb.sums:
        cb = TaylorCallback(ctx.graph)
        model = ctx.model
        was = model.training
        model.eval()  # gradients flow in eval mode too, and BN statistics stay untouched
        cb.on_fit_begin(model)
        for x, y in ctx.train_batches():
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
        cb.on_fit_end(model)
        model.zero_grad(set_to_none=True)
        model.train(was)
    return cb.scores(float(ctx.options.get("flops_lambda", 1e-3)))

"""Attention transfer (Zagoruyko & Komodakis 2017, "Paying More Attention to Attention", ICLR).

Activation-based (section 3.1): the attention map of an activation A (C x H x W) is
F(A) = sum_c |A_c|^p (eq. 1 with p = 2), flattened to Q and L2-normalised; the loss over matched
layer pairs j is (eq. 2)

    L_AT = beta / 2 * sum_j || Q_s^j / ||Q_s^j||_2 - Q_t^j / ||Q_t^j||_2 ||_p

We use the form of the authors' released code (szagoruyko/attention-transfer): the squared
difference averaged over the batch and the H*W positions, with beta = 1000; the paper states this
as "beta = 10^3 divided by the number of elements in the attention map and batch size".

Gradient-based (section 3.2, eq. 3): J = dL/dx, the input gradient of the cross entropy, for both
networks; the student is trained to match the teacher's (double backpropagation). We L2-normalise
J per image like the activation maps, so beta means the same in both modes.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from torchslim.distill.core import Batch, Term, feature_shapes, match_pairs
from torchslim.errors import InvalidInputError


def attention_map(a: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Q = vec(sum_c |A_c|^p), L2-normalised per image (eq. 1): shape (N, H*W).

    Example:
        >>> attention_map(torch.randn(4, 16, 8, 8)).shape
        torch.Size([4, 64])
    """
    if a.ndim != 4:
        raise InvalidInputError(f"attention maps need (N, C, H, W) activations, got shape {tuple(a.shape)}")
    q = a.abs().pow(p).mean(1) if p != 2 else a.pow(2).mean(1)  # mean = sum / C, removed by the normalisation
    return F.normalize(q.flatten(1), dim=1)


def at_loss(student_maps: Sequence[torch.Tensor], teacher_maps: Sequence[torch.Tensor],
            beta: float = 1000.0) -> torch.Tensor:
    """beta/2 * sum_j mean((Q_s^j - Q_t^j)^2) over normalised maps (eq. 2, released-code form)."""
    total = student_maps[0].new_zeros(())
    for qs, qt in zip(student_maps, teacher_maps):
        total = total + (qs - qt).pow(2).mean()
    return beta / 2 * total


def input_gradient(model, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor | None = None,
                   create_graph: bool = False) -> torch.Tensor:
    """J = d CE / dx per image (summed loss, so J does not depend on the batch size), L2-normalised."""
    if logits is None:
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(x)
    with torch.enable_grad():
        loss = F.cross_entropy(logits, y, reduction="sum")
        (g,) = torch.autograd.grad(loss, x, create_graph=create_graph)
    return F.normalize(g.flatten(1), dim=1)


class AttentionTransfer(Term):
    """Activation- or gradient-based attention transfer as a distillation term.

    Args:
        beta: weight of the AT loss (1000 in the paper's code for activation maps).
        p: exponent of the attention map (2 in the paper).
        pairs: "auto" (match layers by output spatial size: the ends of ResNet stages) or a list of
            (student layer, teacher layer) names; the two maps of a pair need the same H x W.
        mode: "activation" (section 3.1) or "gradient" (section 3.2, needs double backprop: ~2x slower).

    Example:
        >>> loss = DistillLoss(teacher, [KD(), AttentionTransfer(beta=1000)])  # KD + AT
    """

    def __init__(self, beta: float = 1000.0, p: float = 2.0, pairs="auto", mode: str = "activation"):
        super().__init__()
        if mode not in ("activation", "gradient"):
            raise InvalidInputError(f"attention transfer mode {mode!r} is unknown; use 'activation' or 'gradient'")
        self.beta, self.p, self.mode = float(beta), float(p), mode
        self.pairs = None if pairs == "auto" else [tuple(pr) for pr in pairs]
        self.needs_input_grad = mode == "gradient"

    def setup(self, student, teacher, x):
        if self.mode == "gradient":
            return
        if self.pairs is None:
            self.pairs = match_pairs(student, teacher, x)
        self.student_layers = [s for s, _ in self.pairs]
        self.teacher_layers = [t for _, t in self.pairs]
        s_shapes = feature_shapes(student, self.student_layers, x)
        t_shapes = feature_shapes(teacher, self.teacher_layers, x)
        for s, t in self.pairs:
            if len(s_shapes[s]) != 3 or s_shapes[s][1:] != t_shapes[t][1:]:
                raise InvalidInputError(f"attention pair ({s!r}, {t!r}): student map {s_shapes[s]} and teacher map "
                                        f"{t_shapes[t]} need the same spatial size (C may differ)")

    def teacher_targets(self, t: Batch, teacher) -> dict[str, torch.Tensor]:
        if self.mode == "gradient":
            return {"grad": input_gradient(teacher, t.x, t.y)}
        return {str(j): attention_map(t.feats[tn], self.p) for j, (_, tn) in enumerate(self.pairs)}

    def loss(self, s: Batch, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.mode == "gradient":
            js = input_gradient(s.model, s.x, s.y, logits=s.logits, create_graph=True)
            return self.beta / 2 * (js - targets["grad"]).pow(2).mean()
        qs = [attention_map(s.feats[sn], self.p) for sn, _ in self.pairs]
        return at_loss(qs, [targets[str(j)] for j in range(len(self.pairs))], self.beta)

    def extra_repr(self) -> str:
        return f"mode={self.mode}, beta={self.beta}, p={self.p}, pairs={self.pairs}"

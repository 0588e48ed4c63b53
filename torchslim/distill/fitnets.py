"""FitNets hints (Romero et al. 2015, "FitNets: Hints for Thin Deep Nets", section 2.2).

A guided student layer v_g is mapped by a learned regressor r to the shape of the teacher's hint
layer u_h, and trained to match it (eq. 3): L_HT = 1/2 || u_h - r(v_g) ||^2. We use a 1x1
convolution as r (the paper's convolutional regressor with the spatial sizes already equal) and
the mean over elements, and train the hint jointly with the task loss instead of in a separate
first stage.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from torchslim.distill.core import Batch, Term, feature_shapes, match_pairs
from torchslim.errors import InvalidInputError


class Hint(Term):
    """Feature hints through learned 1x1 adapters (trained with the student: pass
    `DistillLoss.parameters()` to the optimizer, as `torchslim.distill` does).

    Args:
        weight: weight of the hint loss.
        pairs: "middle" (the middle of the size-matched layer pairs, as FitNets hints a middle
            layer), "all" (every size-matched pair) or a list of (student layer, teacher layer).

    Example:
        >>> loss = DistillLoss(teacher, [KD(), Hint(pairs=[("layer2", "layer2")])])
    """

    def __init__(self, weight: float = 1.0, pairs="middle"):
        super().__init__()
        self.weight = float(weight)
        self.pairs = [tuple(p) for p in pairs] if isinstance(pairs, (list, tuple)) else None
        self.mode = pairs if isinstance(pairs, str) else "given"
        if self.mode not in ("middle", "all", "given"):
            raise InvalidInputError(f"hint pairs {pairs!r}: use 'middle', 'all' or a list of (student, teacher) names")
        self.adapters = nn.ModuleList()

    def setup(self, student, teacher, x):
        if self.pairs is None:
            matched = match_pairs(student, teacher, x)
            self.pairs = [matched[len(matched) // 2]] if self.mode == "middle" else matched
        self.student_layers = [s for s, _ in self.pairs]
        self.teacher_layers = [t for _, t in self.pairs]
        s_shapes = feature_shapes(student, self.student_layers, x)
        t_shapes = feature_shapes(teacher, self.teacher_layers, x)
        if len(self.adapters) == len(self.pairs):
            return  # already built (e.g. restored)
        device = next((p.device for p in student.parameters()), x.device)
        for s, t in self.pairs:
            ss, ts = s_shapes[s], t_shapes[t]
            if len(ss) != 3 or len(ts) != 3 or ss[1:] != ts[1:]:
                raise InvalidInputError(f"hint pair ({s!r}, {t!r}): student features {ss} and teacher features {ts} "
                                        "need (C, H, W) with the same H x W")
            self.adapters.append(nn.Conv2d(ss[0], ts[0], 1, bias=False).to(device))

    def teacher_targets(self, t: Batch, teacher) -> dict[str, torch.Tensor]:
        return {str(j): t.feats[tn] for j, (_, tn) in enumerate(self.pairs)}

    def loss(self, s: Batch, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        total = s.logits.new_zeros(())
        for j, ((sn, _), r) in enumerate(zip(self.pairs, self.adapters)):
            total = total + 0.5 * F.mse_loss(r(s.feats[sn]), targets[str(j)])
        return self.weight * total

    def extra_repr(self) -> str:
        return f"weight={self.weight}, pairs={self.pairs}"

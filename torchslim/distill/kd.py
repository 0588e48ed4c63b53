"""Knowledge distillation with soft targets (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge
in a Neural Network", section 2).

    L = (1 - alpha) * CE(z_s, y) + alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))

The T^2 factor keeps the soft term's gradients on the scale of the hard term's as T changes (the
gradient of the soft cross entropy scales as 1/T^2, section 2.1).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from torchslim.distill.core import Batch, Term
from torchslim.errors import InvalidInputError


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """T^2 * KL(p_t^T || p_s^T), averaged over the batch (Hinton et al. 2015, eq. 2 and section 2.1).

    Example:
        >>> kd_loss(torch.randn(8, 10), torch.randn(8, 10), temperature=4.0)
    """
    if student_logits.shape != teacher_logits.shape:
        raise InvalidInputError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                                f"{tuple(teacher_logits.shape)} differ; the two models need the same classes")
    T = temperature
    log_p_s = F.log_softmax(student_logits / T, dim=1)
    log_p_t = F.log_softmax(teacher_logits / T, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * (T * T)


class KD(Term):
    """Hinton KD as a distillation term.

    Args:
        temperature: T of the softmax; 2-20 in the paper, 4 is the common CIFAR choice.
        alpha: weight of the soft term; the hard-label cross entropy gets 1 - alpha.

    Example:
        >>> loss = DistillLoss(teacher, [KD(temperature=4, alpha=0.9)])
    """

    def __init__(self, temperature: float = 4.0, alpha: float = 0.9):
        super().__init__()
        if temperature <= 0 or not 0.0 <= alpha <= 1.0:
            raise InvalidInputError(f"KD needs temperature > 0 and 0 <= alpha <= 1, got T={temperature}, alpha={alpha}")
        self.temperature, self.alpha = float(temperature), float(alpha)
        self.hard_weight = 1.0 - self.alpha

    def teacher_targets(self, t: Batch, teacher) -> dict[str, torch.Tensor]:
        return {"logits": t.logits}

    def loss(self, s: Batch, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.alpha * kd_loss(s.logits, targets["logits"], self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, alpha={self.alpha}"

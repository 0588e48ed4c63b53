import copy

import pytest
import torch
import torch.nn.functional as F

from torchslim.distill import KD, DistillConfig, DistillLoss, distill_fit, kd_loss
from torchslim.errors import InvalidInputError
from torchslim.models import create_model
from torchslim.train import FitConfig


def test_kd_loss_is_t2_scaled_kl():
    torch.manual_seed(0)
    s, t = torch.randn(6, 10), torch.randn(6, 10)
    T = 3.0
    p_t = F.softmax(t / T, 1)
    manual = (p_t * (p_t.log() - F.log_softmax(s / T, 1))).sum(1).mean() * T * T
    assert torch.allclose(kd_loss(s, t, T), manual, atol=1e-6)
    assert kd_loss(t, t, T).abs() < 1e-6


def test_alpha_zero_is_plain_cross_entropy(digits_teacher):
    student = create_model("digits_cnn", width=8).eval()
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    loss, logits = DistillLoss(digits_teacher, [KD(alpha=0.0)])(student, x, y)
    assert torch.allclose(loss, F.cross_entropy(logits, y))


def test_class_count_mismatch_is_a_clear_error(digits_teacher):
    student = create_model("digits_cnn", width=8, num_classes=5)
    with pytest.raises(InvalidInputError, match="same number of classes"):
        DistillLoss(digits_teacher, [KD()]).setup(student, torch.randn(2, 1, 8, 8))
    with pytest.raises(InvalidInputError, match="same object"):
        DistillLoss(digits_teacher, [KD()]).setup(digits_teacher, torch.randn(2, 1, 8, 8))
    with pytest.raises(InvalidInputError):
        KD(alpha=1.5)


def test_kd_pulls_student_towards_teacher_and_leaves_teacher_frozen(digits, digits_teacher):
    teacher = digits_teacher
    before_t = copy.deepcopy(teacher.state_dict())
    for p in teacher.parameters():
        p.requires_grad_(True)
    torch.manual_seed(1)
    student = create_model("digits_cnn", width=8)
    x = torch.cat(digits.calibration_batches(256, split="val"))

    def gap():
        with torch.no_grad():
            return kd_loss(student.eval()(x), teacher(x), 1.0).item()

    start = gap()
    distill_fit(student, teacher, digits, "kd", DistillConfig(fit=FitConfig(
        epochs=3, lr=0.05, progress=False, eval_every=0)))
    assert gap() < 0.5 * start
    assert not teacher.training
    for k, v in teacher.state_dict().items():  # weights and BN statistics untouched
        assert torch.equal(v, before_t[k]), k
    assert all(p.requires_grad for p in teacher.parameters())  # restored after training

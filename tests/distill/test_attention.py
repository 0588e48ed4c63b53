import pytest
import torch

from torchslim.distill import (AttentionTransfer, DistillConfig, DistillLoss, at_loss, attention_map, distill_fit,
                               match_pairs)
from torchslim.errors import InvalidInputError
from torchslim.models import create_model
from torchslim.train import FitConfig


def test_attention_map_is_normalised_channel_sum():
    a = torch.randn(3, 5, 4, 4)
    q = attention_map(a)
    assert q.shape == (3, 16)
    assert torch.allclose(q.norm(dim=1), torch.ones(3))
    expected = a.pow(2).sum(1).flatten(1)
    assert torch.allclose(q, expected / expected.norm(dim=1, keepdim=True), atol=1e-6)
    assert torch.allclose(attention_map(a[:, torch.randperm(5)]), q, atol=1e-6)  # channel order is irrelevant
    assert torch.allclose(attention_map(a, p=1), torch.nn.functional.normalize(a.abs().sum(1).flatten(1)), atol=1e-6)


def test_at_loss_formula():
    qs, qt = [torch.rand(2, 9)], [torch.rand(2, 9)]
    assert torch.allclose(at_loss(qs, qt, beta=10.0), 5.0 * (qs[0] - qt[0]).pow(2).mean())
    assert at_loss(qs, qs) == 0


def test_pairs_match_resnet_stage_ends():
    x = torch.randn(2, 3, 32, 32)
    pairs = match_pairs(create_model("resnet20"), create_model("resnet56"), x)
    assert pairs == [("layer1", "layer1"), ("layer2", "layer2"), ("layer3", "layer3")]


def test_named_pairs_are_checked(digits_teacher):
    student = create_model("digits_cnn", width=8)
    x = torch.randn(2, 1, 8, 8)
    with pytest.raises(InvalidInputError, match="spatial size"):
        DistillLoss(digits_teacher, [AttentionTransfer(pairs=[("5", "12")])]).setup(student, x)
    with pytest.raises(InvalidInputError, match="no layer 'nope'"):
        DistillLoss(digits_teacher, [AttentionTransfer(pairs=[("nope", "5")])]).setup(student, x)


@pytest.mark.parametrize("mode", ["activation", "gradient"])
def test_attention_transfer_trains_student_maps_towards_teacher(digits, digits_teacher, mode):
    torch.manual_seed(0)
    student = create_model("digits_cnn", width=8)
    x, y = next(iter(digits.val))
    loss = DistillLoss(digits_teacher, [AttentionTransfer(beta=10.0, mode=mode)]).setup(student, x)
    term = loss.terms[0]

    def at_only():
        student.eval()
        ce = torch.nn.functional.cross_entropy(student(x), y)
        return (loss(student, x, y)[0] - ce).item()  # eval mode: the same forward

    start = at_only()
    assert start > 0
    distill_fit(student, digits_teacher, digits, "at", DistillConfig(
        beta=10.0, at_mode=mode, fit=FitConfig(epochs=1, lr=0.05, progress=False, eval_every=0,
                                               max_steps_per_epoch=8 if mode == "activation" else 4)))
    assert at_only() < start
    if mode == "activation":
        assert term.pairs == [("5", "5"), ("12", "12")]

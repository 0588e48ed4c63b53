import pytest
import torch

from torchslim.quant import LowBitConv2d, quantize
from torchslim.quant.binary import binarize, ternarize


def test_binary_weights_are_plus_minus_alpha_per_filter():
    w = torch.randn(4, 3, 3, 3)
    b = binarize(w)
    for c in range(4):
        vals = torch.unique(b[c].abs())
        assert len(vals) == 1 and vals.item() == pytest.approx(w[c].abs().mean().item(), rel=1e-5)


def test_ternary_weights_have_three_levels_and_twn_threshold():
    w = torch.randn(4, 64)
    t = ternarize(w)
    for c in range(4):
        assert len(torch.unique(t[c])) <= 3
        delta = 0.7 * w[c].abs().mean()
        assert ((t[c] == 0) == (w[c].abs() <= delta)).all()


def test_ste_gradient_reaches_latent_weights():
    w = torch.randn(4, 8, requires_grad=True)
    binarize(w).sum().backward()
    assert torch.equal(w.grad, (w.detach().abs() <= 1).float())


@pytest.mark.parametrize("method", ["binary", "ternary"])
def test_low_bit_training_runs_and_roundtrips(method, digits, tmp_path):
    from torchslim.io import load_model, save_model
    from torchslim.models import create_model
    from torchslim.train import FitConfig

    m = create_model("digits_cnn", width=8)
    q = quantize(m, method, data=digits, epochs=1,
                 fit=FitConfig(lr=0.05, progress=False, max_steps_per_epoch=3))
    assert sum(isinstance(x, LowBitConv2d) for x in q.modules()) == 3  # first conv stays float
    save_model(q, tmp_path / "b.safetensors")
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(load_model(tmp_path / "b.safetensors")(x), q.eval()(x))


@pytest.mark.parametrize("fn", [binarize, ternarize])
@pytest.mark.parametrize("shape", [(3, 7), (16, 3, 3, 3), (500, 800), (8, 1, 5, 5), (2, 20000)])
def test_low_bit_quantizers_are_idempotent_bit_for_bit(fn, shape):
    """The .slim file stores only alpha and the signs: quantizing the quantized weights must give them back."""
    torch.manual_seed(sum(shape))
    w = torch.randn(shape) * torch.rand(shape[0], *([1] * (len(shape) - 1)))  # a different scale per filter
    q = fn(w).detach()
    assert torch.equal(fn(q), q)

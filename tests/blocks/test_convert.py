import pytest
import torch
from torch import nn

from torchslim.analysis import profile
from torchslim.blocks import ConvertConfig, DepthwiseSeparableConv, separable_from_conv, to_separable
from torchslim.data import get_data
from torchslim.errors import InvalidInputError
from torchslim.io import load_model, save_model
from torchslim.models import create_model
from torchslim.train import FitConfig, fit


def test_svd_init_is_exact_when_the_rank_suffices():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 6, 3, padding=1, bias=True)
    x = torch.randn(2, 8, 7, 7)
    # groups=1: one group of rank M = 8 >= N = 6 reproduces the conv exactly
    block = separable_from_conv(conv, groups=1)
    assert torch.allclose(block(x), conv(x), atol=1e-5)
    # depthwise (rank 1 per input channel) only approximates it, but beats a random block
    dw = separable_from_conv(conv)
    rnd = separable_from_conv(conv, svd_init=False)
    err = lambda b: (b(x) - conv(x)).pow(2).mean()  # noqa: E731
    assert err(dw) < err(rnd)


def test_svd_init_with_one_group_is_exact_only_when_outputs_do_not_exceed_inputs():
    torch.manual_seed(0)
    x = torch.randn(2, 16, 7, 7)
    rel = lambda block, conv: float((block(x) - conv(x)).norm() / conv(x).norm())  # noqa: E731
    narrowing = nn.Conv2d(16, 16, 3, padding=1, bias=False)  # N = M: rank M suffices
    assert rel(separable_from_conv(narrowing, groups=1), narrowing) < 1e-5
    widening = nn.Conv2d(16, 32, 3, padding=1, bias=False)  # N = 32 > M = 16, though N <= M k^2 = 144
    assert rel(separable_from_conv(widening, groups=1), widening) > 0.3


def test_non_square_kernels_are_refused_by_name():
    with pytest.raises(InvalidInputError, match="'body.3'"):
        separable_from_conv(nn.Conv2d(8, 8, (1, 3)), name="body.3")


def test_convert_reconstructs_cuts_macs_and_round_trips(tmp_path):
    torch.manual_seed(0)
    data = get_data("digits", batch_size=64)
    model = create_model("digits_cnn", width=16)
    fit(model, data.train, config=FitConfig(epochs=1, lr=0.05, progress=False, eval_every=0))
    converted, rows = to_separable(model.eval(), data, ConvertConfig(calib_images=128, steps=30, lr=3e-3))
    assert [r["layer"] for r in rows] == ["3", "7", "10"]  # the 1-channel stem stays
    assert all(isinstance(converted.get_submodule(r["layer"]), DepthwiseSeparableConv) for r in rows)
    assert all(r["rel_err_reconstructed"] < r["rel_err_init"] for r in rows)
    assert profile(converted, (1, 8, 8)).macs < 0.5 * profile(model, (1, 8, 8)).macs
    path = save_model(converted, tmp_path / "c.safetensors")
    x = torch.randn(3, 1, 8, 8)
    assert torch.allclose(load_model(path)(x), converted(x), atol=1e-6)
    grouped, _ = to_separable(model, None, ConvertConfig(group_channels=4))
    assert grouped.get_submodule("7").groups == 4

import pytest
import torch
import torchvision
from torch import nn

from torchslim.analysis import profile
from torchslim.errors import InvalidInputError


@pytest.mark.parametrize("name, params_m, gmacs", [
    ("resnet18", 11.69, 1.82), ("mobilenet_v2", 3.50, 0.30), ("vgg16", 138.36, 15.47),
])
def test_totals_match_published_figures(name, params_m, gmacs):
    p = profile(torchvision.models.get_model(name), (3, 224, 224))
    assert p.params / 1e6 == pytest.approx(params_m, rel=0.01)
    assert p.macs / 1e9 == pytest.approx(gmacs, rel=0.01)


@pytest.mark.parametrize("kw", [
    dict(groups=1), dict(groups=4), dict(groups=16), dict(stride=2), dict(dilation=2, padding=2),
])
def test_conv_macs_closed_form(kw):
    conv = nn.Conv2d(16, 32, 3, padding=kw.pop("padding", 1), **kw)
    out = conv(torch.zeros(1, 16, 20, 20))
    p = profile(nn.Sequential(conv), (16, 20, 20))
    expected = out.shape[2] * out.shape[3] * 32 * (16 // conv.groups) * 9
    assert p.macs == expected
    assert p.layers[0].params == 32 * 16 // conv.groups * 9 + 32


def test_depthwise_separable_reduction():
    # MobileNet: depthwise + pointwise costs 1/N + 1/Dk^2 of the standard conv.
    n, m, dk, h = 64, 32, 3, 16
    std = profile(nn.Conv2d(m, n, dk, padding=1, bias=False), (m, h, h)).macs
    sep = profile(nn.Sequential(nn.Conv2d(m, m, dk, padding=1, groups=m, bias=False),
                                nn.Conv2d(m, n, 1, bias=False)), (m, h, h)).macs
    assert sep / std == pytest.approx(1 / n + 1 / dk**2)


def test_linear_bn_pool_and_sparsity_columns():
    lin = nn.Linear(100, 10)
    with torch.no_grad():
        lin.weight[:5] = 0
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.MaxPool2d(2), nn.Flatten(), nn.LazyLinear(100))
    model(torch.zeros(1, 3, 10, 10))
    model = nn.Sequential(model, lin)
    p = profile(model, (3, 10, 10))
    rows = {r.name: r for r in p.layers}
    assert rows["1"].macs == 100 * 10
    assert rows["1"].nonzero_params == 500 + 10
    assert rows["0.1"].macs == 0 and rows["0.1"].other_ops == 2 * 8 * 8 * 8
    assert p.nonzero_params < p.params
    assert p.to_dict()["totals"]["macs"] == p.macs


def test_functional_matmul_is_counted():
    class Attn(nn.Module):
        def forward(self, x):
            return x @ x.transpose(-1, -2)

    p = profile(Attn(), (1, 8, 4))
    assert p.functional_macs == 8 * 8 * 4


def test_bad_input_size_is_a_clear_error():
    with pytest.raises(InvalidInputError, match="input_size"):
        profile(nn.Conv2d(3, 4, 3), (3, 0, 4))
    with pytest.raises(InvalidInputError, match="Conv2d failed on an input of shape"):
        profile(nn.Conv2d(3, 4, 3), (5, 8, 8))

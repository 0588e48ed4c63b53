import pytest
import torch
from torch import nn

from torchslim.analysis import profile
from torchslim.blocks import ChannelShuffle, DepthwiseSeparableConv, ResNeXtBlock, ShuffleUnit
from torchslim.errors import InvalidInputError
from torchslim.io import load_model, save_model


def conv_macs(model, size):
    return profile(model, size).macs


@pytest.mark.parametrize("M,N,k,hw", [(32, 64, 3, 16), (64, 128, 3, 8), (16, 16, 5, 8)])
def test_depthwise_separable_macs_match_mobilenet_eq4_and_eq5(M, N, k, hw):
    block = DepthwiseSeparableConv(M, N, k)
    macs = conv_macs(block, (M, hw, hw))
    assert macs == k * k * M * hw * hw + M * N * hw * hw == DepthwiseSeparableConv.macs(M, N, k, hw)
    full = conv_macs(nn.Conv2d(M, N, k, padding=k // 2, bias=False), (M, hw, hw))
    assert macs / full == pytest.approx(1 / N + 1 / k ** 2)  # eq. 5


def test_width_multiplier_scales_cost_by_about_alpha_squared():
    M, N, hw, a = 64, 128, 8, 0.5
    full = conv_macs(DepthwiseSeparableConv(M, N), (M, hw, hw))
    thin = conv_macs(DepthwiseSeparableConv(int(a * M), int(a * N)), (int(a * M), hw, hw))
    assert thin == 9 * a * M * hw * hw + a * a * M * N * hw * hw  # MobileNets eq. 6
    assert 0.25 <= thin / full < 0.27


def test_resnext_block_params_and_macs_match_the_paper():
    block = ResNeXtBlock(256, 256, cardinality=32, bottleneck_width=4)
    conv_params = sum(m.weight.numel() for m in block.modules() if isinstance(m, nn.Conv2d))
    assert conv_params == 32 * (256 * 4 + 9 * 4 * 4 + 4 * 256) == 70144  # section 3.3: "~70k"
    assert conv_macs(block, (256, 8, 8)) == ResNeXtBlock.macs(256, 256, 32, 4, 8) == 64 * 70144
    # same cost as the ResNet bottleneck it replaces (256 -> 64 -> 64 -> 256): ~70k params (Xie et al. 3.3)
    assert abs(conv_params - (256 * 64 + 9 * 64 * 64 + 64 * 256)) / conv_params < 0.01


def test_shufflenet_unit_macs_match_closed_form():
    c, g, hw = 240, 3, 8
    unit = ShuffleUnit(c, c, groups=g)
    m = unit.mid_channels
    assert m == 60
    assert conv_macs(unit, (c, hw, hw)) == hw * hw * (2 * c * m // g + 9 * m) == ShuffleUnit.macs(c, m, g, hw)
    resnet = hw * hw * (2 * c * m + 9 * m * m)  # the ResNet bottleneck of the same widths (section 3.2)
    assert conv_macs(unit, (c, hw, hw)) < resnet / 2
    down = ShuffleUnit(120, 240, groups=3, stride=2)
    assert down(torch.randn(2, 120, 16, 16)).shape == (2, 240, 8, 8)
    with pytest.raises(InvalidInputError, match="must equal"):
        ShuffleUnit(120, 240, stride=1)


def test_channel_shuffle_interleaves_groups():
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert ChannelShuffle(2)(x).flatten().tolist() == [0, 3, 1, 4, 2, 5]
    assert ChannelShuffle(3)(x).flatten().tolist() == [0, 2, 4, 1, 3, 5]


@pytest.mark.parametrize("block,size", [
    (DepthwiseSeparableConv(8, 16, 3, 2), (8, 8, 8)),
    (DepthwiseSeparableConv(8, 16, 3, 1, groups=2, mid_norm=False, mid_act=False, out_norm=False, out_act=False,
                            bias=True), (8, 8, 8)),
    (ResNeXtBlock(16, 32, cardinality=4, bottleneck_width=2, stride=2), (16, 8, 8)),
    (ShuffleUnit(24, 48, groups=3, stride=2, first_grouped=False), (24, 8, 8)),
    (ShuffleUnit(48, 48, groups=3), (48, 8, 8)),
])
def test_blocks_round_trip_through_model_files(tmp_path, block, size):
    torch.manual_seed(0)
    model = nn.Sequential(block, nn.Flatten()).eval()
    for p in model.parameters():
        p.data.normal_()
    path = save_model(model, tmp_path / "b.safetensors", input_size=size)
    again = load_model(path)
    x = torch.randn(2, *size)
    assert torch.equal(again(x), model(x))
    assert type(again[0]) is type(block)

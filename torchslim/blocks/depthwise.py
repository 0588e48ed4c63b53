"""Depthwise-separable convolution (Howard et al. 2017, "MobileNets", section 3.1).

A D_K x D_K convolution from M to N channels costs D_K^2 * M * N * D_F^2 MACs (eq. 2); a depthwise
D_K x D_K conv per input channel followed by a 1x1 pointwise conv costs
D_K^2 * M * D_F^2 + M * N * D_F^2 (eq. 4), i.e. a fraction 1/N + 1/D_K^2 of it (eq. 5). The width
multiplier alpha scales M and N to alpha*M, alpha*N: cost roughly alpha^2 (section 3.3).

`groups` generalises the spatial step: groups = in_channels (default) is depthwise; fewer groups
give a grouped spatial conv whose groups each see in_channels/groups inputs (cost x in/groups).
"""
from __future__ import annotations

from torch import nn

from torchslim.errors import InvalidInputError


def scale_channels(channels: int, width_mult: float, divisor: int = 8, min_value: int | None = None) -> int:
    """alpha * channels rounded to a multiple of `divisor` (never below 90 % of the exact value)."""
    min_value = min_value or divisor
    c = max(min_value, int(channels * width_mult + divisor / 2) // divisor * divisor)
    return c + divisor if c < 0.9 * channels * width_mult else c


class DepthwiseSeparableConv(nn.Module):
    """Depthwise D_K x D_K conv (+BN+ReLU) then pointwise 1x1 conv (+BN+ReLU), MobileNet's Figure 3.

    Args:
        in_channels, out_channels: M and N.
        kernel_size, stride, padding: of the depthwise conv (padding default: kernel_size // 2).
        groups: groups of the spatial conv; None = in_channels (depthwise).
        mid_norm / mid_act: BN / ReLU after the spatial conv (MobileNet: both; a linear
            factorisation of one conv, as `convert` builds: neither).
        out_norm / out_act: BN / ReLU after the pointwise conv.
        bias: bias on the pointwise conv (when no BN follows).

    Example:
        >>> DepthwiseSeparableConv(32, 64, stride=2)(torch.randn(1, 32, 16, 16)).shape
        torch.Size([1, 64, 8, 8])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int | None = None, groups: int | None = None, mid_norm: bool = True, mid_act: bool = True,
                 out_norm: bool = True, out_act: bool = True, bias: bool = False):
        super().__init__()
        groups = in_channels if groups is None else groups
        if in_channels % groups:
            raise InvalidInputError(f"groups={groups} does not divide in_channels={in_channels}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = kernel_size, stride
        self.padding = kernel_size // 2 if padding is None else padding
        self.groups = groups
        self.mid_norm, self.mid_act, self.out_norm, self.out_act, self.bias = mid_norm, mid_act, out_norm, out_act, bias
        self.depthwise = nn.Conv2d(in_channels, in_channels, kernel_size, stride, self.padding, groups=groups,
                                   bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels) if mid_norm else nn.Identity()
        self.act1 = nn.ReLU(inplace=True) if mid_act else nn.Identity()
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=bias)
        self.bn2 = nn.BatchNorm2d(out_channels) if out_norm else nn.Identity()
        self.act2 = nn.ReLU(inplace=True) if out_act else nn.Identity()

    def forward(self, x):
        return self.act2(self.bn2(self.pointwise(self.act1(self.bn1(self.depthwise(x))))))

    @staticmethod
    def macs(in_channels: int, out_channels: int, kernel_size: int, out_hw: int, groups: int | None = None) -> int:
        """Closed form (MobileNets eq. 4): D_K^2 * M/groups*M * D_F^2 + M * N * D_F^2, per image."""
        g = in_channels if groups is None else groups
        return kernel_size ** 2 * (in_channels // g) * in_channels * out_hw ** 2 + in_channels * out_channels * out_hw ** 2

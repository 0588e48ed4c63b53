"""ShuffleNet unit (Zhang et al. 2018, "ShuffleNet", section 3.2, Figure 2(b, c)).

1x1 group conv (g groups) -> BN ReLU -> channel shuffle -> 3x3 depthwise conv (stride) -> BN ->
1x1 group conv -> BN; added to the input (stride 1) or concatenated with a 3x3 average pool of
it (stride 2); ReLU. With c input channels and m bottleneck channels a stride-1 unit costs
h*w*(2*c*m/g + 9*m) MACs, against h*w*(2*c*m + 9*m^2) for a ResNet bottleneck (section 3.2).
"""
from __future__ import annotations

import torch
from torch import nn

from torchslim.errors import InvalidInputError


class ChannelShuffle(nn.Module):
    """(N, g*n, H, W) -> reshape (N, g, n, H, W) -> transpose -> flatten: mixes channels across groups."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


class ShuffleUnit(nn.Module):
    """A ShuffleNet unit.

    Args:
        in_channels, out_channels: c in and out (stride 2: the branch makes out - in, the pooled input the rest).
        groups: g of the 1x1 group convs.
        stride: 1 (residual add; needs in == out) or 2 (concat with avg-pooled input).
        first_grouped: group the first 1x1 conv (the paper does not on the first unit of stage 2,
            whose input has few channels).
        bottleneck_ratio: m = out_channels * ratio (1/4 in the paper).

    Example:
        >>> ShuffleUnit(240, 240, groups=3)(torch.randn(1, 240, 8, 8)).shape
        torch.Size([1, 240, 8, 8])
    """

    def __init__(self, in_channels: int, out_channels: int, groups: int = 3, stride: int = 1,
                 first_grouped: bool = True, bottleneck_ratio: float = 0.25):
        super().__init__()
        self.in_channels, self.out_channels, self.groups, self.stride = in_channels, out_channels, groups, stride
        self.first_grouped, self.bottleneck_ratio = first_grouped, bottleneck_ratio
        branch_out = out_channels - in_channels if stride == 2 else out_channels
        if stride == 1 and in_channels != out_channels:
            raise InvalidInputError(f"a stride-1 ShuffleUnit adds its input: in_channels {in_channels} must equal "
                                    f"out_channels {out_channels}")
        if branch_out <= 0:
            raise InvalidInputError(f"stride-2 ShuffleUnit needs out_channels > in_channels, got {in_channels}->{out_channels}")
        m = int(round(out_channels * bottleneck_ratio / groups)) * groups
        g1 = groups if first_grouped else 1
        for c, g in ((in_channels, g1), (m, groups), (branch_out, groups)):
            if c % g:
                raise InvalidInputError(f"ShuffleUnit {in_channels}->{out_channels}: {c} channels not divisible by groups={g}")
        self.mid_channels = m
        self.gconv1 = nn.Conv2d(in_channels, m, 1, groups=g1, bias=False)
        self.bn1 = nn.BatchNorm2d(m)
        self.relu1 = nn.ReLU(inplace=True)
        self.shuffle = ChannelShuffle(g1) if g1 > 1 else nn.Identity()
        self.dwconv = nn.Conv2d(m, m, 3, stride, 1, groups=m, bias=False)
        self.bn2 = nn.BatchNorm2d(m)
        self.gconv2 = nn.Conv2d(m, branch_out, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(branch_out)
        self.pool = nn.AvgPool2d(3, 2, 1) if stride == 2 else nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.shuffle(self.relu1(self.bn1(self.gconv1(x))))
        out = self.bn3(self.gconv2(self.bn2(self.dwconv(out))))
        if self.stride == 2:
            return self.relu(torch.cat([self.pool(x), out], 1))
        return self.relu(x + out)

    @staticmethod
    def macs(channels: int, mid_channels: int, groups: int, hw: int) -> int:
        """Closed form of a stride-1 unit (section 3.2): h*w*(2*c*m/g + 9*m)."""
        return hw * hw * (2 * channels * mid_channels // groups + 9 * mid_channels)

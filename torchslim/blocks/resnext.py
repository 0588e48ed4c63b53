"""ResNeXt aggregated residual block (Xie et al. 2017, "Aggregated Residual Transformations for Deep
Neural Networks", Figure 3(c)): 1x1 conv to D = C*d channels, a 3x3 conv with C groups, 1x1 conv
back, plus the shortcut. Its parameters are C * (M*d + 3*3*d*d + d*N) (section 3.3, for M=N=256,
C=32, d=4: ~70k), and its MACs that times H*W at stride 1.
"""
from __future__ import annotations

import torch
from torch import nn


class ResNeXtBlock(nn.Module):
    """Aggregated transformations with `cardinality` C paths of `bottleneck_width` d channels each.

    Args:
        in_channels, out_channels: M and N.
        cardinality: C, the number of groups of the 3x3 conv.
        bottleneck_width: d, channels per group.
        stride: of the 3x3 conv (and of the projection shortcut).

    Example:
        >>> ResNeXtBlock(256, 256, cardinality=32, bottleneck_width=4)(torch.randn(1, 256, 8, 8)).shape
        torch.Size([1, 256, 8, 8])
    """

    def __init__(self, in_channels: int, out_channels: int, cardinality: int = 32, bottleneck_width: int = 4,
                 stride: int = 1):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.cardinality, self.bottleneck_width, self.stride = cardinality, bottleneck_width, stride
        D = cardinality * bottleneck_width
        self.conv1 = nn.Conv2d(in_channels, D, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(D)
        self.conv2 = nn.Conv2d(D, D, 3, stride, 1, groups=cardinality, bias=False)
        self.bn2 = nn.BatchNorm2d(D)
        self.conv3 = nn.Conv2d(D, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))

    @staticmethod
    def macs(in_channels: int, out_channels: int, cardinality: int, bottleneck_width: int, hw: int) -> int:
        """Closed form at stride 1, identity shortcut: H*W * C * (M*d + 9*d*d + d*N)."""
        d = bottleneck_width
        return hw * hw * cardinality * (in_channels * d + 9 * d * d + d * out_channels)

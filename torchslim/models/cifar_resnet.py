"""CIFAR ResNets of He et al. 2016 (section 4.2) with the parameter-free "option A" shortcut.

Parameter names match akamaster/pytorch_resnet_cifar10, so its checkpoints (in ../shared/data/weights)
load directly.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from torchslim.models.registry import register_model


class ChannelPadShortcut(nn.Module):
    """Option-A shortcut: subsample by `stride`, place the C_in channels at `offset` of C_out, zeros elsewhere.

    Pruning may later keep any subset of input channels at any output positions, so the placement is
    a list of output indices (`index`); while it is one contiguous run we use F.pad, which every
    runtime (ONNX included) handles well.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 2, index: list[int] | None = None):
        super().__init__()
        if index is None:
            offset = (out_channels - in_channels) // 2
            index = list(range(offset, offset + in_channels))
        if len(index) != in_channels or (index and (min(index) < 0 or max(index) >= out_channels)):
            raise ValueError(f"index must hold {in_channels} positions in [0, {out_channels})")
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.register_buffer("index", torch.tensor(index, dtype=torch.long), persistent=False)
        contiguous = index == list(range(index[0], index[0] + len(index))) if index else False
        self._pad = (index[0], out_channels - index[0] - in_channels) if contiguous else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        if self._pad is not None:
            return F.pad(x, (0, 0, 0, 0, self._pad[0], self._pad[1]))
        out = x.new_zeros(x.shape[0], self.out_channels, x.shape[2], x.shape[3])
        return out.index_copy(1, self.index, x)

    def extra_repr(self) -> str:
        return f"{self.in_channels}->{self.out_channels}, stride={self.stride}"


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.relu2 = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = ChannelPadShortcut(in_planes, planes, stride)

    def forward(self, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, num_blocks: int, num_classes: int = 10, widths=(16, 32, 64)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        in_planes = widths[0]
        for i, w in enumerate(widths):
            blocks = []
            for j in range(num_blocks):
                blocks.append(BasicBlock(in_planes, w, stride=2 if (i > 0 and j == 0) else 1))
                in_planes = w
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(widths[-1], num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(torch.flatten(self.avgpool(x), 1))


def _register(depth: int, checkpoint: str | None):
    n = (depth - 2) // 6

    @register_model(f"resnet{depth}", input_size=(3, 32, 32), num_classes=10, dataset="cifar10",
                    pretrained=checkpoint)
    def build(num_classes: int = 10) -> nn.Module:
        return CifarResNet(n, num_classes)

    build.__doc__ = f"CIFAR ResNet-{depth}: 3 stages of {n} basic blocks, widths 16/32/64, option-A shortcuts."
    return build


for _depth, _ckpt in [(20, "resnet20-*.th"), (32, "resnet32-*.th"), (44, "resnet44-*.th"),
                      (56, "resnet56-*.th"), (110, None)]:
    _register(_depth, _ckpt)

"""Small CIFAR students built from torchslim.blocks: a MobileNet-style and a ShuffleNet-style net.

Both keep the 32x32 input resolution in the stem (like the CIFAR ResNets) and downsample three times,
so their stage ends line up with a CIFAR ResNet's for attention transfer (32, 16, 8).
"""
from __future__ import annotations

import torch
from torch import nn

from torchslim.blocks.depthwise import DepthwiseSeparableConv, scale_channels
from torchslim.blocks.shuffle import ShuffleUnit
from torchslim.errors import InvalidInputError
from torchslim.models.registry import register_model

# (out channels, stride) of the depthwise-separable layers: MobileNet v1's Table 1 shortened for 32x32.
MOBILENET_CIFAR = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (256, 1)]
# ShuffleNet Table 1 output channels of stages 2-4 per group count g, halved for CIFAR.
SHUFFLENET_CIFAR = {1: (72, 144, 288), 2: (100, 200, 400), 3: (120, 240, 480), 4: (136, 272, 544),
                    8: (192, 384, 768)}


class MobileNetCifar(nn.Module):
    """conv3x3 stem, depthwise-separable layers, global pool, linear (MobileNets, Howard et al. 2017)."""

    def __init__(self, num_classes: int = 10, width_mult: float = 1.0):
        super().__init__()
        self.num_classes, self.width_mult = num_classes, width_mult
        c = scale_channels(32, width_mult)
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True))
        layers = []
        for out, stride in MOBILENET_CIFAR:
            out = scale_channels(out, width_mult)
            layers.append(DepthwiseSeparableConv(c, out, 3, stride))
            c = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(self.stem(x))), 1))


class ShuffleNetCifar(nn.Module):
    """conv3x3 stem (24 ch), three stages of ShuffleNet units (the first of each with stride 2), pool, linear."""

    def __init__(self, num_classes: int = 10, groups: int = 3, repeats: int = 2):
        super().__init__()
        if groups not in SHUFFLENET_CIFAR:
            raise InvalidInputError(f"shufflenet_cifar groups={groups}: choose one of {sorted(SHUFFLENET_CIFAR)}")
        self.num_classes, self.groups, self.repeats = num_classes, groups, repeats
        self.stem = nn.Sequential(nn.Conv2d(3, 24, 3, 1, 1, bias=False), nn.BatchNorm2d(24), nn.ReLU(inplace=True))
        c = 24
        for i, out in enumerate(SHUFFLENET_CIFAR[groups]):
            units = [ShuffleUnit(c, out, groups, stride=2, first_grouped=i > 0)]
            units += [ShuffleUnit(out, out, groups) for _ in range(repeats - 1)]
            setattr(self, f"stage{i + 2}", nn.Sequential(*units))
            c = out
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage4(self.stage3(self.stage2(self.stem(x))))
        return self.classifier(torch.flatten(self.pool(x), 1))


@register_model("mobilenet_cifar", input_size=(3, 32, 32), num_classes=10, dataset="cifar10")
def mobilenet_cifar(num_classes: int = 10, width_mult: float = 1.0) -> nn.Module:
    """MobileNet-style CIFAR net: ~20 M MACs and ~0.2 M parameters at width 1 (about alpha^2 of that at alpha)."""
    return MobileNetCifar(num_classes, width_mult)


@register_model("shufflenet_cifar", input_size=(3, 32, 32), num_classes=10, dataset="cifar10")
def shufflenet_cifar(num_classes: int = 10, groups: int = 3, repeats: int = 2) -> nn.Module:
    """ShuffleNet-style CIFAR net with `groups` g (1, 2, 3, 4, 8) and `repeats` units per stage."""
    return ShuffleNetCifar(num_classes, groups, repeats)

"""VGG-16 with batch norm for 32x32 inputs (the usual CIFAR variant: 13 convs, a 512-512-10 head)."""
from torch import nn

from torchslim.models.registry import register_model

CFG_16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class VGG(nn.Module):
    def __init__(self, cfg=CFG_16, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                c = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(c, 512), nn.ReLU(inplace=True), nn.Linear(512, num_classes)
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        return self.classifier(self.features(x))


@register_model("vgg16_cifar", input_size=(3, 32, 32), num_classes=10, dataset="cifar10")
def vgg16_cifar(num_classes: int = 10) -> nn.Module:
    """VGG-16-BN for CIFAR: 13 conv3x3+BN+ReLU in 5 stages, then 512 -> 512 -> classes."""
    return VGG(CFG_16, num_classes)

"""A small CNN for the 8x8 `digits` data set: the demo's model, trained in seconds on 2 cores."""
from torch import nn

from torchslim.models.registry import register_model


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


@register_model("digits_cnn", input_size=(1, 8, 8), num_classes=10, dataset="digits")
def digits_cnn(num_classes: int = 10, width: int = 32) -> nn.Module:
    """conv(w) conv(w) pool conv(2w) conv(2w) global-pool fc: about 60 k parameters at width 32."""
    return nn.Sequential(
        *_conv_bn(1, width), *_conv_bn(width, width), nn.MaxPool2d(2),
        *_conv_bn(width, 2 * width), *_conv_bn(2 * width, 2 * width),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, num_classes),
    )

"""LeNet-300-100 and LeNet-5 (Caffe variant) as used by Han et al., Deep Compression."""
from torch import nn

from torchslim.models.registry import register_model


@register_model("lenet300", input_size=(1, 28, 28), num_classes=10, dataset="mnist")
def lenet300(num_classes: int = 10) -> nn.Module:
    """784-300-100-10 fully connected net (266 k weights)."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 300), nn.ReLU(inplace=True),
        nn.Linear(300, 100), nn.ReLU(inplace=True),
        nn.Linear(100, num_classes),
    )


@register_model("lenet5", input_size=(1, 28, 28), num_classes=10, dataset="mnist")
def lenet5(num_classes: int = 10) -> nn.Module:
    """Caffe LeNet-5: conv5x5(20) pool conv5x5(50) pool fc500 fc10 (431 k weights)."""
    return nn.Sequential(
        nn.Conv2d(1, 20, 5), nn.MaxPool2d(2),
        nn.Conv2d(20, 50, 5), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(800, 500), nn.ReLU(inplace=True),
        nn.Linear(500, num_classes),
    )

"""Models by name: the reference models written here and the torchvision classification zoo.

    create_model("resnet56", pretrained=True)        # CIFAR ResNet with the shared checkpoint
    create_model("torchvision:mobilenet_v2")         # random init, never downloads
    create_model("timm:mixnet_s")                    # timm's models too (pip install 'torchslim[timm]')
    create_model("lenet5", weights="lenet5.safetensors")
"""
from torchslim.models.registry import MODELS, create_model, list_models, load_weights, model_input_size
from torchslim.models import lenet, cifar_resnet, vgg, small, efficient  # noqa: F401  (registration)

__all__ = ["MODELS", "create_model", "list_models", "load_weights", "model_input_size"]

import pytest
import torch

from torchslim.analysis import profile
from torchslim.io import load_model, save_model
from torchslim.models import create_model, list_models


@pytest.fixture(scope="module")
def resnet20_macs():
    return profile(create_model("resnet20"), (3, 32, 32)).macs


def test_students_are_registered():
    assert {"mobilenet_cifar", "shufflenet_cifar"} <= set(list_models())


@pytest.mark.parametrize("name,kwargs", [("mobilenet_cifar", {}), ("mobilenet_cifar", {"width_mult": 0.5}),
                                         ("shufflenet_cifar", {}), ("shufflenet_cifar", {"groups": 8})])
def test_students_run_are_small_and_round_trip(tmp_path, name, kwargs, resnet20_macs):
    model = create_model(name, **kwargs).eval()
    x = torch.randn(2, 3, 32, 32)
    assert model(x).shape == (2, 10)
    p = profile(model, (3, 32, 32))
    assert p.macs < resnet20_macs  # cheaper than the ResNet-20 student
    path = save_model(model, tmp_path / "m.safetensors")
    assert torch.equal(load_model(path)(x), model(x))


def test_mobilenet_width_multiplier_cuts_cost_about_quadratically():
    full = profile(create_model("mobilenet_cifar"), (3, 32, 32)).macs
    half = profile(create_model("mobilenet_cifar", width_mult=0.5), (3, 32, 32)).macs
    assert 0.25 < half / full < 0.35

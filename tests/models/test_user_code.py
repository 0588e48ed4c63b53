"""The user's own network by factory spec, saved files of it, and published torchvision weights."""
import os

import pytest
import torch

from torchslim.errors import InvalidInputError
from torchslim.io import load_model, save_model
from torchslim.models import create_model, user

NET = '''
from torch import nn

class Net(nn.Module):
    def __init__(self, width=4, classes=10):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(width, classes)

    def forward(self, x):
        return self.fc(self.body(x))

def build(width=4, num_classes=10):
    return Net(width, num_classes)

def headless(width=4):
    return Net(width)

def not_a_model():
    return 3
'''


@pytest.fixture
def net_file(tmp_path, monkeypatch):
    monkeypatch.setattr(user, "_TRUSTED", set())
    path = tmp_path / "my_net.py"
    path.write_text(NET)
    return path


def test_factory_from_a_file_with_kwargs_and_classes(net_file):
    m = create_model(f"{net_file}:build", width=6, num_classes=3)
    assert m.fc.in_features == 6 and m(torch.zeros(1, 3, 8, 8)).shape == (1, 3)
    m2 = create_model(f"{net_file}:headless", num_classes=5)  # no num_classes parameter: re-headed
    assert m2.fc.out_features == 5 and type(m2).__name__ == "Net"


def test_factory_from_a_module(tmp_path, monkeypatch):
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert create_model("mypkg.nets:build", width=2).fc.in_features == 2


@pytest.mark.parametrize("spec, needle", [
    ("missing.py:build", "file 'missing.py' does not exist"),
    ("no_such_pkg_xyz.nets:build", "module 'no_such_pkg_xyz.nets' cannot be imported"),
    ("{file}:nope", "has no 'nope'"),
    ("{file}:not_a_model", "returned int, not a torch.nn.Module"),
])
def test_bad_factory_specs_fail_in_one_line(net_file, spec, needle):
    with pytest.raises(InvalidInputError, match=needle) as e:
        create_model(spec.format(file=net_file))
    assert "\n" not in str(e.value)


def test_saved_user_network_loads_only_when_its_code_is_named(net_file, tmp_path):
    spec = f"{net_file}:build"
    m = create_model(spec, width=5).eval()
    m.fc = torch.nn.Linear(5, 7)  # changed after building: stored in the manifest
    path = save_model(m.eval(), tmp_path / "m.safetensors", input_size=(3, 8, 8))
    user._TRUSTED.clear()  # a new process: nothing named yet
    marker = tmp_path / "imported"
    net_file.write_text(NET + f"\nopen({str(marker)!r}, 'w').close()\n")
    with pytest.raises(InvalidInputError, match="--code"):
        load_model(path)
    assert not marker.exists()  # the file alone imported nothing
    again = load_model(path, code=spec)
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(m(x), again(x))


def test_published_torchvision_weights_from_the_hub_cache(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("TORCHSLIM_NO_DOWNLOAD", "1")
    with pytest.raises(InvalidInputError) as e:
        create_model("torchvision:mobilenet_v3_small", pretrained=True)
    cache = tmp_path / "hub" / "checkpoints"
    assert str(cache) in str(e.value) and "--weights" in str(e.value) and "\n" not in str(e.value)
    # a fake cache entry stands for the published file
    url = torchvision.models.get_model_weights("mobilenet_v3_small").DEFAULT.url
    ref = torchvision.models.mobilenet_v3_small()
    cache.mkdir(parents=True)
    torch.save(ref.state_dict(), cache / os.path.basename(url))
    m = create_model("torchvision:mobilenet_v3_small", pretrained=True).eval()
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(m(x), ref.eval()(x))
    five = create_model("torchvision:mobilenet_v3_small", pretrained=True, num_classes=5)
    assert five(x).shape == (1, 5) and torch.equal(five.features[0][0].weight, ref.features[0][0].weight)


def test_published_weights_that_cannot_be_downloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("TORCHSLIM_NO_DOWNLOAD", raising=False)

    def offline(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(InvalidInputError, match="could not be loaded from the torch hub cache .*--weights"):
        create_model("torchvision:mobilenet_v3_small", pretrained=True)

"""`timm:<name>` works wherever `torchvision:<name>` does (random init, never downloads)."""
import sys

import pytest
import torch

import torchslim
from torchslim.errors import InvalidInputError, MissingDependencyError, UnknownNameError
from torchslim.models import create_model, list_models, model_input_size

timm = pytest.importorskip("timm")


def test_timm_names_resolve_and_list():
    m = create_model("timm:resnet10t", num_classes=7).eval()
    assert type(m).__module__.startswith("timm.")
    assert m(torch.randn(1, 3, 32, 32)).shape == (1, 7)
    assert model_input_size("timm:resnet10t") == (3, 176, 176)  # its default pretrained config
    assert "timm:mixnet_s" in list_models("timm:mixnet*")
    with pytest.raises(UnknownNameError, match="no_such_model"):
        create_model("timm:no_such_model")
    with pytest.raises(InvalidInputError, match="never downloads"):
        create_model("timm:resnet10t", pretrained=True)


@pytest.mark.parametrize("name", ["mixnet_s", "convnext_atto"])
def test_timm_weights_file_and_saved_pruned_model_roundtrip(tmp_path, name):
    # mixnet: MixedConv2d's split sizes; convnext: LayerNorm2d and a block with its own layer scale
    src = create_model(f"timm:{name}", num_classes=10).eval()
    torch.save(src.state_dict(), tmp_path / "w.pt")
    m = create_model(f"timm:{name}", num_classes=10, weights=tmp_path / "w.pt").eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(m(x), src(x))
    p = torchslim.prune(m, x, "l1", 0.3)
    torchslim.save(p, tmp_path / "p.safetensors")
    q = torchslim.load(tmp_path / "p.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(q(x), p(x))


def test_recipe_and_cli_accept_timm_names(tmp_path):
    from torchslim.cli.main import main
    from torchslim.recipe.schema import ModelSpec

    assert ModelSpec(name="timm:resnet10t").name == "timm:resnet10t"
    assert main(["prune", "timm:resnet10t", "--input-size", "3,32,32", "--ratio", "0.3",
                 "-o", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "model.safetensors").exists()


def test_missing_timm_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm -> ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'torchslim\[timm\]'"):
        create_model("timm:resnet10t")
    assert not [n for n in list_models("*") if n.startswith("timm:")]

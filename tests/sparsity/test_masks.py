import copy

import pytest
import torch
from torch import nn

from torchslim.analysis import profile
from torchslim.errors import InvalidInputError
from torchslim.io import load_model, save_model
from torchslim.models import create_model
from torchslim.sparsity import (KeepMasks, MaskedConv2d, MaskedLinear, attach_masks, density_summary,
                                masked_layers, remove_masks, set_mask)
from torchslim.train import FitConfig, fit
from tests.sparsity.conftest import mlp


def test_masked_forward_is_w_times_m_and_keeps_parameters():
    m = nn.Sequential(nn.Conv2d(2, 4, 3), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    w0 = m[0].weight
    layers = attach_masks(m)
    assert isinstance(m[0], MaskedConv2d) and isinstance(m[0], nn.Conv2d) and isinstance(m[2], MaskedLinear)
    assert m[0].weight is w0 and set(layers) == {"0", "2"}
    mask = torch.rand_like(w0) > 0.5
    set_mask(m[0], mask, zero_weights=False)
    x = torch.randn(2, 2, 6, 6)
    ref = nn.functional.conv2d(x, w0 * mask, m[0].bias)
    assert torch.allclose(m[0](x), ref)
    with pytest.raises(InvalidInputError):
        set_mask(m[0], torch.ones(3, 3))


def test_straight_through_gradient_reaches_masked_weights():
    lin = attach_masks(nn.Sequential(nn.Linear(5, 3, bias=False)))["0"]
    set_mask(lin, torch.zeros(3, 5, dtype=torch.bool), zero_weights=False)
    x = torch.randn(4, 5)
    lin(x).sum().backward()
    assert lin.weight.grad.abs().sum() == 0  # plain masking: no gradient under the mask
    lin.weight.grad = None
    lin.straight_through = True
    out = lin(x)
    assert out.abs().sum() == 0  # the value still uses W * M
    out.sum().backward()
    assert lin.weight.grad.abs().sum() > 0


def test_keep_masks_holds_zeros_through_fit(digits):
    m = mlp()
    layers = attach_masks(m)
    for layer in layers.values():
        set_mask(layer, torch.rand_like(layer.weight) > 0.7)
    masks = {n: l.weight_mask.clone() for n, l in layers.items()}
    fit(m, digits.train, config=FitConfig(epochs=1, lr=0.1, max_steps_per_epoch=5, progress=False),
        callbacks=[KeepMasks()])
    for n, l in masked_layers(m):
        assert torch.equal(l.weight_mask, masks[n])
        assert (l.weight[~l.weight_mask] == 0).all()
        assert (l.weight[l.weight_mask] != 0).any()


def test_masks_survive_save_load_and_remove_masks_bakes(tmp_path):
    m = create_model("lenet5").eval()
    for layer in attach_masks(m).values():
        set_mask(layer, torch.rand_like(layer.weight) > 0.8, zero_weights=False)
    x = torch.randn(2, 1, 28, 28)
    path = save_model(m, tmp_path / "masked.safetensors")
    m2 = load_model(path)
    assert isinstance(m2[0], MaskedConv2d)
    assert torch.equal(m(x), m2(x))
    assert torch.equal(m2[0].weight_mask, m[0].weight_mask)
    baked = remove_masks(copy.deepcopy(m2))
    assert type(baked[0]) is nn.Conv2d and not hasattr(baked[0], "weight_mask")
    assert torch.allclose(baked(x), m(x), atol=1e-6)
    m3 = load_model(save_model(baked, tmp_path / "baked.safetensors"))
    assert torch.allclose(m3(x), m(x), atol=1e-6)
    d = density_summary(m3)
    assert 0.15 < d["density"] < 0.25


def test_analysis_table_shows_density_of_masked_layers():
    m = create_model("lenet300")
    for layer in attach_masks(m).values():
        set_mask(layer, torch.rand_like(layer.weight) > 0.9, zero_weights=False)
    p = profile(m, (1, 28, 28))
    rows = {l.name: l for l in p.layers}
    w = rows["1"]
    assert w.params == 784 * 300 + 300
    # the mask, not the raw weights, decides: weights under the mask are not zero here
    assert 0.08 < w.density < 0.13


def test_masks_are_stored_as_bits(tmp_path):
    """A masked model's file costs about 1/32 more than the dense one (bool masks packed 8 to a byte)."""
    m = create_model("lenet5").eval()
    dense = save_model(m, tmp_path / "dense.safetensors").stat().st_size
    for layer in attach_masks(m).values():
        set_mask(layer, torch.rand_like(layer.weight) > 0.5, zero_weights=True)
    masked = save_model(m, tmp_path / "masked.safetensors")
    assert masked.stat().st_size <= dense * 1.04
    m2 = load_model(masked)
    assert all(torch.equal(a.weight_mask, b.weight_mask) for a, b in zip(m.modules(), m2.modules())
               if hasattr(a, "weight_mask"))

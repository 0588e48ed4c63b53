import pytest
import torch
from torch import nn

import torchslim
from torchslim.analysis import estimate_energy, profile
from torchslim.data import get_data
from torchslim.errors import InvalidInputError
from torchslim.models import create_model
from torchslim.sparsity import EnergyAwareConfig, attach_masks, energy_aware_prune, restore_least_squares, set_mask


def test_least_squares_recovers_weights_on_their_support():
    torch.manual_seed(0)
    layer = attach_masks(nn.Sequential(nn.Linear(30, 8, bias=False)))["0"]
    mask = torch.rand(8, 30) > 0.5
    w_true = torch.randn(8, 30) * mask
    set_mask(layer, mask)  # zeroes the pruned part of the (random) current weights
    X = torch.randn(500, 30, dtype=torch.float64)
    Y = X @ w_true.double().T
    restore_least_squares(layer, X, Y, ridge=1e-10, iterations=100)
    torch.testing.assert_close(layer.weight.detach(), w_true, atol=1e-4, rtol=1e-4)
    assert torch.all(layer.weight.detach()[~mask] == 0)


def test_restoration_beats_plain_magnitude_on_the_layer_outputs():
    from torchslim.sparsity.energy_aware import _layer_io, _OriginalTargets, _rows

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(16, 16, 3))
    import copy

    original = copy.deepcopy(model)
    x = torch.randn(64, 3, 12, 12)
    layer = attach_masks(model)["2"]
    w = layer.weight.detach().abs()
    set_mask(layer, w > w.flatten().kthvalue(int(0.7 * w.numel())).values)
    rows, Y = _OriginalTargets(original, x, samples=4096)("2", layer)  # as energy_aware_prune samples them
    X = _rows(layer, _layer_io(model, "2", x)[0])[rows].double()
    before = float(((X @ layer.weight.detach().double().flatten(1).T) - Y).pow(2).mean())
    restore_least_squares(layer, X, Y)
    after = float(((X @ layer.weight.detach().double().flatten(1).T) - Y).pow(2).mean())
    assert after < 0.75 * before  # the magnitude-pruned weights are one feasible point of the fit


def test_prunes_the_most_energy_hungry_layer_first_and_reaches_the_target():
    torch.manual_seed(0)
    model = create_model("digits_cnn", width=8)
    calib = torch.randn(32, 1, 8, 8)
    before = estimate_energy(profile(model, (1, 8, 8)))
    hungriest = max((r for r in before if r.effective_macs), key=lambda r: r.total_pj).name
    steps = energy_aware_prune(model, calib, EnergyAwareConfig(target_energy=0.6, step=0.2))
    assert steps[0]["layer"] == hungriest
    assert steps[-1]["energy_fraction"] <= 0.6
    assert all(b["energy_fraction"] > a["energy_fraction"] for b, a in zip(steps, steps[1:]))
    with pytest.raises(InvalidInputError, match="target_energy"):
        energy_aware_prune(model, calib, EnergyAwareConfig(target_energy=1.5))


def test_sparsify_verb_runs_energy_aware_with_fine_tuning():
    data = get_data("digits", batch_size=64)
    model = create_model("digits_cnn", width=8)
    out, info = torchslim.sparsify(model, "energy-aware", sparsity=None, data=data, target_energy=0.7, step=0.25,
                                   epochs=1, calib_images=64, return_info=True)
    assert info["energy_fraction"] <= 0.7 and info["history"]
    assert info["density"]["density"] < 1.0


def test_layer_io_stops_the_forward_at_the_layer_and_keeps_its_pre_relu_output():
    from torchslim.sparsity.energy_aware import _layer_io

    torch.manual_seed(0)
    calls = []
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.Conv2d(4, 4, 3))
    model[2].register_forward_hook(lambda *a: calls.append(1))
    x = torch.randn(2, 3, 8, 8)
    xin, y = _layer_io(model, "0", x)
    assert torch.equal(xin, x) and torch.equal(y, model[0](x)) and (y < 0).any()  # not overwritten by the ReLU
    assert not calls  # nothing after layer 0 ran
    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.spare = nn.Linear(3, 2), nn.Linear(2, 2)  # spare: registered, never called

        def forward(self, x):
            return self.used(x)

    with pytest.raises(InvalidInputError, match="'spare' is not called"):
        _layer_io(Unused(), "spare", torch.randn(1, 3))

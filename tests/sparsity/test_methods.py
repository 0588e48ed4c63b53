"""Every registered method runs through `sparsify`, reaches roughly its target and keeps the model usable."""
import copy

import pytest
import torch

import torchslim
from torchslim.sparsity import (METHODS, NetworkSurgery, attach_masks, correlation_mask, density_summary,
                                masked_layers, set_mask)
from torchslim.train import FitConfig, evaluate, fit
from tests.sparsity.conftest import mlp

QUICK = FitConfig(lr=0.05, weight_decay=0, max_steps_per_epoch=6, progress=False)
ELEMENTWISE = {
    "magnitude": dict(epochs=1, rounds=2),
    "dns": dict(epochs=1, finetune_epochs=1),
    "iht": dict(cycles=2),
    "l1": dict(epochs=1, l1=1e-4),
    "correlation": dict(stat_batches=3),
}


@pytest.mark.parametrize("method", [m for m in METHODS if m not in ("ssl", "energy-aware")])  # own tests
def test_every_elementwise_method_reaches_its_target(method, digits, trained_mlp):
    sparse, info = torchslim.sparsify(trained_mlp, method, 0.8, data=digits, fit=QUICK,
                                      return_info=True, **ELEMENTWISE[method])
    d = info["density"]["density"]
    assert 0.15 < d < 0.25, (method, d)
    for _, l in masked_layers(sparse):
        assert (l.weight[~l.weight_mask] == 0).all()
        assert not l.straight_through
    assert evaluate(sparse, digits.val)["top1"] > 60


def test_dns_splices_connections_back(digits, trained_mlp):
    m = copy.deepcopy(trained_mlp)
    layers = attach_masks(m)
    surgery = NetworkSurgery(0.8, gamma=0.0)  # surgery at every step
    # cut a random 80 % first: DNS must re-grow the large weights the random cut removed
    for l in layers.values():
        set_mask(l, torch.rand_like(l.weight) > 0.8, zero_weights=False)
    before = {n: l.weight_mask.clone() for n, l in layers.items()}
    fit(m, digits.train, config=FitConfig(epochs=1, lr=0.05, max_steps_per_epoch=5, weight_decay=0, progress=False),
        callbacks=[surgery])
    spliced = sum(int((l.weight_mask & ~before[n]).sum()) for n, l in masked_layers(m))
    assert spliced > 0
    assert surgery.surgeries >= 5


def test_dns_crate_thresholds_from_layer_statistics(digits, trained_mlp):
    m = copy.deepcopy(trained_mlp)
    attach_masks(m)
    s = NetworkSurgery(crate=0.5, gamma=1.0)
    s.on_fit_begin(m, None)
    for n, l in masked_layers(m):
        w = l.weight.detach().abs()
        t = float(w.mean() + 0.5 * w.std())
        assert abs(s.centres[n] - t) < 1e-6
        assert (w[l.weight_mask] >= 0.9 * t - 1e-6).all()
    s.on_fit_end(m)


def test_correlation_mask_keeps_strongest_both_signs():
    r = torch.tensor([[0.9, 0.1, -0.05, -0.8, 0.3, -0.2]])
    mask = correlation_mask(r, 0.5)  # keep 3: 3 positive / 3 negative -> 2 positive, 1 negative (rounding)
    kept = set(torch.nonzero(mask[0]).flatten().tolist())
    assert {0, 3} <= kept and 1 not in kept and 2 not in kept and len(kept) == 3


def test_correlation_on_conv_layers(digits):
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(8 * 64, 10))
    sparse = torchslim.sparsify(model, "correlation", 0.5, data=digits, fit=QUICK, stat_batches=2)
    dens = {r["layer"]: r["density"] for r in density_summary(sparse)["layers"]}
    assert 0.4 < dens["0"] < 0.6 and 0.45 < dens["3"] < 0.6  # fan-in 9: keeps 4

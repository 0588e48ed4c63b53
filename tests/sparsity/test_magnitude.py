import copy

import pytest
import torch
from torch import nn

import torchslim
from torchslim.errors import InvalidInputError, UnknownNameError
from torchslim.sparsity import (AGPSchedule, MagnitudeConfig, attach_masks, density_summary, magnitude_masks,
                                masked_layers, prune_by_magnitude)
from torchslim.train import FitConfig, evaluate, fit
from tests.sparsity.conftest import mlp


def test_per_layer_global_and_dict_targets():
    torch.manual_seed(0)
    m = mlp()
    with torch.no_grad():
        m[3].weight.mul_(10)  # one layer of much larger weights
    g = copy.deepcopy(m)
    prune_by_magnitude(m, 0.8)
    for _, l in masked_layers(m):
        assert abs(l.density - 0.2) < 0.01
    prune_by_magnitude(g, 0.8, scope="global")
    dens = {n: l.density for n, l in masked_layers(g)}
    assert dens["3"] > 0.9 and dens["1"] < 0.2  # one global threshold spares the large layer
    assert abs(density_summary(g)["density"] - 0.2) < 0.01
    d = mlp()
    prune_by_magnitude(d, {"1": 0.5})
    dens = {n: l.density for n, l in masked_layers(d)}
    assert abs(dens["1"] - 0.5) < 0.01 and dens["3"] == 1.0
    with pytest.raises(InvalidInputError, match="unknown layer"):
        prune_by_magnitude(mlp(), {"nope": 0.5})
    with pytest.raises(InvalidInputError):
        prune_by_magnitude(mlp(), 1.0)


def test_quality_threshold_is_q_times_std():
    m = mlp()
    w = m[1].weight.detach().clone()
    prune_by_magnitude(m, quality=1.0)
    kept = m[1].weight_mask
    assert torch.equal(kept, w.abs() >= w.std())
    # uniform init U(-a, a): std = a / sqrt(3), so about 1 - 1/sqrt(3) = 42 % survive
    assert 0.38 < kept.float().mean() < 0.46


def test_pruned_weights_are_the_smallest():
    m = mlp()
    w = m[1].weight.detach().clone()
    prune_by_magnitude(m, 0.6)
    kept = m[1].weight_mask
    assert w.abs()[kept].min() >= w.abs()[~kept].max()


def test_iterative_retraining_recovers_accuracy(digits, trained_mlp):
    base = evaluate(trained_mlp, digits.val)["top1"]
    oneshot = copy.deepcopy(trained_mlp)
    prune_by_magnitude(oneshot, 0.9)
    acc_oneshot = evaluate(oneshot, digits.val)["top1"]
    cfg = MagnitudeConfig(schedule="iterative", rounds=2, epochs=2,
                          fit=FitConfig(lr=0.05, weight_decay=0, progress=False))
    sparse, info = torchslim.sparsify(trained_mlp, "magnitude", 0.9, data=digits, config=cfg, return_info=True)
    acc = evaluate(sparse, digits.val)["top1"]
    assert abs(info["density"]["density"] - 0.1) < 0.01
    assert acc > acc_oneshot and acc > base - 10
    assert len(info["history"]) == 4
    assert not any(True for _ in masked_layers(trained_mlp))  # the input model is untouched


def test_agp_reaches_target_and_follows_cubic(digits):
    agp = AGPSchedule(0.8, start_step=10, end_step=110, every=10)
    assert agp.target(0) == 0 and agp.target(110) == 1 and agp.target(200) == 1
    assert abs(agp.target(60) - (1 - 0.5 ** 3)) < 1e-9
    m = mlp()
    attach_masks(m)
    fit(m, digits.train, config=FitConfig(epochs=2, lr=0.05, max_steps_per_epoch=10, progress=False),
        callbacks=[AGPSchedule(0.8, 0, 12, every=4)])
    for _, l in masked_layers(m):
        assert abs(l.density - 0.2) < 0.01
    sparse = torchslim.sparsify(mlp(), "magnitude", 0.7, data=digits, schedule="agp", epochs=1,
                                fit=FitConfig(lr=0.05, max_steps_per_epoch=8, progress=False))
    assert abs(density_summary(sparse)["density"] - 0.3) < 0.01


def test_sparsify_errors_name_the_problem(digits):
    with pytest.raises(UnknownNameError, match="magnitude"):
        torchslim.sparsify(mlp(), "nonsense")
    with pytest.raises(InvalidInputError, match="no option"):
        torchslim.sparsify(mlp(), "magnitude", 0.5, colour="red")
    with pytest.raises(InvalidInputError, match="data="):
        torchslim.sparsify(mlp(), "magnitude", 0.5, schedule="agp")

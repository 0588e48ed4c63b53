"""Kernel-level masks (Anwar & Sung): whole k x k kernels, the target ratio per layer, the best of N kept."""
import pytest
import torch
from torch import nn

import torchslim
from torchslim.errors import InvalidInputError
from torchslim.sparsity import METHODS, masked_layers, remove_masks, to_sparse
from torchslim.sparsity.kernel_masks import val_loss_fn
from torchslim.train import FitConfig, fit


def convnet():
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(16, 16, 1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 64, 10))


@pytest.fixture(scope="module")
def trained_convnet(digits):
    torch.manual_seed(0)
    m = convnet()
    fit(m, digits.train, config=FitConfig(epochs=3, lr=0.05, weight_decay=0, progress=False))
    return m.eval()


def _kernels(layer):
    """(out, in) kernel keep-mask of a masked conv, checked to be constant over every kernel."""
    m = layer.weight_mask.flatten(2)
    assert (m.all(-1) == m.any(-1)).all(), "a kernel is partly masked"
    return m[..., 0]


@pytest.mark.parametrize("method", ["random_masks", "kernel_magnitude"])
@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.8])
def test_whole_kernels_at_the_target_ratio(method, ratio, digits, trained_convnet):
    opts = {"candidates": 3} if method == "random_masks" else {}
    sparse = torchslim.sparsify(trained_convnet, method, ratio, data=digits, **opts)
    layers = dict(masked_layers(sparse))
    assert set(layers) == {"0", "2"}  # 3x3 convs; the 1x1 conv and the linear layer are left dense
    for name, layer in layers.items():
        keep = _kernels(layer)
        o, i = keep.shape
        assert int((~keep).sum()) == round(ratio * o * i), name
        assert (layer.weight[~layer.weight_mask] == 0).all()
        assert (layer.weight[layer.weight_mask] != 0).all()  # nothing else was zeroed


@pytest.mark.parametrize("search", ["layer", "network"])
def test_the_best_candidate_is_kept(search, digits, trained_convnet):
    sparse, info = torchslim.sparsify(trained_convnet, "random_masks", 0.5, data=digits, candidates=6, search=search,
                                      batches=3, return_info=True)
    last = info["network"] if search == "network" else info["layers"]["2"]
    assert len(last["losses"]) == 6
    assert last["best"] == min(last["losses"]) < last["mean"]  # distinct masks give distinct losses
    # the returned model is the one that was scored best: re-evaluating it gives the same loss
    batches = [b for _, b in zip(range(3), digits.val)]
    assert val_loss_fn(batches)(sparse) == pytest.approx(last["best"], rel=1e-5)
    assert info["loss_masked"] == pytest.approx(last["best"], rel=1e-5)
    if search == "layer":
        first = info["layers"]["0"]
        assert first["best"] == min(first["losses"])


def test_eval_fn_drives_the_choice(trained_convnet):
    """A user score: the search must return the candidate that keeps most of kernel row 0 of layer '0'."""
    def loss(model):
        return -float(model[0].weight_mask[0].flatten(1)[:, 0].sum())

    sparse, info = torchslim.sparsify(trained_convnet, "random_masks", 0.5, candidates=12, search="layer",
                                      eval_fn=loss, filter_fn=lambda m, fqn: fqn == "0", return_info=True)
    losses = info["layers"]["0"]["losses"]
    assert len(set(losses)) > 1
    assert loss(sparse) == min(losses)


def test_random_search_and_magnitude_beat_an_average_random_mask(digits, trained_convnet):
    _, info = torchslim.sparsify(trained_convnet, "random_masks", 0.6, data=digits, candidates=10,
                                 search="network", batches=3, return_info=True)
    mag = torchslim.sparsify(trained_convnet, "kernel_magnitude", 0.6)
    batches = [b for _, b in zip(range(3), digits.val)]
    assert val_loss_fn(batches)(mag) < info["network"]["mean"]


def test_kernel_masks_run_sparse(digits, trained_convnet):
    sparse = torchslim.sparsify(trained_convnet, "kernel_magnitude", 0.9)
    x = next(iter(digits.val))[0][:8]
    with torch.no_grad():
        ref = sparse(x)
        names = to_sparse(remove_masks(sparse), min_sparsity=0.85)
        out = sparse(x)
    assert set(names) == {"0", "2"}
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_refusals(trained_convnet):
    assert {"random_masks", "kernel_magnitude"} <= set(METHODS.names())
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with pytest.raises(InvalidInputError, match="no conv layer"):
        torchslim.sparsify(mlp, "kernel_magnitude", 0.5)
    with pytest.raises(InvalidInputError, match="pass data="):
        torchslim.sparsify(trained_convnet, "random_masks", 0.5)
    with pytest.raises(InvalidInputError, match="fraction"):
        torchslim.sparsify(trained_convnet, "kernel_magnitude", 1.5)

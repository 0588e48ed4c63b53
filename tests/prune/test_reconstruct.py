"""Least-squares reconstruction after channel pruning (He et al. 2017; ThiNet)."""
import pytest
import torch
from torch import nn

import torchslim
from torchslim.data import from_datasets
from torchslim.errors import InvalidInputError
from torchslim.prune import prune_report


def _redundant_pair():
    """conv1's filters 4..7 are half of filters 0..3: their outputs carry nothing new, and L1 removes them."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.Conv2d(8, 4, 3, padding=1))
    with torch.no_grad():
        model[0].weight[4:] = 0.5 * model[0].weight[:4]
    return model.eval()


def _data(n=64):
    ds = torch.utils.data.TensorDataset(torch.randn(n, 3, 12, 12), torch.zeros(n, dtype=torch.long))
    return from_datasets(ds, ds, num_classes=4, batch_size=32)


def test_reconstruction_recovers_what_the_removed_channels_carried():
    model, data = _redundant_pair(), _data()
    x = torch.randn(8, 3, 12, 12)
    plain = torchslim.prune(model, x[:1], "l1", ratio=0.5, data=data, round_to=1)
    refit = torchslim.prune(model, x[:1], "l1", ratio=0.5, data=data, reconstruct=True, round_to=1)
    assert refit[0].out_channels == plain[0].out_channels == 4
    with torch.no_grad():
        err = lambda m: float((m(x) - model(x)).norm() / model(x).norm())  # noqa: E731
        assert err(plain) > 0.2
        assert err(refit) < 1e-3  # conv2' = conv2[:, :4] + 0.5 conv2[:, 4:], found from the samples
    rows = prune_report(refit)["reconstruction"]
    assert [r["layer"] for r in rows] == ["1"] and rows[0]["error_after"] < 1e-3 < rows[0]["error_before"]


def test_reconstruction_never_makes_a_layer_worse_and_needs_data():
    model = _redundant_pair()
    x = torch.randn(1, 3, 12, 12)
    with pytest.raises(InvalidInputError, match="reconstruct.*data"):
        torchslim.prune(model, x, "l1", ratio=0.5, reconstruct=True)
    rows = prune_report(torchslim.prune(model, x, "l1", ratio=0.25, data=_data(), reconstruct=True, round_to=1))["reconstruction"]
    assert all(r["error_after"] <= r["error_before"] for r in rows)


def test_reconstruction_and_bn_recalibration_from_the_cli_and_a_recipe(tmp_path):
    import json

    from torchslim.cli.main import main
    from torchslim.recipe import run_recipe

    out = tmp_path / "cli"
    assert main(["prune", "digits_cnn", "--ratio", "0.5", "--data", "digits", "--reconstruct",
                 "--bn-recalibration", "64", "-o", str(out)]) == 0
    rows = json.loads((out / "prune.json").read_text())["report"]["reconstruction"]
    assert rows and all(r["error_after"] < r["error_before"] for r in rows)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nmodel: {name: digits_cnn}\ndata: {name: digits, limit_train: 128, limit_eval: 64}\n"
                      "measure: {latency: false}\nstages:\n  - method: prune\n"
                      "    params: {ratio: 0.5, reconstruct: true, bn_recalibration: 64}\n")
    run_recipe(recipe, tmp_path / "run", progress=False, report=False, log=lambda *a: None)
    report = json.loads((tmp_path / "run/stages/01-prune/metrics.json").read_text())
    assert report["params"] == {"ratio": 0.5, "reconstruct": True, "bn_recalibration": 64}
    assert report["measure"]["accuracy"]["n"] == 64

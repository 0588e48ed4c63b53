"""Force Regularization (Wen et al. 2017): the pairwise forces, lower effective rank, Python / CLI / recipe."""
import json

import pytest
import torch

import torchslim
from torchslim.errors import InvalidInputError
from torchslim.models import create_model
from torchslim.sparsity import ForceConfig, ForceRegularizer, energy_kept, filter_force
from torchslim.sparsity.force import FORCES
from torchslim.train import FitConfig, fit

QUICK = FitConfig(epochs=1, lr=0.05, max_steps_per_epoch=15, progress=False, eval_every=0)


@pytest.mark.parametrize("force", list(FORCES))
def test_force_is_the_tangent_sum_of_pairwise_attractions(force):
    W = torch.randn(7, 12, dtype=torch.float64)
    W[3] = 0  # a dead filter neither pulls nor is pulled
    U = W / W.norm(dim=1, keepdim=True)
    F = filter_force(W, force)
    p = FORCES[force]
    for i in (0, 5):
        pull = sum((U[j] - U[i]) / (U[j] - U[i]).norm() ** p for j in range(7) if j not in (i, 3))
        expected = W[i].norm() * (pull - (pull @ U[i]) * U[i])
        torch.testing.assert_close(F[i], expected)
        assert abs(float(F[i] @ W[i])) < 1e-9  # the norm is left to the data loss
    assert F[3].abs().max() == 0


def _trained(callbacks):
    from torchslim.data import get_data

    torch.manual_seed(0)
    m = create_model("digits_cnn", width=8)
    fit(m, get_data("digits", batch_size=64).train, config=QUICK, callbacks=callbacks)
    return m


def test_force_raises_the_energy_kept_at_a_fixed_rank():
    plain, forced = _trained([]), _trained([ForceRegularizer(0.05)])
    for i, rank in ((3, 2), (7, 4)):  # the 8 -> 8 and 16 -> 16 convs
        assert energy_kept(forced[i].weight, rank) > energy_kept(plain[i].weight, rank) + 0.05


def test_bad_settings_are_one_clear_error():
    with pytest.raises(InvalidInputError, match="unknown force 'spring'"):
        ForceRegularizer(force="spring")
    with pytest.raises(InvalidInputError, match="strength"):
        ForceRegularizer(-1.0)


def test_force_through_sparsify_then_decompose(tmp_path):
    from torchslim.data import get_data

    data = get_data("digits", batch_size=64)
    m = create_model("digits_cnn", width=8)
    smooth, info = torchslim.sparsify(m, "force", data=data, return_info=True,
                                      config=ForceConfig(strength=0.05, epochs=1, fit=QUICK))
    e = info["energy_at_quarter_rank"]["3"]
    assert e["after"] > e["before"] and info["history"][0]["phase"] == "force"
    small = torchslim.decompose(smooth, method="tucker1", rank=0.5)
    assert small(torch.zeros(1, 1, 8, 8)).shape == (1, 10)


def test_cli_sparsify_force(tmp_path):
    from torchslim.cli.main import main

    out = tmp_path / "f"
    assert main(["sparsify", "digits_cnn", "--data", "digits", "--method", "force", "--strength", "0.05",
                 "--force", "gravity", "--epochs", "1", "--max-steps", "3", "-o", str(out)]) == 0
    figures = json.loads((out / "sparsify.json").read_text())
    assert figures["method"] == "force" and figures["energy_at_quarter_rank"]


def test_recipe_force_then_decompose(tmp_path):
    from torchslim.recipe import parse_recipe, run_recipe

    recipe = parse_recipe("""\
name: force
model: {name: digits_cnn, kwargs: {width: 8}}
data: {name: digits, batch_size: 32, limit_train: 128, limit_eval: 64, augment: false}
measure: {latency: false}
stages:
  - method: sparsify
    params: {method: force, options: {strength: 0.05, epochs: 1}}
  - method: decompose
    params: {method: tucker1, rank: 0.5}
    finetune: {epochs: 1, max_steps_per_epoch: 2}
""", "force.yaml")
    st = run_recipe(recipe, tmp_path / "run", progress=False, log=lambda *a: None)["stages"]
    assert [s["stage"] for s in st] == ["00-input", "01-sparsify", "02-decompose"]
    assert st[2]["macs"] < st[1]["macs"]

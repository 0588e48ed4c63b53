"""The prune verb: every criterion, targets, schedules, save/load, the CLI."""
import json

import pytest
import torch
import torchvision

import torchslim
from torchslim.data import get_data
from torchslim.errors import InvalidInputError
from torchslim.models import create_model
from torchslim.prune import CRITERIA, PruneConfig, prune, prune_report
from torchslim.train import FitConfig, evaluate

X8 = torch.randn(1, 1, 8, 8)


@pytest.fixture(scope="module")
def digits():
    return get_data("digits", batch_size=64)


@pytest.fixture(scope="module")
def trained(digits):
    from torchslim.train import fit

    torch.manual_seed(0)
    m = create_model("digits_cnn", width=16)
    fit(m, digits.train, config=FitConfig(epochs=1, lr=0.05, progress=False))
    return m.eval()


@pytest.mark.parametrize("name", CRITERIA.names())
def test_every_criterion_prunes(name, trained, digits):
    p = prune(trained, X8, name, 0.5, data=digits, batches=2, options={"candidates": 3})
    rep = prune_report(p)
    assert rep["after"]["macs"] < rep["before"]["macs"]
    assert p(X8).shape == (1, 10)
    assert trained.state_dict()["0.weight"].shape[0] == 16  # original untouched


def test_informed_criteria_beat_random_right_after_pruning(trained, digits):
    acc = {c: evaluate(prune(trained, X8, c, 0.5, data=digits, batches=4), digits.val)["top1"]
           for c in ("l1", "taylor", "random")}
    assert max(acc["l1"], acc["taylor"]) >= acc["random"] - 1.0


@pytest.mark.parametrize("allocation", ["uniform", "global"])
def test_target_macs_is_met(allocation):
    m = create_model("resnet20")
    p = prune(m, torch.randn(1, 3, 32, 32), "l1", target_macs=0.5, allocation=allocation)
    r = prune_report(p)
    assert r["macs_ratio"] <= 0.5 and r["macs_ratio"] > 0.35
    assert torchslim.analyze(p, (3, 32, 32)).macs == r["after"]["macs"]


def test_target_params_and_errors():
    m = create_model("digits_cnn", width=16)
    p = prune(m, X8, target_params=0.6)
    assert prune_report(p)["params_ratio"] <= 0.6
    with pytest.raises(InvalidInputError):
        prune(m, X8, "l1", 0.5, target_macs=0.5)
    with pytest.raises(InvalidInputError, match="needs data|reads data"):
        prune(m, X8, "taylor", 0.5)
    with pytest.raises(InvalidInputError, match="cannot reach"):
        prune(m, X8, target_macs=0.0001)


@pytest.mark.parametrize("schedule", ["iterative", "layerwise"])
def test_schedules_finetune_and_reach_the_ratio(schedule, trained, digits):
    fc = FitConfig(epochs=1, lr=0.01, max_steps_per_epoch=3, progress=False, eval_every=0)
    p = prune(trained, X8, "taylor", target_macs=0.5, data=digits, schedule=schedule, steps=2, finetune=fc,
              final_finetune=fc, batches=2)
    r = prune_report(p)
    assert r["macs_ratio"] <= 0.51
    assert len(r["finetune"]) >= 2 and len(r["steps"]) >= 2


def test_sensitivity_layer_ratios_and_skip(trained):
    g_names = [g.name for g in torchslim.graph.ChannelGraph(trained, X8).groups]
    p = prune(trained, X8, "l1", 0.5, allocation="layers", layer_ratios={g_names[0]: 0.0}, skip=(g_names[1],))
    assert p[0].out_channels == 16 and p[3].out_channels == 16 and p[7].out_channels < 32


def test_remove_zero_channels_reachable_from_the_verb():
    assert callable(torchslim.prune.remove_zero_channels)


def test_pruned_zoo_subset_runs_and_shrinks():
    x = torch.randn(1, 3, 32, 32)
    for name in ["resnet18", "mobilenet_v2", "shufflenet_v2_x0_5", "googlenet", "efficientnet_b0",
                 "regnet_x_400mf"]:  # one of each family: residual, inverted, shuffle, inception, SE, grouped
        kw = {"aux_logits": False, "init_weights": False} if name == "googlenet" else {}
        m = getattr(torchvision.models, name)(**kw).eval()
        p = prune(m, x, "l1", 0.3)
        r = prune_report(p)
        assert r["after"]["macs"] < 0.9 * r["before"]["macs"], name
        assert p(x).shape == (1, 1000)


def test_cli_prune(tmp_path, capsys):
    from torchslim.cli.main import main

    out = tmp_path / "o"
    rc = main(["prune", "digits_cnn", "--criterion", "l1", "--target-macs", "0.5", "--data", "digits",
               "--finetune-epochs", "1", "--finetune-steps", "2", "-o", str(out)])
    assert rc == 0
    figures = json.loads((out / "prune.json").read_text())
    assert figures["after"]["macs"] <= 0.5 * figures["before"]["macs"]
    from torchslim.io import load_model

    assert load_model(out / "model.safetensors")(X8).shape == (1, 10)


def test_cli_sensitivity(tmp_path, trained):
    from torchslim.cli.main import main
    from torchslim.io import save_model

    path = save_model(trained, tmp_path / "m.safetensors", input_size=(1, 8, 8))
    rc = main(["sensitivity", str(path), "--data", "digits", "--max-batches", "1", "--ratios", "0.3,0.7", "-o", str(tmp_path / "s")])
    assert rc == 0
    assert (tmp_path / "s" / "sensitivity.png").stat().st_size > 1000
    ratios = json.loads((tmp_path / "s" / "layer_ratios.json").read_text())
    assert ratios and all(0 <= r <= 0.9 for r in ratios.values())


def _pruned_widths(model) -> list[int]:
    return [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]


@pytest.mark.parametrize("allocation", ["uniform", "global"])
def test_round_to_keeps_multiples_and_still_meets_the_target(allocation):
    m = create_model("resnet20")
    x = torch.randn(1, 3, 32, 32)
    exact = prune(m, x, "l1", target_macs=0.66, allocation=allocation, round_to=1)
    assert any(w % 8 for w in _pruned_widths(exact))  # 13/26/51: what ONNX Runtime runs slowly
    p = prune(m, x, "l1", target_macs=0.66, allocation=allocation, round_to=8)
    assert all(w % 8 == 0 for w in _pruned_widths(p))
    r = prune_report(p)
    assert 0.58 < r["macs_ratio"] <= 0.66  # rounded steps topped up towards the goal, not far below it
    assert r["config"]["round_to"] == 8
    assert p(x).shape == (1, 10)


def test_round_to_is_the_default_and_small_groups_keep_a_smaller_power_of_two():
    from torchslim.prune.allocation import group_step
    from torchslim.prune.api import ROUND_TO

    assert PruneConfig(ratio=0.5).round_to == ROUND_TO > 1
    assert [group_step(n, 8) for n in (3, 8, 12, 16, 64)] == [1, 4, 4, 8, 8]
    m = create_model("digits_cnn", width=12)
    p = prune(m, X8, "l1", 0.5, round_to=16)  # 12 channels cannot keep a multiple of 16: multiples of 4
    assert _pruned_widths(p)[0] in (4, 8)
    with pytest.raises(InvalidInputError, match="round_to"):
        prune(m, X8, "l1", 0.5, round_to=0)


def test_cli_prune_round_to(tmp_path):
    from torchslim.cli.main import main

    out = tmp_path / "o"
    assert main(["prune", "resnet20", "--target-macs", "0.66", "--round-to", "4", "-o", str(out)]) == 0
    figures = json.loads((out / "prune.json").read_text())
    assert figures["report"]["config"]["round_to"] == 4


def test_pruned_option_a_shortcuts_stay_a_pad():
    """The CIFAR ResNets' zero-padding shortcut keeps one contiguous run of channels after pruning, so it
    exports as a Pad (a scatter of channels would be slow in ONNX Runtime)."""
    from torchslim.models.cifar_resnet import ChannelPadShortcut

    p = prune(create_model("resnet20"), torch.randn(1, 3, 32, 32), "l1", target_macs=0.5)
    pads = [m for m in p.modules() if isinstance(m, ChannelPadShortcut)]
    assert pads and all(m._pad is not None for m in pads)


def test_fine_tuning_takes_a_plain_loader_as_data(trained, digits):
    fc = FitConfig(epochs=1, lr=0.01, max_steps_per_epoch=2, progress=False, eval_every=0)
    p = prune(trained, "l1", ratio=0.25, data=digits.train, final_finetune=fc)  # a DataLoader, not a bundle
    assert len(prune_report(p)["finetune"]) == 1

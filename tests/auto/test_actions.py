"""Prune and int8 actions: composition, exclusion, recipe replay, and a target only pruning reaches."""
import json

import pytest
import torch
import yaml

from torchslim.analysis import profile
from torchslim.auto import (Measured, apply_actions, auto_compress, compatible, greedy_path, lowrank_actions,
                            prune_actions, quant_actions)
from torchslim.data import get_data
from torchslim.errors import InvalidInputError
from torchslim.graph import ChannelGraph
from torchslim.io import load_model, save_model
from torchslim.models import create_model
from torchslim.train import FitConfig, evaluate, fit


def _macs(m, x):
    return profile(m, example_input=x).macs


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return create_model("resnet20").eval(), torch.randn(1, 3, 32, 32)


@pytest.fixture(scope="module")
def digits():
    torch.manual_seed(0)
    data = get_data("digits", batch_size=64, augment=False)
    model = create_model("digits_cnn", width=16)
    fit(model, data.train, config=FitConfig(epochs=3, lr=0.05, progress=False))
    return model.eval(), data


def _by(actions, layer, name):
    return next(a for a in actions if a.layer == layer and a.name == name)


def test_prune_actions_compose_in_one_call_and_reduce_macs(resnet):
    model, x = resnet
    actions = prune_actions(model, x, ratios=(0.5,))
    g = ChannelGraph(model, x)
    assert {a.layer for a in actions} == {grp.name for grp in g.groups}
    inner, residual, other = (_by(actions, n, "prune 50%") for n in ("layer1.0.conv1", "layer2.0.conv2", "layer3.1.conv1"))
    # the residual group of stages 2-3 touches every conv writing into or reading from the sum
    assert {"layer2.0.conv2", "layer3.0.conv1", "layer3.2.conv2", "linear"} <= residual.touches
    assert inner.touches == {"layer1.0.conv1", "layer1.0.conv2"}
    alone = {a.layer: apply_actions(model, [a], x) for a in (inner, residual, other)}
    both = apply_actions(model, [inner, residual, other], x)
    base = _macs(model, x)
    assert _macs(both, x) < min(_macs(m, x) for m in alone.values()) < base
    assert both.layer1[0].conv1.out_channels == 8
    # option-A shortcuts: stage 2's 32 channels are the stem's 16 (padded through) and this group's 16
    assert both.layer2[0].conv2.out_channels == 32 - 8 and both.layer3[1].conv1.out_channels == 32
    assert both.linear.in_features == 64 - 8  # the group's channels are in stage 3's sum too
    # each group loses the channels it loses alone: the combination scores on the unpruned model
    assert torch.equal(both.layer1[0].conv1.weight, alone["layer1.0.conv1"].layer1[0].conv1.weight)
    assert torch.equal(both.layer2[0].conv2.weight, alone["layer2.0.conv2"].layer2[0].conv2.weight)
    assert both(x).shape == (1, 10)


def test_prune_and_decomposition_of_a_layer_exclude_each_other(resnet):
    model, x = resnet
    prunes = prune_actions(model, x, ratios=(0.5,))
    lowrank = lowrank_actions(model, (3, 32, 32), compressions=(2.0,))
    p = _by(prunes, "layer1.0.conv1", "prune 50%")
    t_same, t_other = _by(lowrank, "layer1.0.conv2", "tucker 2x"), _by(lowrank, "layer3.1.conv2", "tucker 2x")
    assert not compatible(p, t_same) and compatible(p, t_other) and not compatible(p, p)
    assert compatible(_by(prunes, "layer1.1.conv1", "prune 50%"), p)  # groups compose
    # a greedy path where both of the conflicting pair are the best trades never takes both
    base = Measured(None, 100.0, 90.0)
    path = greedy_path(base, [Measured(p, 80, 89.9), Measured(t_same, 70, 89.8), Measured(t_other, 95, 89.0)])
    for point in path:
        assert not ({p.key, t_same.key} <= {a.key for a in point.actions})
    # the best ratio first; then the decomposition replaces the pruning it excludes (10 more saved for 0.1)
    assert [{a.key for a in q.actions} for q in path[1:]] == [{p.key}, {t_same.key}, {t_same.key, t_other.key}]
    assert [q.predicted_metric for q in path] == [100, 80, 70, 65]
    # disjoint ones compose: pruning first leaves the decomposed layer as it was measured
    both = apply_actions(model, [t_other, p], x)
    alone = apply_actions(model, [t_other], x)
    assert both.layer1[0].conv1.out_channels == 8
    assert type(both.layer3[1].conv2) is type(alone.layer3[1].conv2) is not torch.nn.Conv2d
    for a, b in zip(both.layer3[1].conv2.parameters(), alone.layer3[1].conv2.parameters()):
        assert torch.equal(a, b)


def test_recipe_replays_the_chosen_point(digits, tmp_path):
    from torchslim.recipe import run_recipe
    from torchslim.recipe.schema import parse_recipe

    model, data = digits
    path = save_model(model, tmp_path / "trained.safetensors", input_size=(1, 8, 8))
    model = load_model(path).eval()
    x = next(iter(data.val))[0][:1]
    acc = lambda m: evaluate(m, data.val)["top1"]  # noqa: E731
    # convs "0" 1->16, "3" 16->16, "7" 16->32, "10" 32->32: pruning group "0" (conv 0's filters, conv 3's
    # inputs) alone gives about 0.8x, Tucker 2x of convs 7 and 10 about 0.7x: 0.6x needs both kinds
    actions = prune_actions(model, x, (0.5,), skip=("3", "7", "10")) + \
        [a for a in lowrank_actions(model, (1, 8, 8), (2.0,)) if a.layer in ("7", "10")]
    result = auto_compress(model, actions, evaluate=acc, example_input=x, target="macs=0.6x", max_drop=1000)
    kinds = [a.kind for a in result.chosen.actions]
    assert "prune" in kinds and "lowrank" in kinds, kinds  # the replay covers both stages
    assert result.metric <= 0.6 * result.base.metric
    stages = result.recipe_stages()
    assert [s["method"] for s in stages] == ["prune", "decompose"]
    recipe = {"name": "replay", "model": {"path": str(path)},
              "data": {"name": "digits", "batch_size": 64, "augment": False},
              "measure": {"latency": False, "per_layer": False}, "stages": stages}
    text = yaml.safe_dump(recipe, sort_keys=False)
    parse_recipe(text)  # the prune stage's layer_ratios validate
    (tmp_path / "r.yaml").write_text(text)
    run_recipe(tmp_path / "r.yaml", tmp_path / "run", progress=False, report=False, log=lambda *a: None)
    replay = load_model(tmp_path / "run" / "model.safetensors").eval()
    xb = next(iter(data.test))[0]
    with torch.no_grad():
        assert torch.allclose(replay(xb), result.model(xb), atol=1e-5)
    assert _macs(replay, x) == _macs(result.model, x)


def test_int8_action_is_applied_last_and_replays(digits, tmp_path):
    from torchslim.quant import OnnxRuntimeModule
    from torchslim.recipe import run_recipe

    model, data = digits
    path = save_model(model, tmp_path / "trained.safetensors", input_size=(1, 8, 8))
    model = load_model(path).eval()
    x = next(iter(data.val))[0][:1]
    calib = data.calibration_batches(128)
    acc = lambda m: evaluate(m, data.val)["top1"]  # noqa: E731
    actions = quant_actions(calib, x, calib_images=128) + prune_actions(model, x, (0.5,))
    with pytest.raises(InvalidInputError, match="ONNX Runtime"):
        quant_actions(calib, x, runtime="torch")
    tuned = []
    result = auto_compress(model, actions, evaluate=acc, example_input=x, target="size=0.2x", max_drop=1000,
                           calib=calib, finetune=lambda m: tuned.append(type(m).__name__) or [])
    qs = [m for m in result.measured if m.action.kind == "quant"]
    assert [m.action.name for m in qs] == ["int8 ort-qdq", "int8 ort-qoperator"]
    for q in qs:
        assert q.error is None and q.metric < 0.5 * result.base.metric  # int8 weights, plus the ONNX graph
    # 0.2x needs int8 and pruning: int8 last, after the fine-tuning of the float pruned model
    assert [a.kind for a in result.chosen.actions][-1] == "quant" and "prune" in {a.kind for a in result.chosen.actions}
    assert tuned == ["Sequential"]
    assert isinstance(result.model, OnnxRuntimeModule) and result.metric <= 0.2 * result.base.metric
    assert result.accuracy_finetuned is not None
    stages = result.recipe_stages(finetune={"epochs": 1})
    assert [s["method"] for s in stages] == ["prune", "quantize"] and "finetune" in stages[0]
    assert stages[1]["params"]["options"]["path"] == result.model.quant_report["chosen"]
    recipe = {"name": "replay", "model": {"path": str(path)}, "data": {"name": "digits", "augment": False},
              "measure": {"latency": False, "per_layer": False}, "stages": result.recipe_stages()}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    run_recipe(tmp_path / "r.yaml", tmp_path / "run", progress=False, report=False, log=lambda *a: None)
    replay = load_model(tmp_path / "run" / "model.safetensors")
    xb = next(iter(data.test))[0]
    with torch.no_grad():
        a, b = replay(xb), result.model(xb)
    assert (a.argmax(1) == b.argmax(1)).float().mean() >= 0.98  # same int8 graph, calibrated on the same images


def test_a_target_only_pruning_reaches(digits):
    model, data = digits
    x = next(iter(data.val))[0][:1]
    acc = lambda m: evaluate(m, data.val)["top1"]  # noqa: E731
    lowrank = lowrank_actions(model, (1, 8, 8), compressions=(2.0,))
    with pytest.raises(InvalidInputError, match="no combination"):  # Tucker 2x everywhere is about 0.5x
        auto_compress(model, lowrank, evaluate=acc, example_input=x, target="macs=0.4x", max_drop=1000)
    actions = prune_actions(model, x, (0.5,)) + lowrank
    result = auto_compress(model, actions, evaluate=acc, example_input=x, target="macs=0.4x", max_drop=1000)
    assert result.metric <= 0.4 * result.base.metric
    assert any(a.kind == "prune" for a in result.chosen.actions)


def test_cli_auto_writes_table_front_and_a_recipe_that_validates(tmp_path):
    from torchslim.cli.main import main
    from torchslim.recipe.schema import parse_recipe

    out = tmp_path / "auto"
    rc = main(["auto", "digits_cnn", "--data", "digits", "--target", "macs=0.5x", "--max-drop", "100",
               "--actions", "prune,quant", "--prune-ratios", "0.5", "--eval-images", "128", "--epochs", "1",
               "--max-steps", "2", "-o", str(out)])
    assert rc == 0
    summary = json.loads((out / "auto.json").read_text())
    assert {m["kind"] for m in summary["measured"]} == {"prune"}  # int8 cannot change MACs: not a candidate
    assert summary["front"] and summary["chosen"]["actions"] and summary["ratio"] <= 0.5
    recipe = parse_recipe((out / "recipe.yaml").read_text())
    assert recipe.stages[0].method == "prune" and recipe.stages[-1].finetune.max_steps_per_epoch == 2
    assert load_model(out / "model.safetensors")(torch.zeros(1, 1, 8, 8)).shape == (1, 10)


def test_cli_auto_measures_latency_on_the_fastest_runtime_with_its_int8_path(tmp_path, monkeypatch):
    from torchslim import runtimes
    from torchslim.cli.main import main

    asked = []

    def fastest(model, x, **kw):  # the choice is fixed here; tests/test_runtimes.py tests the measuring
        asked.append(tuple(x.shape))
        return "openvino", {"onnxruntime": 2.0, "openvino": 1.0}

    monkeypatch.setattr(runtimes, "fastest_runtime", fastest)
    out = tmp_path / "auto"
    rc = main(["auto", "digits_cnn", "--data", "digits", "--target", "latency=0.9x", "--max-drop", "100",
               "--actions", "quant", "--calib-images", "64", "--eval-images", "64", "--epochs", "1",
               "--max-steps", "1", "--best-effort", "-o", str(out)])
    assert rc == 0 and asked == [(1, 1, 8, 8)]
    summary = json.loads((out / "auto.json").read_text())
    assert summary["runtime"] == {"name": "openvino", "setting": "fastest",
                                  "fp32_ms": {"onnxruntime": 2.0, "openvino": 1.0}}
    assert [m["action"] for m in summary["measured"]] == ["int8 ov-qdq"]  # OpenVINO's int8 path, measured there
    assert summary["measured"][0]["error"] is None


def test_quant_actions_follow_the_runtime():
    x = torch.zeros(1, 1, 8, 8)
    assert [a.name for a in quant_actions(None, x, runtime="openvino")] == ["int8 ov-qdq"]
    assert [a.name for a in quant_actions(None, x, runtime="onnxruntime")] == ["int8 ort-qdq", "int8 ort-qoperator"]

import pytest
import torch
from torch import nn

from torchslim.auto import (Action, Measured, Target, auto_compress, greedy_path, lowrank_actions, measure_actions,
                            pareto_front)
from torchslim.data import get_data
from torchslim.errors import InvalidInputError
from torchslim.models import create_model
from torchslim.train import FitConfig, evaluate, fit


def _m(layer, name, metric, acc):
    return Measured(Action(layer, name, lambda m: m), metric, acc)


def test_target_parsing():
    assert Target.parse("latency=0.5x") == Target("latency", 0.5)
    assert Target.parse("params=0.1") == Target("params", 0.1)
    for bad in ("speed=0.5x", "latency=2x", "latency"):
        with pytest.raises(InvalidInputError, match="METRIC=FRACTIONx"):
            Target.parse(bad)


def test_greedy_path_takes_the_best_trade_first_and_one_action_per_layer():
    base = Measured(None, 100.0, 90.0)
    measured = [_m("a", "2x", 80, 89.9), _m("a", "4x", 70, 88.0), _m("b", "2x", 90, 85.0),
                _m("c", "bad", 120, 90.0)]
    path = greedy_path(base, measured)
    assert [p.predicted_metric for p in path] == [100, 80, 70, 60]
    assert [a.name for a in path[1].actions] == ["2x"]  # 20 saved for 0.1 lost: the best ratio
    assert [(a.layer, a.name) for a in path[2].actions] == [("a", "4x")]  # upgrade replaces, not adds
    assert {a.layer for a in path[-1].actions} == {"a", "b"}  # the slower action "c" is never used
    assert path[-1].predicted_accuracy == pytest.approx(90 - 2 - 5)
    front = pareto_front(path)
    assert front == path  # each step trades accuracy for metric


def test_accuracy_gains_offset_no_loss_and_savings_never_pass_zero():
    base = Measured(None, 10.0, 90.0)
    path = greedy_path(base, [_m("a", "x", 7, 91.0), _m("b", "x", 7, 88.0)])
    # "a" seems to gain a point (validation noise); it must not cancel "b"'s real loss of two
    assert path[-1].predicted_accuracy == pytest.approx(88.0)
    # "c" and "d" save 4 ms each of a 10 ms base; a third saving (3 ms) would pass zero: not taken
    path = greedy_path(base, [_m("a", "x", 7, 90), _m("b", "x", 7, 90), _m("c", "x", 6, 90), _m("d", "x", 6, 90)])
    assert all(p.predicted_metric > 0 for p in path) and len(path[-1].actions) == 2


def test_base_metric_is_a_median_of_warm_measurements():
    model = nn.Linear(2, 2)
    base_calls = iter([100.0, 5.0, 6.0, 4.0, 5.5])  # cold first call, then the usual spread
    measure = lambda m: next(base_calls) if m is model else 3.0  # noqa: E731
    actions = [Action(f"l{i}", "x", lambda net: nn.Linear(2, 2)) for i in range(3)]
    base, measured = measure_actions(model, actions, evaluate=lambda m: 50.0, measure=measure, base_every=1)
    assert base.metric == pytest.approx(5.25) and base.samples == [5.0, 6.0, 4.0, 5.5]  # the cold 100 discarded
    assert [m.metric for m in measured] == [3.0, 3.0, 3.0]


def test_auto_compress_reaches_a_mac_target_on_a_trained_model():
    torch.manual_seed(0)
    data = get_data("digits", batch_size=64)
    model = create_model("digits_cnn", width=8)
    fit(model, data.train, config=FitConfig(epochs=3, lr=0.05, progress=False))
    x = next(iter(data.val))[0][:8]
    acc = lambda m: evaluate(m, data.val)["top1"]  # noqa: E731
    actions = lowrank_actions(model, (1, 8, 8), compressions=(2.0,))
    assert {a.layer for a in actions} >= {"3", "7", "10"}
    result = auto_compress(model, actions, evaluate=acc, example_input=x, target="macs=0.8x", max_drop=30,
                           finetune=lambda m: fit(m, data.train, config=FitConfig(epochs=1, lr=0.01,
                                                                                    progress=False)).history)
    assert result.metric <= 0.8 * result.base.metric
    assert result.accuracy > 50 and result.history
    stages = result.recipe_stages()
    assert stages[0]["method"] == "decompose" and set(stages[0]["params"]["rank"]) <= {a.layer for a in actions}
    with pytest.raises(InvalidInputError, match="no combination"):
        auto_compress(model, actions, evaluate=acc, example_input=x, target="macs=0.01x", max_drop=1)
    assert result.target_met
    # best effort: the point predicted smallest within the drop, built as it is
    effort = auto_compress(model, actions, evaluate=acc, example_input=x, target="macs=0.01x", max_drop=30,
                           best_effort=True, table=(result.base, result.measured))
    assert not effort.target_met and effort.metric < effort.base.metric
    within = [p for p in effort.points if effort.base.accuracy - p.predicted_accuracy <= 30]
    assert effort.chosen.predicted_metric == min(p.predicted_metric for p in within)

"""Measure each candidate action alone, then combine them greedily along the best trade-off.

1. the base model and the model with each single action are measured: the target metric (latency
   on a chosen runtime, measured here; or MACs, parameters, size, energy, computed) and accuracy on
   validation images;
2. the greedy path adds, one at a time, the action with the most metric saved per accuracy point
   lost (at most one action per layer; a stronger action may replace a weaker one on the same
   layer), predicting the combination by adding the single-action changes;
3. the first point of the path whose prediction meets the target is applied for real and checked
   (a miss continues along the path); its recovery fine-tuning uses torchslim.train.fit.
The predicted path and its non-dominated points (the Pareto front) are kept for the report.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from torchslim.auto.actions import Action
from torchslim.errors import InvalidInputError

METRICS = ("latency", "macs", "params", "size", "energy")


@dataclass(frozen=True)
class Target:
    """`metric=<fraction>x`: e.g. latency=0.5x (twice as fast), params=0.1x (ten times smaller)."""

    metric: str
    fraction: float

    @classmethod
    def parse(cls, text: str) -> "Target":
        m = re.fullmatch(r"\s*(\w+)\s*=\s*([0-9.]+)\s*x?\s*", text or "")
        if not m or m.group(1) not in METRICS or not 0 < float(m.group(2)) < 1:
            raise InvalidInputError(f"target {text!r}: use METRIC=FRACTIONx with METRIC one of "
                                    f"{', '.join(METRICS)} and 0 < FRACTION < 1, e.g. latency=0.5x")
        return cls(m.group(1), float(m.group(2)))


def metric_fn(metric: str, example_input: torch.Tensor, runtime: str = "onnxruntime", threads: int | None = 1,
              repeats: int = 20) -> Callable[[nn.Module], float]:
    from torchslim.analysis import estimate_energy, measure_latency, profile, saved_size_bytes

    def fn(model: nn.Module) -> float:
        if metric == "latency":
            return measure_latency(model, example_input, runtime=runtime, threads=threads, repeats=repeats,
                                   min_time_s=0.1, with_peak=False).median_ms
        if metric == "size":
            return float(saved_size_bytes(model))
        p = profile(model, example_input=example_input[:1])
        if metric == "energy":
            return sum(e.total_pj for e in estimate_energy(p))
        return float(p.macs if metric == "macs" else p.params)

    return fn


@dataclass
class Measured:
    action: Action | None  # None: the base model
    metric: float
    accuracy: float
    error: str | None = None


@dataclass
class PathPoint:
    actions: list[Action]
    predicted_metric: float
    predicted_accuracy: float


def greedy_path(base: Measured, measured: list[Measured]) -> list[PathPoint]:
    """Points of the greedy trade-off path, from the base model to every useful action applied."""
    usable = [m for m in measured if m.error is None and m.metric < base.metric]
    chosen: dict[str, Measured] = {}
    metric, acc = base.metric, base.accuracy
    path = [PathPoint([], metric, acc)]
    while True:
        best, best_score = None, -1.0
        for m in usable:
            cur = chosen.get(m.action.layer)
            d_metric = (cur.metric if cur else base.metric) - m.metric  # saved, over the current choice
            d_acc = (cur.accuracy if cur else base.accuracy) - m.accuracy  # lost
            if d_metric <= 0:
                continue
            score = d_metric / max(d_acc, 1e-3)
            if score > best_score:
                best, best_score = m, score
        if best is None:
            return path
        cur = chosen.get(best.action.layer)
        metric -= (cur.metric if cur else base.metric) - best.metric
        acc -= (cur.accuracy if cur else base.accuracy) - best.accuracy
        chosen[best.action.layer] = best
        path.append(PathPoint([m.action for m in chosen.values()], metric, acc))


def pareto_front(points: list[PathPoint]) -> list[PathPoint]:
    """Points no other point beats on both metric (lower) and accuracy (higher)."""
    return [p for p in points if not any(q.predicted_metric <= p.predicted_metric and
                                         q.predicted_accuracy >= p.predicted_accuracy and
                                         (q.predicted_metric, q.predicted_accuracy) !=
                                         (p.predicted_metric, p.predicted_accuracy) for q in points)]


@dataclass
class AutoResult:
    model: nn.Module
    target: Target
    base: Measured
    measured: list[Measured]
    path: list[PathPoint]
    chosen: PathPoint
    metric: float  # of the returned model, measured
    accuracy_before_finetune: float
    accuracy: float
    history: list = field(default_factory=list)

    def recipe_stages(self) -> list[dict]:
        """The chosen actions as recipe stages (decompose ranks merged into one stage)."""
        stages: list[dict] = []
        for a in self.chosen.actions:
            if stages and stages[-1]["method"] == a.stage["method"] == "decompose" and \
                    stages[-1]["params"]["method"] == a.stage["params"]["method"]:
                stages[-1]["params"]["rank"].update(a.stage["params"]["rank"])
            else:
                stages.append(copy.deepcopy(a.stage))
        return stages


def apply_actions(model: nn.Module, actions: list[Action]) -> nn.Module:
    out = copy.deepcopy(model)
    for a in actions:
        out = a.apply(out)
    return out


def auto_compress(model: nn.Module, actions: list[Action], *, evaluate: Callable[[nn.Module], float],
                  example_input: torch.Tensor, target: Target | str, max_drop: float = 1.0,
                  runtime: str = "onnxruntime", finetune: Callable[[nn.Module], list] | None = None,
                  log: Callable[[str], None] = lambda s: None) -> AutoResult:
    """Search the per-layer actions for the most accurate model meeting `target`.

    Args:
        actions: candidates (e.g. `lowrank_actions(model, input_size)`); at most one per layer is used.
        evaluate: model -> accuracy (%) on validation data.
        target: e.g. "latency=0.5x"; latency is measured on `runtime` with one thread at the
            example input's batch size.
        max_drop: accuracy points the predicted path may lose; the result reports the real drop.
        finetune: model -> history; the recovery after the chosen actions are applied.
    """
    target = Target.parse(target) if isinstance(target, str) else target
    if not actions:
        raise InvalidInputError("no candidate actions: this model has no layer the actions can change")
    measure = metric_fn(target.metric, example_input, runtime)
    model = model.eval()
    base = Measured(None, measure(model), evaluate(model))
    log(f"base: {target.metric} {base.metric:.4g}, accuracy {base.accuracy:.2f}")
    measured = []
    for a in actions:
        try:
            changed = a.apply(copy.deepcopy(model)).eval()
            measured.append(Measured(a, measure(changed), evaluate(changed)))
        except Exception as e:  # an action that does not apply is recorded, not fatal
            measured.append(Measured(a, float("inf"), 0.0, f"{type(e).__name__}: {e}"))
        m = measured[-1]
        log(f"{a.layer} {a.name}: {target.metric} {m.metric:.4g}, accuracy {m.accuracy:.2f}"
            + (f" ({m.error})" if m.error else ""))
    path = greedy_path(base, measured)
    goal = target.fraction * base.metric
    candidates = [p for p in path if p.predicted_metric <= goal and base.accuracy - p.predicted_accuracy <= max_drop]
    if not candidates:
        best = min(path, key=lambda p: p.predicted_metric)
        raise InvalidInputError(
            f"no combination of {len(actions)} actions is predicted to reach {target.metric}={target.fraction}x "
            f"within {max_drop} points (best: {best.predicted_metric / base.metric:.2f}x at "
            f"{base.accuracy - best.predicted_accuracy:.2f} points); allow a larger drop or add actions")
    start = path.index(candidates[0])
    for point in path[start:]:  # the prediction adds single changes; check the real combination
        compressed = apply_actions(model, point.actions).eval()
        real = measure(compressed)
        log(f"{len(point.actions)} actions: predicted {point.predicted_metric:.4g}, measured {real:.4g}")
        if real <= goal:
            break
    acc0 = evaluate(compressed)
    history = finetune(compressed) if finetune else []
    return AutoResult(compressed, target, base, measured, path, point, real, acc0, evaluate(compressed), history)

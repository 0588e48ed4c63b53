"""Measure each candidate action alone, then combine them greedily along the best trade-off.

1. the base model and the model with each single action are measured: the target metric (latency
   on a chosen runtime, measured here; or MACs, parameters, size, energy, computed) and accuracy on
   validation images: the per-action table (the base latency is a median of warm measurements
   spread over the run);
2. the greedy path adds, one at a time, the per-layer action (prune a group, decompose a layer) with
   the most metric saved per accuracy point lost (as `actions.compatible` allows; an action may
   replace the ones it excludes), predicting the combination by adding the single-action changes
   (losses only: an action's accuracy gain is validation noise and pays for no other loss);
   the same path is also walked with each kind of action alone (a mixed greedy path can stall where
   kinds exclude each other); a whole-model action (int8) is put on top of every point of every
   path, predicted by scaling the metric by the factor it gave the base model;
3. the most accurate predicted point that meets the target within the allowed drop is applied for
   real and measured (a miss bisects further along its line, never past the points predicted within
   the drop, for the first real hit; with `best_effort`, an unreachable target takes the fastest
   point within the drop); the per-layer actions are fine-tuned (torchslim.train.fit), int8 is
   calibrated afterwards; the target is met only if the final model meets both the metric and the
   drop, as measured.
All predicted points and their non-dominated subset (the Pareto front) are kept for the report.
"""
from __future__ import annotations

import copy
import re
import statistics
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from torchslim.auto.actions import Action, apply_stages, compatible, merge_stages
from torchslim.errors import InvalidInputError

METRICS = ("latency", "macs", "params", "size", "energy")
MAX_CHECKED_LINES = 4  # candidate lines built and measured for real before giving up on the target


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
    samples: list[float] = field(default_factory=list)  # the base: every measurement its median is taken over


@dataclass
class PathPoint:
    actions: list[Action]
    predicted_metric: float
    predicted_accuracy: float


def greedy_path(base: Measured, measured: list[Measured]) -> list[PathPoint]:
    """Points of the greedy trade-off path, from the base model to every useful action applied.

    Whole-model actions (int8) are not on the path: `project` puts them on top of its points. Per-layer
    actions follow `compatible`: one per layer or group, and a pruned group and a layer it touches
    are not both changed; an action may replace the chosen ones it excludes (a stronger action on the
    same layer, a group's pruning instead of the decompositions of its layers) when it saves more
    than they do together, so the path's metric falls at every step.
    """
    usable = [m for m in measured if m.error is None and m.metric < base.metric and m.action.kind != "quant"]
    chosen: dict[str, Measured] = {}
    metric, acc = base.metric, base.accuracy

    def lost(m: Measured) -> float:  # an accuracy gain alone is validation noise: it pays for no other loss
        return max(base.accuracy - m.accuracy, 0.0)

    path = [PathPoint([], metric, acc)]
    while True:
        best, best_score, best_out = None, -1.0, []
        for m in usable:
            if m.action.key in chosen and chosen[m.action.key] is m:
                continue
            out = [c for c in chosen.values() if not compatible(m.action, c.action)]  # it would replace these
            d_metric = (base.metric - m.metric) - sum(base.metric - c.metric for c in out)  # saved
            d_acc = lost(m) - sum(lost(c) for c in out)
            if d_metric <= 0 or metric - d_metric <= 0:  # additive savings past zero: a measurement artefact
                continue
            score = d_metric / max(d_acc, 1e-3)
            if score > best_score:
                best, best_score, best_out = m, score, out
        if best is None:
            return path
        for c in best_out:
            metric += base.metric - c.metric
            acc += lost(c)
            del chosen[c.action.key]
        metric -= base.metric - best.metric
        acc -= lost(best)
        chosen[best.action.key] = best
        path.append(PathPoint([m.action for m in chosen.values()], metric, acc))


def greedy_paths(base: Measured, measured: list[Measured]) -> dict[str, list[PathPoint]]:
    """The greedy path over all per-layer actions ("all"), and over each kind alone when there are several.

    A greedy path can stall where the kinds exclude each other: with every conv decomposed, pruning
    one group would replace two decompositions and is never taken, though pruning every group would
    go further. The single-kind paths are cheap (no new measurement) and the search picks the best
    point of all of them.
    """
    out = {"all": greedy_path(base, measured)}
    kinds = sorted({m.action.kind for m in measured if m.action.kind != "quant"})
    if len(kinds) > 1:
        for k in kinds:
            out[k] = greedy_path(base, [m for m in measured if m.action.kind == k])
    return out


def project(base: Measured, path: list[PathPoint], whole: Measured) -> list[PathPoint]:
    """The path with a whole-model action added to every point, predicted multiplicatively: int8 scales
    the latency (size) of whatever model it is applied to by the factor it gave the base model, and
    costs the accuracy it cost there."""
    f, d = whole.metric / base.metric, base.accuracy - whole.accuracy
    return [PathPoint(p.actions + [whole.action], p.predicted_metric * f, p.predicted_accuracy - d) for p in path]


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
    measured: list[Measured]  # every candidate action alone
    path: list[PathPoint]  # the greedy path over all per-layer actions
    chosen: PathPoint
    metric: float  # of the returned model, measured
    accuracy_before_finetune: float
    accuracy: float  # of the returned model (after the fine-tuning, and after int8 when chosen)
    history: list = field(default_factory=list)
    points: list[PathPoint] = field(default_factory=list)  # all greedy paths, and each with every whole-model action
    checks: list[dict] = field(default_factory=list)  # points applied for real: predicted vs measured metric
    accuracy_finetuned: float | None = None  # before the whole-model action (int8), when one was chosen
    stages: list[dict] = field(default_factory=list)  # recipe stages that rebuild the model (int8 path pinned)
    target_met: bool = True  # the returned model meets the target metric AND loses at most max_drop (measured)
    verdict: str = ""  # one line: met, or not met and the best point within the drop

    @property
    def front(self) -> list[PathPoint]:
        """The predicted Pareto front over all points considered."""
        return pareto_front(self.points or self.path)

    def recipe_stages(self, finetune: dict | None = None) -> list[dict]:
        """The chosen actions as recipe stages: prune (per-group ratios), decompose (per-layer ranks),
        quantize; `finetune` (a recipe budget) goes on the last stage before quantize, where the
        search fine-tuned."""
        stages = copy.deepcopy(self.stages or merge_stages(self.chosen.actions))
        structural = [s for s in stages if s["method"] != "quantize"]
        if finetune and structural:
            structural[-1]["finetune"] = dict(finetune)
        return stages


def apply_actions(model: nn.Module, actions: list[Action], example_input: torch.Tensor | None = None,
                  calib=None) -> nn.Module:
    """A copy of `model` with `actions` applied together (as their merged recipe stages)."""
    out = copy.deepcopy(model)
    if example_input is not None and all(a.stage for a in actions):
        return apply_stages(out, merge_stages(actions), example_input, calib)
    for a in actions:
        out = a.apply(out)
    return out


def measure_actions(model: nn.Module, actions: list[Action], *, evaluate: Callable[[nn.Module], float],
                    measure: Callable[[nn.Module], float], log: Callable[[str], None] = lambda s: None,
                    base_every: int = 10) -> tuple[Measured, list[Measured]]:
    """The base model and each action alone on a copy: (base, [metric and accuracy per action]).

    The base metric is the median of measurements taken after a discarded warm-up one and again after
    every `base_every` actions: a single first measurement of a latency is taken cold (a new runtime
    session, caches, clocks) and made every action look faster than it is.
    """
    model = model.eval()
    measure(model)  # warm-up, discarded
    samples = [measure(model)]
    base = Measured(None, samples[0], evaluate(model))
    log(f"base: {base.metric:.4g}, accuracy {base.accuracy:.2f}")
    measured = []
    for i, a in enumerate(actions):
        if i and base_every and i % base_every == 0:
            samples.append(measure(model))
        try:
            changed = a.apply(copy.deepcopy(model)).eval()
            measured.append(Measured(a, measure(changed), evaluate(changed)))
        except Exception as e:  # an action that does not apply is recorded, not fatal
            measured.append(Measured(a, float("inf"), 0.0, f"{type(e).__name__}: {e}"))
        m = measured[-1]
        log(f"{a.layer} {a.name}: {m.metric:.4g} ({m.metric / base.metric:.3f}x), accuracy {m.accuracy:.2f}"
            + (f" ({m.error})" if m.error else ""))
    samples.append(measure(model))
    base.metric, base.samples = statistics.median(samples), samples
    log(f"base: {base.metric:.4g} (median of {len(samples)}: {', '.join(f'{v:.4g}' for v in samples)})")
    return base, measured


def auto_compress(model: nn.Module, actions: list[Action], *, evaluate: Callable[[nn.Module], float],
                  example_input: torch.Tensor, target: Target | str, max_drop: float = 1.0,
                  runtime: str = "fastest", finetune: Callable[[nn.Module], list] | None = None,
                  calib=None, table: tuple[Measured, list[Measured]] | None = None, best_effort: bool = False,
                  log: Callable[[str], None] = lambda s: None) -> AutoResult:
    """Search the actions for the most accurate model predicted to meet `target`, build it, fine-tune it.

    Args:
        actions: candidates (`prune_actions`, `lowrank_actions`, `quant_actions`), combined as
            `torchslim.auto.actions.compatible` allows.
        evaluate: model -> accuracy (%) on validation data.
        target: e.g. "latency=0.5x"; latency is measured on `runtime` with one thread at the
            example input's batch size ("fastest": the installed runtime that runs the input model
            fastest, `torchslim.runtimes.fastest_runtime`).
        max_drop: accuracy points the prediction may lose; the result reports the real drop.
        finetune: model -> history; the recovery after the per-layer actions (before int8).
        calib: calibration images for int8 actions (e.g. `data.calibration_batches(256)`).
        table: (base, measured) from an earlier `measure_actions` with the same metric: the single
            actions are not measured again (e.g. to search a subset of them).
        best_effort: when no point is predicted to meet the target within `max_drop`, build the one
            predicted fastest (smallest) within `max_drop` instead of raising; `target_met` says which.
    """
    target = Target.parse(target) if isinstance(target, str) else target
    if not actions and table is None:
        raise InvalidInputError("no candidate actions: this model has no layer the actions can change")
    model = model.eval()
    if runtime == "fastest":
        from torchslim.runtimes import fastest_runtime

        runtime = fastest_runtime(model, example_input)[0] if target.metric == "latency" else "onnxruntime"
    measure = metric_fn(target.metric, example_input, runtime)
    if table is None:
        table = measure_actions(model, actions, evaluate=evaluate, measure=measure, log=log)
    base, measured = table
    paths = greedy_paths(base, measured)
    path = paths["all"]
    wholes = [m for m in measured if m.action.kind == "quant" and m.error is None and m.metric < base.metric]
    lines = [q for p in paths.values() for q in [p] + [project(base, p, w) for w in wholes]]
    goal = target.fraction * base.metric
    candidates = []  # per line, its most accurate point predicted to meet the target; best first
    for line in lines:
        ok = [i for i, p in enumerate(line)
              if p.predicted_metric <= goal and base.accuracy - p.predicted_accuracy <= max_drop]
        if ok:
            # equal predicted accuracy: the fewest actions. Predicted losses are clipped at zero (a gain is
            # validation noise), so a long run of "free" actions is a bound, not a promise.
            candidates.append((line, max(ok, key=lambda i: (line[i].predicted_accuracy, -len(line[i].actions)))))
    candidates.sort(key=lambda li: (-li[0][li[1]].predicted_accuracy, len(li[0][li[1]].actions),
                                    li[0][li[1]].predicted_metric))
    seen: set = set()  # lines of different kinds can propose the same point: check it once
    candidates = [c for c in candidates if not (_key(c[0][c[1]]) in seen or seen.add(_key(c[0][c[1]])))]
    points = [p for line in lines for p in line]
    target_met = bool(candidates)
    if not candidates:
        within = [(line, i) for line in lines for i, p in enumerate(line)
                  if base.accuracy - p.predicted_accuracy <= max_drop and p.predicted_metric < base.metric]
        if not best_effort or not within:
            nearest = min((line[i] for line, i in within), key=lambda p: p.predicted_metric, default=None)
            raise InvalidInputError(
                f"no combination of {len(measured)} actions is predicted to reach {target.metric}={target.fraction}x "
                f"within {max_drop} points; the nearest point within the drop is "
                + (describe(nearest, base) if nearest else "the base model (every action alone loses more)")
                + "; allow a larger drop or add actions")
        candidates = [min(within, key=lambda li: (li[0][li[1]].predicted_metric, -li[0][li[1]].predicted_accuracy))]
        goal = candidates[0][0][candidates[0][1]].predicted_metric
        log(f"target {target.metric}={target.fraction}x is out of reach within {max_drop} points; best effort: "
            f"{goal / base.metric:.3f}x predicted")
    checks = []

    def real_metric(m: nn.Module) -> float:
        """The metric of a built model. A latency is timed alternately with the input model (three rounds,
        medians) and scaled to the base's median: a shared machine's load drifts by more than a small
        action saves, so an unpaired time says little."""
        if target.metric != "latency":
            return measure(m)
        pairs = [(measure(model), measure(m)) for _ in range(3)]
        return base.metric * statistics.median(t for _, t in pairs) / statistics.median(b for b, _ in pairs)

    def settle(line: list[PathPoint], start: int) -> tuple[int, dict[int, float], bool]:
        """The first point of `line` from `start` on that meets the goal for real (bisecting: the metric
        falls as actions are added), else its fastest measured point; never past the points predicted
        within the drop."""
        real: dict[int, float] = {}

        def check(j: int) -> float:
            if j not in real:
                m = apply_actions(model, line[j].actions, example_input, calib).eval()
                real[j] = real_metric(m)
                checks.append({"actions": len(line[j].actions), "predicted": line[j].predicted_metric,
                               "measured": real[j]})
                log(f"{len(line[j].actions)} actions: predicted {line[j].predicted_metric:.4g}, measured {real[j]:.4g}")
            return real[j]

        lo = hi = start
        while hi + 1 < len(line) and base.accuracy - line[hi + 1].predicted_accuracy <= max_drop:
            hi += 1
        if check(lo) <= goal or not target_met:  # best effort: the chosen point as it is
            return lo, real, True
        if check(hi) > goal:
            return min(real, key=real.get), real, False
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if check(mid) <= goal else (mid, hi)
        return hi, real, True

    # The prediction adds single changes; the candidates are checked for real, best first, until one meets
    # the target (a line whose prediction was noise gives way to the next).
    misses = []
    for line, start in candidates[:MAX_CHECKED_LINES]:
        j, real, ok = settle(line, start)
        if ok:
            break
        misses.append((real[j], line, j))
        log(f"measured {real[j] / base.metric:.3f}x at best on this line, goal {goal / base.metric:.3f}x: "
            + ("trying the next candidate" if len(misses) < min(len(candidates), MAX_CHECKED_LINES) else "no more"))
    else:
        _, line, j = min(misses, key=lambda t: t[0])
        target_met = False
        log(f"no candidate meets the goal for real: keeping the fastest measured point within the drop "
            f"({len(line[j].actions)} actions)")
    point = line[j]
    structural = [a for a in point.actions if a.kind != "quant"]
    whole = [a for a in point.actions if a.kind == "quant"]
    compressed = apply_actions(model, structural, example_input).eval()
    acc0 = evaluate(compressed)
    history = finetune(compressed) if finetune and structural else []
    compressed = compressed.cpu().eval()
    stages = merge_stages(structural)
    acc_ft = None
    if whole:
        acc_ft = evaluate(compressed)
        compressed = apply_actions(compressed, whole, example_input, calib).eval()
        stages += merge_stages(whole)
    result = AutoResult(compressed, target, base, measured, path, point, real_metric(compressed), acc0,
                        evaluate(compressed), history, points, checks, acc_ft, stages)
    # The verdict is the final model's, measured after fine-tuning (and int8), not the prediction's.
    result.target_met = (result.metric <= target.fraction * base.metric
                         and base.accuracy - result.accuracy <= max_drop)
    result.verdict = verdict(result, max_drop)
    log(result.verdict)
    return result


def _key(p: PathPoint) -> frozenset:
    return frozenset((a.layer, a.name) for a in p.actions)


def describe(p: PathPoint, base: Measured) -> str:
    """A point in one line: its ratio, predicted drop and actions."""
    names = [f"{a.layer}: {a.name}" for a in p.actions]
    shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
    return (f"{p.predicted_metric / base.metric:.3f}x at {base.accuracy - p.predicted_accuracy:.2f} points "
            f"predicted ({len(names)} actions{': ' + shown if names else ''})")


def verdict(r: AutoResult, max_drop: float) -> str:
    """Met or not, judged on the returned model: its measured metric and its accuracy after fine-tuning."""
    t, ratio, drop = r.target, r.metric / r.base.metric, r.base.accuracy - r.accuracy
    measured = f"measured {ratio:.3f}x at {drop:.2f} points after fine-tuning"
    if r.target_met:
        return f"target {t.metric}={t.fraction}x met: {measured}"
    if drop <= max_drop:
        return (f"target {t.metric}={t.fraction}x not met ({measured}); the best point within the "
                f"{max_drop}-point drop is the returned one: {describe(r.chosen, r.base)}")
    return (f"target {t.metric}={t.fraction}x not met ({measured}, more than {max_drop} points): no built "
            f"point kept the accuracy after fine-tuning; the returned one was {describe(r.chosen, r.base)}; "
            f"fine-tune longer or allow less compression")

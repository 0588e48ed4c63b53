"""Candidate actions: one change to one layer (or coupled channel group, or the whole model).

An action is a recipe stage that changes one thing: prune a fraction of one channel group's channels
(`prune_actions`), decompose one layer (`lowrank_actions`), or quantize the whole model to int8
(`quant_actions`). A point of the search is a set of actions; `merge_stages` turns it into the
recipe stages that produce it (one prune stage with per-group ratios, one decompose stage with
per-layer ranks, a quantize stage last) and `apply_stages` applies them the way `torchslim
compress` does, so the written recipe replays the search's model.

Which actions may be combined (`compatible`):
- two actions with the same `key` (same kind, same layer or group) exclude each other; a stronger
  one may replace a weaker one;
- prune actions on different groups compose: they are applied in one prune call with per-group
  ratios, scored on the unpruned model, so each group loses the same channels as when pruned alone;
- a prune action and a decomposition exclude each other when the group touches the decomposed
  layer (as the filters it removes or as the input channels of the next conv). Their single
  measurements say nothing about the pair: the rank was chosen for the unpruned layer, and pruning
  a factorised layer would be a different action. Disjoint ones compose: pruning runs first and
  leaves the decomposed layers exactly as they were measured;
- a whole-model action (int8) is at most one, applied last, after the recovery fine-tuning.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

from torchslim.errors import InvalidInputError

KINDS = ("prune", "lowrank", "quant")


@dataclass
class Action:
    layer: str  # what it changes: a layer, a channel group (by its first layer's name), or "model"
    name: str  # e.g. "tucker 2x", "prune 50%", "int8"
    apply: Callable[[nn.Module], nn.Module] | None = field(default=None, repr=False)  # model -> changed model
    stage: dict = field(default_factory=dict)  # the recipe stage that does the same: {"method", "params"}
    kind: str = "lowrank"  # prune | lowrank | quant
    touches: frozenset = frozenset()  # the Conv2d / Linear layers whose weights it changes

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.layer}"


def compatible(a: Action, b: Action) -> bool:
    """Whether `a` and `b` may both be in one point (see the module docstring)."""
    if a.key == b.key:
        return False
    if "quant" in (a.kind, b.kind):
        return a.kind != b.kind
    return a.kind == b.kind or not (a.touches & b.touches)


# ------------------------------------------------------------------ stages
def merge_stages(actions: Sequence[Action]) -> list[dict]:
    """The recipe stages that apply `actions` together: prune, then decompose, then quantize."""
    order = {"prune": 0, "decompose": 1, "quantize": 2}
    merged: list[dict] = []
    staged = [a for a in actions if a.stage]  # an action given only as a function has no recipe stage
    for a in sorted(staged, key=lambda a: order.get(a.stage.get("method"), 1)):
        s = copy.deepcopy(a.stage)
        last = merged[-1] if merged else None
        if last and last["method"] == s["method"] == "prune" and \
                last["params"].get("criterion") == s["params"].get("criterion"):
            last["params"]["layer_ratios"].update(s["params"]["layer_ratios"])
        elif last and last["method"] == s["method"] == "decompose" and \
                last["params"]["method"] == s["params"]["method"]:
            last["params"]["rank"].update(s["params"]["rank"])
        else:
            merged.append(s)
    return merged


def apply_stages(model: nn.Module, stages: Sequence[dict], example_input: torch.Tensor,
                 calib=None) -> nn.Module:
    """Apply recipe stages (prune / decompose / quantize) through the recipe's own stage code
    (`torchslim.recipe.stages.apply_method`), so the written recipe replays this model; `model` may be
    modified. `calib` holds the quantize stage's calib_images training images, as in the recipe."""
    from torchslim.recipe.stages import apply_method

    for s in stages:
        if s["method"] not in ("prune", "decompose", "quantize"):
            raise InvalidInputError(f"auto cannot apply a {s['method']!r} stage")
        if s["method"] == "quantize":
            model = model.cpu().eval()
        model = apply_method(s["method"], model, s["params"], example_input=example_input, calib=calib,
                             inplace=True, where="auto: ")
    return model


def _action(layer, name, stage, kind, touches, example_input, calib=None) -> Action:
    return Action(layer, name, lambda net: apply_stages(net, [stage], example_input, calib), stage, kind,
                  frozenset(touches))


# ------------------------------------------------------------------ candidates
def prune_actions(model: nn.Module, example_input: torch.Tensor, ratios=(0.25, 0.5), criterion: str = "l1",
                  skip: Sequence[str] = ()) -> list[Action]:
    """Remove `ratio` of one coupled channel group's channels (lowest `criterion` first), per group and ratio.

    Groups come from the prune dependency graph (a residual stage is one group: every conv writing
    into the sum loses the same channels); each action is a physical removal, so MACs, parameters
    and latency fall. Groups named in `skip` (fnmatch patterns) and ratios that would remove no
    channel of a small group are left out.
    """
    import fnmatch

    from torchslim.graph import ChannelGraph
    from torchslim.prune.criteria import criterion_needs_data

    if criterion_needs_data(criterion):  # (an unknown name fails here with the known ones)
        raise InvalidInputError(f"criterion {criterion!r} reads data; auto's prune actions use a weight "
                                f"criterion (l1, l2, bn_scale)")
    g = ChannelGraph(model, example_input)
    weights = {n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    out = []
    for grp in g.groups:
        if any(fnmatch.fnmatch(grp.name, s) for s in skip):
            continue
        touches = {g.uses[i].module for i in grp.uses} & weights
        for r in ratios:
            if not 0 < r < 1:
                raise InvalidInputError(f"prune ratio {r} must be in (0, 1)")
            if int(r * len(grp)) < 1 or len(grp) - int(r * len(grp)) < 1:
                continue
            stage = {"method": "prune", "params": {"criterion": criterion, "layer_ratios": {grp.name: r}}}
            out.append(_action(grp.name, f"prune {r:.0%}", stage, "prune", touches, example_input))
    return out


def lowrank_actions(model: nn.Module, input_size, compressions=(2.0, 4.0), method: str = "tucker") -> list[Action]:
    """Tucker-2 (convs) / SVD (linears) of each layer alone at each compression ratio."""
    x = torch.zeros(1, *input_size)
    out = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and (m.groups != 1 or m.kernel_size == (1, 1)):
            continue  # nothing to gain (torchslim.lowrank says why); keeps the search small
        if not isinstance(m, (nn.Conv2d, nn.Linear)):
            continue
        for c in compressions:
            stage = {"method": "decompose", "params": {"method": method, "rank": {name: {"compression": c}}}}
            out.append(_action(name, f"{method} {c:g}x", stage, "lowrank", {name}, x))
    return out


# the int8 execution paths (torchslim.quant.PATHS) that run in each runtime
INT8_PATHS = {"onnxruntime": ("ort-qdq", "ort-qoperator"), "openvino": ("ov-qdq",)}


def quant_actions(calib, example_input: torch.Tensor, runtime: str = "onnxruntime", calib_images: int = 256,
                  observer: str = "mse", paths: Sequence[str] | None = None) -> list[Action]:
    """int8 post-training quantization of the whole model, one action per execution path of `runtime`:
    ONNX Runtime (QDQ pairs fused by ORT, or explicit QLinear operators: their speed and size differ)
    or OpenVINO (the QDQ model compiled to its int8 kernels).

    Its latency is the int8 graph's in that runtime (one thread), so it is a candidate only for latency
    targets measured there or for size targets; int8 changes neither MACs nor parameters, and the
    energy estimate counts 32-bit data.
    """
    if runtime not in INT8_PATHS:
        raise InvalidInputError("int8 runs in ONNX Runtime or OpenVINO: a latency target with quant actions needs "
                                "--runtime onnxruntime or openvino")
    paths = INT8_PATHS[runtime] if paths is None else paths
    out = []
    for path in paths:  # one action per execution path: each is measured on the target's own metric
        stage = {"method": "quantize", "params": {"method": "int8-ptq", "calib_images": calib_images,
                                                  "options": {"paths": [path], "path": path, "threads": 1,
                                                              "observer": observer}}}
        out.append(_action("model", f"int8 {path}", stage, "quant", (), example_input, calib))
    return out


def build_actions(model, data, target, kinds, *, runtime="onnxruntime", prune_ratios=(0.25, 0.5), criterion="l1",
                  compressions=(2.0, 4.0), calib=None, calib_images=256, log=lambda s: None):
    """The candidate actions of the kinds asked for (`KINDS`; quant only where it can change the target's
    metric), on one example image of `data`'s validation split; what `torchslim auto` searches over."""
    x = next(iter(data.val))[0][:1]
    unknown = set(kinds) - set(KINDS)
    if unknown or not kinds:
        raise InvalidInputError(f"actions {','.join(kinds)!r}: use a comma-separated subset of {','.join(KINDS)}")
    actions = []
    if "prune" in kinds:
        actions += prune_actions(model, x, prune_ratios, criterion)
    if "lowrank" in kinds:
        actions += lowrank_actions(model, data.input_size, compressions)
    if "quant" in kinds:
        if target.metric == "latency" and runtime in ("onnxruntime", "openvino"):
            actions += quant_actions(calib, x, runtime, calib_images)
        elif target.metric == "size":
            actions += quant_actions(calib, x, "onnxruntime", calib_images)
        else:
            log(f"quant actions skipped: int8 runs in ONNX Runtime or OpenVINO and leaves {target.metric} "
                f"{'on torch ' if target.metric == 'latency' else ''}unchanged (use latency there or size)")
    return actions

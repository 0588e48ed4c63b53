"""The stage registry: every recipe method is a function `(model, params, context) -> model`.

A method plugs in with a few lines:

    class PruneParams(StageParams):          # the keys a recipe may give, checked before the run
        criterion: str = "l1"
        ratio: float | None = None

    @register_stage("prune", params=PruneParams)
    def prune_stage(model, params, ctx):
        import torchslim
        return torchslim.prune(model, ctx.example_input(), data=ctx.data, **params)

`params` is the stage's validated `params:` mapping (unset keys left out, so the method's own defaults
apply). `ctx` (`StageContext`) gives the data, an example input, the stage's folder, a cache for
expensive intermediate results, and lets a method hand `Callback`s / a loss to the recovery
fine-tuning that follows (e.g. masks that keep pruned weights at zero, a distillation loss).
The adapters below call the method verbs of the other torchslim subpackages, imported lazily: a
recipe using a method that this installation lacks validates, and fails clearly when it runs.
"""
from __future__ import annotations

import fnmatch
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from torchslim.errors import InvalidInputError, UnsupportedModelError
from torchslim.registry import Registry
from torchslim.train import Callback

StageFn = Callable[[nn.Module, dict, "StageContext"], nn.Module]


class StageParams(BaseModel):
    """Base of a stage's params schema: unknown keys are errors (the recipe names the line)."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def smoke(cls, params: dict) -> dict:
        """The params for a smoke run (`torchslim.recipe.smoke`): the same work at a tiny size.

        Budgets and data are cut by the smoke run itself; a method overrides this only for an expensive
        option of its own (a sensitivity scan over many ratios, say). Default: unchanged.
        """
        return params


@dataclass(frozen=True)
class StageSpec:
    fn: StageFn
    params: type[BaseModel] | None  # None: any mapping is passed through unchecked
    needs_budget: bool = False  # finetune / distill: nothing to do without one
    doc: str = ""


STAGES: Registry[StageSpec] = Registry("recipe method")


def register_stage(name: str, *, params: type[BaseModel] | None = StageParams, needs_budget: bool = False,
                   overwrite: bool = False):
    """Register `fn(model, params: dict, ctx: StageContext) -> nn.Module` as recipe method `name`.

    Args:
        params: a pydantic model of the allowed params (default: none allowed); None skips checking.
        needs_budget: the stage does nothing without a `finetune`/`distill` budget.
    """
    def add(fn: StageFn) -> StageFn:
        STAGES.register(name, overwrite=overwrite)(StageSpec(fn, params, needs_budget, (fn.__doc__ or "").strip()))
        return fn

    return add


@dataclass
class StageContext:
    """What a stage may use besides the model and its params."""

    recipe: Any  # torchslim.recipe.schema.Recipe
    index: int  # 1-based position in the recipe
    name: str  # the stage folder name, e.g. "02-prune"
    stage_dir: Path
    data: Any  # torchslim.data.DataBundle
    input_size: tuple[int, int, int]
    device: torch.device
    seed: int
    callbacks: list = field(default_factory=list)  # handed to the recovery fine-tuning
    regularizers: list = field(default_factory=list)  # ditto: model -> scalar
    loss_fn: Callable | None = None  # ditto: (model, x, y) -> (loss, logits)
    metrics: dict = field(default_factory=dict)  # extra figures for metrics.json and the report
    artifacts: dict = field(default_factory=dict)  # name -> file in stage_dir (e.g. {"onnx": "model.onnx"})

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        """A deterministic batch from the eval split (a real image batch, not noise)."""
        x, _ = next(iter(self.data.split(self.recipe.data.eval_split)))
        if len(x) < batch_size:
            x = x.repeat((batch_size + len(x) - 1) // len(x), 1, 1, 1)
        return x[:batch_size].to(self.device)

    def cached(self, key: str, compute: Callable[[], Any]) -> Any:
        """`compute()` once per run: its JSON-able result is kept in the stage folder, so a resumed run
        (after a kill) reuses it instead of recomputing (e.g. a sensitivity scan)."""
        path = self.stage_dir / "cache" / f"{key}.json"
        if path.is_file():
            return json.loads(path.read_text())
        value = compute()
        from torchslim.train.distributed import is_main

        if is_main():
            _write_json(path, value)
        return value

    def load_model(self, spec) -> nn.Module:
        """Build a model from a recipe `ModelSpec` (a teacher, for instance)."""
        from torchslim.recipe.inputs import build_model

        return build_model(spec, self.recipe.data)[0].to(self.device)


def _write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, default=str))
    os.replace(tmp, path)


def _verb(name: str):
    """`torchslim.<name>`, or a clear error when this installation does not have that method yet."""
    import importlib

    module_name, _, attr = f"torchslim.{name}".rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise UnsupportedModelError(f"recipe method needs torchslim.{name}, which this installation does not "
                                    f"provide ({e})") from None


# ------------------------------------------------------------------ stages that need nothing else
@register_stage("finetune", needs_budget=True)
def finetune_stage(model: nn.Module, params: dict, ctx: StageContext) -> nn.Module:
    """Train with the stage's `finetune` budget (from scratch for a fresh model, or to recover)."""
    return model


class EvaluateParams(StageParams):
    split: Literal["train", "val", "test"] = "test"


@register_stage("evaluate", params=EvaluateParams)
def evaluate_stage(model: nn.Module, params: dict, ctx: StageContext) -> nn.Module:
    """Record top-1/top-5 and loss on a split (every stage is measured anyway; this adds a split)."""
    from torchslim.train import evaluate

    split = params.get("split", "test")
    ctx.metrics[f"{split}_eval"] = evaluate(model, ctx.data.split(split), device=ctx.device)
    return model


class ExportParams(StageParams):
    format: Literal["onnx"] = "onnx"
    file: str = "model.onnx"
    rtol: float = Field(default=1e-3, ge=0)
    atol: float = Field(default=1e-4, ge=0)


@register_stage("export", params=ExportParams)
def export_stage(model: nn.Module, params: dict, ctx: StageContext) -> nn.Module:
    """Export to ONNX in the stage folder and check ONNX Runtime's outputs against PyTorch's."""
    from torchslim.onnx_export import to_onnx, verify_onnx
    from torchslim.train.distributed import is_main

    p = ExportParams(**params)
    x = ctx.example_input(batch_size=4).cpu()
    model = model.cpu().eval()
    if is_main():
        path = to_onnx(model, x[:1], ctx.stage_dir / p.file)
        check = verify_onnx(model, path, x, rtol=p.rtol, atol=p.atol)
        ctx.metrics["onnx"] = check | {"file": p.file, "bytes": path.stat().st_size}
        ctx.artifacts["onnx"] = p.file
    return model


# ------------------------------------------------------------------ adapters to the method verbs
# Their signatures are the ones announced by the method issues; the lead adjusts them at integration.
class _Options(StageParams):
    options: dict[str, Any] = {}  # anything else, passed to the verb as keyword arguments


class SensitivityParams(StageParams):
    """A sensitivity scan before pruning (Li et al. 2017, sec. 4.2: the sensitive layers are skipped)."""

    ratios: list[float] = Field(default=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9], min_length=1)
    max_batches: int | None = Field(default=10, gt=0)  # eval-split batches per evaluation
    max_drop: float = Field(default=2.0, ge=0)  # points of top-1 a group may lose when pruned alone
    min_ratio: float | None = Field(default=None, ge=0, lt=1)  # tolerated ratio below this: skipped
    groups: list[str] | None = None  # group-name patterns to scan (fnmatch); None: every group
    max_groups: int | None = Field(default=None, gt=0)  # scan at most this many, spread evenly over the net


class PruneParams(_Options):
    criterion: str = "l1"
    ratio: float | None = Field(default=None, gt=0, lt=1)
    target_macs: float | None = Field(default=None, gt=0)
    # {group name: fraction removed}; alone, only these groups are pruned (what `torchslim auto` writes)
    layer_ratios: dict[str, float] | None = None
    round_to: int | None = Field(default=None, ge=1)  # kept channels per group: a multiple of this (None: prune's default)
    sensitivity: bool | SensitivityParams = False
    # recovery without training: least-squares refit of layers that lost inputs (He et al. 2017),
    # BatchNorm statistics re-estimated on this many training images
    reconstruct: bool = False
    bn_recalibration: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _ratios(self):
        bad = {k: v for k, v in (self.layer_ratios or {}).items() if not 0 <= v < 1}
        if bad:
            raise ValueError(f"layer_ratios must be fractions in [0, 1), got {bad}")
        return self

    @classmethod
    def smoke(cls, params: dict) -> dict:
        s = params.get("sensitivity")
        if not s:
            return params
        s = SensitivityParams.model_validate({} if s is True else s)
        # one ratio (the smallest: the skip rule keeps its meaning), one batch per evaluation, 3 groups
        small = {"ratios": [min(s.ratios)], "max_batches": 1, "max_groups": min(s.max_groups or 3, 3)}
        return params | {"sensitivity": s.model_dump(exclude_unset=True) | small}


def _sensitive_groups(model: nn.Module, params: SensitivityParams, criterion: str, ctx: StageContext) -> dict:
    """Scan (cached: a resumed run does not repeat it), plot into the stage folder, and name the
    groups whose tolerated ratio (largest scanned ratio within `max_drop`) is below `min_ratio`
    (default: the smallest scanned ratio, i.e. groups that cannot lose even that)."""
    from torchslim.prune.sensitivity import Sensitivity, sensitivity

    def scan():
        groups = params.groups
        if params.max_groups is not None:
            from torchslim.graph import ChannelGraph

            names = [g.name for g in ChannelGraph(model, ctx.example_input()).groups
                     if groups is None or any(fnmatch.fnmatch(g.name, p) for p in groups)]
            if len(names) > params.max_groups:  # first, last and evenly between
                n = params.max_groups
                names = [names[round(i * (len(names) - 1) / max(n - 1, 1))] for i in range(n)]
            groups = names
        s = sensitivity(model, ctx.example_input(), ctx.data, criterion=criterion, ratios=params.ratios,
                        max_batches=params.max_batches, split="val", groups=groups)
        return {"baseline": s.baseline, "ratios": s.ratios, "curves": s.curves}

    s = Sensitivity(**ctx.cached("sensitivity", scan))
    from torchslim.train.distributed import is_main

    if is_main():
        s.plot(ctx.stage_dir / "sensitivity.png")
    tolerated = s.layer_ratios(params.max_drop)
    floor = params.min_ratio if params.min_ratio is not None else min(params.ratios)
    return {"baseline": s.baseline, "tolerated": tolerated,
            "skipped": sorted(g for g, r in tolerated.items() if r < floor)}


def prune_kwargs(params: dict) -> dict:
    """A prune stage's params as `torchslim.prune` keywords: `layer_ratios` alone prunes only the
    groups it names (allocation "layers", ratio 0 elsewhere)."""
    p = dict(params)
    if p.get("layer_ratios") is not None:
        p.setdefault("allocation", "layers")
        if p.get("ratio") is None and p.get("target_macs") is None:
            p["ratio"] = 0.0
    return p


@register_stage("prune", params=PruneParams)
def prune_stage(model: nn.Module, params: dict, ctx: StageContext) -> nn.Module:
    """Structured pruning: `torchslim.prune(model, example_input, criterion=, ratio=|target_macs=, data=)`;
    `layer_ratios` gives a ratio per channel group (allocation "layers").

    With `sensitivity` the groups a scan finds sensitive are added to the `skip` option (Li et al. 2017)."""
    p = prune_kwargs(params)
    if p.get("round_to") is None:
        p.pop("round_to", None)
    opts = dict(p.pop("options", {}))
    sens = p.pop("sensitivity", False)
    if p.get("ratio") is None and p.get("target_macs") is None:
        raise InvalidInputError(f"stage {ctx.name}: prune needs `ratio`, `target_macs` or `layer_ratios`")
    if sens:
        found = _sensitive_groups(model, SensitivityParams.model_validate({} if sens is True else sens),
                                  p.get("criterion", "l1"), ctx)
        ctx.metrics["sensitivity"] = found
        opts["skip"] = tuple(opts.get("skip", ())) + tuple(found["skipped"])
    # the bundle, not its train loader: data criteria (apoz, taylor...) read its splits
    return _verb("prune")(model, ctx.example_input(), data=ctx.data, **p, **opts)


class KeepZeros(Callback):
    """Keeps the weights that are zero now at zero during fine-tuning (re-applied after every step).

    Whatever the sparsity method does internally, the recovery after it must not regrow pruned
    weights; the masks follow from the weights, so a resumed run rebuilds them from its checkpoint.
    """

    def __init__(self, model: nn.Module):
        self.masks = {n: p.detach() != 0 for n, p in model.named_parameters() if p.dim() > 1}

    def after_step(self, model: nn.Module, step: int) -> None:
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in self.masks:
                    p.mul_(self.masks[n])


class SparsifyParams(_Options):
    method: str = "magnitude"
    # one fraction of zeros for every layer, or {layer name: fraction} (e.g. a paper's per-layer rates)
    sparsity: float | dict[str, float] = Field(default=0.5)

    @model_validator(mode="after")
    def _fractions(self):
        values = self.sparsity.values() if isinstance(self.sparsity, dict) else [self.sparsity]
        bad = [v for v in values if not 0 <= v < 1]
        if bad:
            raise ValueError(f"sparsity must be a fraction in [0, 1) (or a dict of them), got {self.sparsity}")
        return self


@register_stage("sparsify", params=SparsifyParams)
def sparsify_stage(model: nn.Module, params: dict, ctx: StageContext) -> nn.Module:
    """Unstructured sparsity: `torchslim.sparsify(model, method=, sparsity=, data=)`; with a policy it is
    re-applied each scheduled epoch (AGP), so it works in place (masks are attached to the model's layers)."""
    p = dict(params)
    opts = p.pop("options", {})
    model = _verb("sparsify")(model, data=ctx.data.train, inplace=True, **p, **opts)
    ctx.callbacks.append(KeepZeros(model))
    return model


class DecomposeParams(_Options):
    method: str = "tucker"
    rank: Any = None  # a number, a fraction, "vbmf", or {layer: rank}
    layers: list[str] | None = None


@register_stage("decompose", params=DecomposeParams)
def decompose_stage(model: nn.Module, params: dict, ctx: StageContext) -> nn.Module:
    """Low-rank: `torchslim.decompose(model, method=, rank=, layers=)`."""
    p = dict(params)
    opts = p.pop("options", {})
    return _verb("decompose")(model, **p, **opts)


INT8_PTQ = ("int8-ptq", "int8")  # they build several int8 execution paths and time each to pick one


class QuantizeParams(_Options):
    method: str = "int8-ptq"
    calib_images: int = Field(default=512, gt=0)

    @classmethod
    def smoke(cls, params: dict) -> dict:
        if params.get("method", "int8-ptq") not in INT8_PTQ:
            return params
        opts = dict(params.get("options", {}))  # time each path briefly: the same paths are still built
        opts["repeats"] = min(opts.get("repeats", 3), 3)
        opts["min_time_s"] = min(opts.get("min_time_s", 0.02), 0.02)
        return params | {"options": opts}


@register_stage("quantize", params=QuantizeParams)
def quantize_stage(model: nn.Module, params: dict, ctx: StageContext) -> nn.Module:
    """Quantization: `torchslim.quantize(model, method=, calib=)`, calibrated on `calib_images` train images."""
    p = dict(params)
    opts = dict(p.pop("options", {}))
    n = p.pop("calib_images", 512)
    if p.get("method", "int8-ptq") in INT8_PTQ:
        opts.setdefault("calib_images", n)  # else Int8Config's own default would cap what the recipe asked for
    calib = ctx.data.calibration_batches(n)
    return _verb("quantize")(model.cpu(), calib=calib, **p, **opts)


class EncodeParams(_Options):
    file: str = "model.slim"


@register_stage("encode", params=EncodeParams)
def encode_stage(model: nn.Module, params: dict, ctx: StageContext) -> nn.Module:
    """Coded model file: `torchslim.encode.save(model, path)` then `torchslim.encode.load(path)` (.slim)."""
    p = dict(params)
    opts = p.pop("options", {})
    path = ctx.stage_dir / p.get("file", "model.slim")
    from torchslim.train.distributed import barrier, is_main

    if is_main():
        _verb("encode.save")(model, path, **opts)
    barrier()
    ctx.metrics["slim_bytes"] = path.stat().st_size
    ctx.artifacts["slim"] = path.name
    return _verb("encode.load")(path)


@register_stage("distill", params=StageParams, needs_budget=True)
def distill_stage(model: nn.Module, params: dict, ctx: StageContext) -> nn.Module:
    """Train the model as a student with the stage's `distill` budget (teacher, methods, epochs)."""
    return model


def run_distillation(model: nn.Module, budget, ctx: StageContext, config, checkpoint_dir: Path) -> nn.Module:
    """Recovery by distillation: `torchslim.distill(student, teacher, data, method=[...], config=, ...)`."""
    teacher = ctx.load_model(budget.teacher).eval()
    out = _verb("distill")(model, teacher, ctx.data, method=list(budget.method), config=config,
                           checkpoint_dir=checkpoint_dir, callbacks=list(ctx.callbacks), **budget.params)
    return out if isinstance(out, nn.Module) else model

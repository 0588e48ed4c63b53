"""The stage registry: every recipe method is a function `(model, params, context) -> model`.

A method plugs in with a few lines:

    class PruneParams(StageParams):          # the keys a recipe may give, checked before the run
        criterion: str = "l1"
        ratio: float | None = None

    @register_stage("prune", params=PruneParams)
    def prune_stage(model, params, ctx):
        import torchslim
        return torchslim.prune(model, example_input=ctx.example_input(), data=ctx.data, **params)

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
from typing import Any, Callable, ClassVar, Literal

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
            write_json(path, value)
        return value

    def load_model(self, spec) -> nn.Module:
        """Build a model from a recipe `ModelSpec` (a teacher, for instance)."""
        from torchslim.recipe.inputs import build_model

        return build_model(spec, self.recipe.data)[0].to(self.device)


def write_json(path: Path, value) -> None:
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
def apply_method(family: str, model: nn.Module, params: dict, *, example_input: torch.Tensor | None = None,
                 data=None, calib=None, inplace: bool = False, where: str = "") -> nn.Module:
    """A method stage's params as one call of its verb: the one translation that recipe stages and
    `torchslim auto`'s actions (torchslim.auto.actions) share, so both build the same model.

    Args:
        params: the stage's validated params (the method's name, its fields, `options`).
        data: what the method reads (prune: the DataBundle; sparsify: the training loader; decompose:
            images for response methods); calib: quantize's calibration batches.
        inplace: the caller's model may be changed (sparsify always is: masks stay attached).
    """
    from torchslim import methods

    p = dict(params)
    opts = dict(p.pop("options", None) or {})
    if family == "prune":
        p = prune_kwargs(p)
        if p.get("round_to") is None:
            p.pop("round_to", None)
        if p.get("ratio") is None and p.get("target_macs") is None:
            raise InvalidInputError(f"{where}prune needs `ratio`, `target_macs` or `layer_ratios`")
        return _verb("prune")(model, p.pop("criterion", "l1"), example_input=example_input, data=data,
                              inplace=inplace, **p, **opts)
    if family == "sparsify":
        spec = methods.get("sparsify", p.pop("method", "magnitude"))
        return _verb("sparsify")(model, spec.name, data=data, inplace=True, **p, **spec.coerce(opts))
    if family == "decompose":
        spec = methods.get("decompose", p.pop("method", "tucker"))
        # a rank per named layer: each must be decomposed, or the reason why not is the error
        opts.setdefault("strict", True)
        if example_input is not None:
            opts.setdefault("input_size", tuple(example_input.shape[1:]))
        return _verb("decompose")(model, spec.name, data=data if spec.needs_data else None, inplace=inplace,
                                  **p, **opts)
    if family == "quantize":
        spec = methods.get("quantize", p.pop("method", "int8-ptq"))
        n = p.pop("calib_images", None)
        if calib is None:
            raise InvalidInputError(f"{where}quantize needs calibration images (calib=)")
        if n is not None and spec.name == "int8-ptq":
            opts.setdefault("calib_images", n)  # else Int8Config's own default would cap what was asked for
        return _verb("quantize")(model.cpu(), params.get("method", "int8-ptq"), data=data, calib=calib, **p,
                                 **spec.coerce(opts))
    raise InvalidInputError(f"{where}no verb applies a {family!r} stage's params")



# Their signatures are the ones announced by the method issues; the lead adjusts them at integration.
class _Options(StageParams):
    """A method stage's params: the method's name and the most used fields here; `options` holds any
    other field of the method's config (torchslim.methods), checked against it when the recipe loads."""

    FAMILY: ClassVar[str] = ""
    METHOD_KEY: ClassVar[str] = "method"  # the param naming the method (prune: criterion)
    DEFAULT_METHOD: ClassVar[str] = ""
    options: dict[str, Any] = {}  # other fields of the method's config, passed to the verb as keywords

    @model_validator(mode="after")
    def _method_and_options(self):
        from torchslim import methods
        from torchslim.errors import TorchslimError

        try:
            spec = methods.get(self.FAMILY, getattr(self, self.METHOD_KEY, None) or self.DEFAULT_METHOD)
            spec.check_options({k: v for k, v in self.options.items() if k not in EXTRA_OPTIONS.get(self.FAMILY, ())})
        except ImportError:  # a family this installation lacks: the stage fails clearly when it runs
            return self
        except TorchslimError as e:  # pydantic turns a ValueError into an error at the recipe's line
            raise ValueError(str(e)) from None
        return self


# option spellings a family accepts besides its config fields (kmeans: bits={"conv": .., "fc": ..})
EXTRA_OPTIONS = {"quantize": ("conv_bits", "fc_bits")}


class SensitivityParams(StageParams):
    """A sensitivity scan before pruning (Li et al. 2017, sec. 4.2: the sensitive layers are skipped)."""

    ratios: list[float] = Field(default=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9], min_length=1)
    max_batches: int | None = Field(default=10, gt=0)  # eval-split batches per evaluation
    max_drop: float = Field(default=2.0, ge=0)  # points of top-1 a group may lose when pruned alone
    min_ratio: float | None = Field(default=None, ge=0, lt=1)  # tolerated ratio below this: skipped
    groups: list[str] | None = None  # group-name patterns to scan (fnmatch); None: every group
    max_groups: int | None = Field(default=None, gt=0)  # scan at most this many, spread evenly over the net


class PruneParams(_Options):
    FAMILY, METHOD_KEY, DEFAULT_METHOD = "prune", "criterion", "l1"
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
    p = dict(params)
    sens = p.pop("sensitivity", False)
    if sens:
        found = _sensitive_groups(model, SensitivityParams.model_validate({} if sens is True else sens),
                                  p.get("criterion", "l1"), ctx)
        ctx.metrics["sensitivity"] = found
        opts = dict(p.get("options", {}))
        opts["skip"] = tuple(opts.get("skip", ())) + tuple(found["skipped"])
        p["options"] = opts
    # the bundle, not its train loader: data criteria (apoz, taylor...) read its splits
    return apply_method("prune", model, p, example_input=ctx.example_input(), data=ctx.data, where=f"stage {ctx.name}: ")


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
    FAMILY, DEFAULT_METHOD = "sparsify", "magnitude"
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
    model = apply_method("sparsify", model, params, data=ctx.data, where=f"stage {ctx.name}: ")
    ctx.callbacks.append(KeepZeros(model))
    return model


class DecomposeParams(_Options):
    FAMILY, DEFAULT_METHOD = "decompose", "tucker"
    method: str = "tucker"
    rank: Any = None  # a number, a fraction, "vbmf", or {layer: rank}
    layers: list[str] | None = None


@register_stage("decompose", params=DecomposeParams)
def decompose_stage(model: nn.Module, params: dict, ctx: StageContext) -> nn.Module:
    """Low-rank: `torchslim.decompose(model, method, rank=, layers=)`; response methods (channel, zhang3d)
    read the recipe's training images."""
    return apply_method("decompose", model, params, example_input=ctx.example_input(), data=ctx.data,
                        where=f"stage {ctx.name}: ")


def _is_int8_ptq(method: str) -> bool:
    """int8 PTQ (by any of its names) builds several int8 execution paths and times each to pick one."""
    from torchslim import methods
    from torchslim.errors import TorchslimError

    try:
        return methods.get("quantize", method).name == "int8-ptq"
    except (TorchslimError, ImportError):
        return False


class QuantizeParams(_Options):
    FAMILY, DEFAULT_METHOD = "quantize", "int8-ptq"
    method: str = "int8-ptq"
    calib_images: int = Field(default=512, gt=0)

    @classmethod
    def smoke(cls, params: dict) -> dict:
        if not _is_int8_ptq(params.get("method", "int8-ptq")):
            return params
        opts = dict(params.get("options", {}))  # time each path briefly: the same paths are still built
        opts["repeats"] = min(opts.get("repeats", 3), 3)
        opts["min_time_s"] = min(opts.get("min_time_s", 0.02), 0.02)
        return params | {"options": opts}


@register_stage("quantize", params=QuantizeParams)
def quantize_stage(model: nn.Module, params: dict, ctx: StageContext) -> nn.Module:
    """Quantization: `torchslim.quantize(model, method=, calib=)`, calibrated on `calib_images` train images."""
    calib = ctx.data.calibration_batches(params.get("calib_images", 512))
    # methods that train (kmeans, binary, ternary, int8-qat) train on the recipe's data
    return apply_method("quantize", model, {"calib_images": 512, **params}, data=ctx.data, calib=calib,
                        where=f"stage {ctx.name}: ")


class EncodeParams(_Options):
    FAMILY, METHOD_KEY, DEFAULT_METHOD = "encode", "format", "slim"
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
    """Recovery by distillation: `torchslim.distill(student, [methods], data=, teacher=, config=, ...)`."""
    teacher = ctx.load_model(budget.teacher).eval()
    out = _verb("distill")(model, list(budget.method), data=ctx.data, teacher=teacher, config=config,
                           checkpoint_dir=checkpoint_dir, callbacks=list(ctx.callbacks), **budget.params)
    return out if isinstance(out, nn.Module) else model

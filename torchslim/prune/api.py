"""`torchslim.prune`: scores -> selection -> surgery, one-shot, iterative or layer by layer."""
from __future__ import annotations

import copy
import fnmatch
import time
from dataclasses import dataclass, field, fields, replace
from typing import Callable

import torch
from torch import nn

from torchslim.data import as_batches
from torchslim.errors import InvalidInputError
from torchslim.graph import ChannelGraph
from torchslim.prune.allocation import search_ratio, select
from torchslim.prune.criteria import CRITERIA, ScoreContext, criterion_needs_data
from torchslim.progress import note
from torchslim.prune.surgery import apply_plan
from torchslim.train import FitConfig, fit

REPORT_ATTR = "_torchslim_prune_report"
ROUND_TO = 8  # default multiple of kept channels, chosen by benchmarks/bench_round_to.py


@dataclass
class PruneConfig:
    """How to prune. Give `ratio` or a target (`target_macs` / `target_params`, fractions of the original).

    Attributes:
        criterion: name in `torchslim.prune.criteria.CRITERIA` (l1, l2, bn_scale, random, apoz, entropy,
            taylor, random_masks, lda, icc, oracle).
        allocation: uniform | global | layers (per-group ratios in `layer_ratios`, e.g. from sensitivity).
        schedule: oneshot | iterative (`steps` rounds of prune + `finetune`) | layerwise (one group at
            a time with `finetune` after each, the entropy-pruning schedule); `final_finetune` after all.
        skip: group-name patterns never pruned; min_keep: fraction of each group always kept.
        round_to: every pruned group keeps a multiple of this many channels (1: no rounding). The
            default is measured (benchmarks/bench_round_to.py): ONNX Runtime runs odd widths such as
            13/26/51 slower than the unpruned 16/32/64, so unrounded pruning can cost latency.
        batches: data batches read by data-driven criteria; options: criterion settings.
        reconstruct: after each pruning step, refit by least squares every layer that lost input
            channels so its outputs match the original network's (He et al. 2017; ThiNet); needs data.
        bn_recalibration: after each step, re-estimate BatchNorm statistics on this many training
            images (0: off); needs data.
        calibration_images: training images the reconstruction samples.
        distill: fine-tune with Hinton KD from the unpruned model (`torchslim.distill.from_original`)
            instead of the hard labels alone; the default recovery loss.
        filter_fn: `filter_fn(module, name) -> bool` on each group's first layer: groups it rejects are
            never pruned (as `skip`, by function instead of name patterns).
    """

    criterion: str = "l1"
    ratio: float | None = field(default=None, metadata={"help": "fraction of channels removed from every group"})
    target_macs: float | None = field(default=None, metadata={"help": "prune until MACs <= this fraction of the original"})
    target_params: float | None = field(default=None, metadata={"help": "prune until parameters <= this fraction of the original"})
    allocation: str = field(default="uniform", metadata={"choices": ("uniform", "global", "layers")})
    layer_ratios: dict[str, float] | None = field(default=None, metadata={"help": "{group: ratio} for allocation \"layers\""})
    schedule: str = field(default="oneshot", metadata={"choices": ("oneshot", "iterative", "layerwise")})
    steps: int = field(default=3, metadata={"help": "iterative: pruning rounds"})
    finetune: FitConfig | None = field(default=None, metadata={"help": "recovery after each round (iterative, layerwise)"})
    final_finetune: FitConfig | None = field(default=None, metadata={"help": "fine-tuning after the last round"})
    skip: tuple[str, ...] = ()
    min_keep: float = 0.05
    round_to: int = ROUND_TO
    batches: int = 8
    options: dict = field(default_factory=dict)
    progress: bool = field(default=False, metadata={"help": "log each step (torchslim.progress)"})
    reconstruct: bool = False
    bn_recalibration: int = 0
    calibration_images: int = 256
    distill: bool = True
    filter_fn: Callable[[nn.Module, str], bool] | None = None

    def __post_init__(self):
        targets = [v for v in (self.ratio, self.target_macs, self.target_params) if v is not None]
        if len(targets) != 1:
            raise InvalidInputError("give exactly one of ratio, target_macs, target_params "
                                    f"(got ratio={self.ratio}, target_macs={self.target_macs}, "
                                    f"target_params={self.target_params})")
        if self.schedule not in ("oneshot", "iterative", "layerwise"):
            raise InvalidInputError(f"unknown schedule {self.schedule!r}; use oneshot, iterative or layerwise")
        if self.allocation not in ("uniform", "global", "layers"):
            raise InvalidInputError(f"unknown allocation {self.allocation!r}; use uniform, global or layers")
        if not isinstance(self.round_to, int) or self.round_to < 1:
            raise InvalidInputError(f"round_to must be a positive integer, got {self.round_to!r}")
        CRITERIA.get(self.criterion)  # fails early with the known names
        if self.bn_recalibration < 0 or self.calibration_images <= 0:
            raise InvalidInputError(f"bn_recalibration must be >= 0 and calibration_images > 0, got "
                                    f"{self.bn_recalibration} and {self.calibration_images}")


def _log(cfg, msg):
    if cfg.progress:  # the library's one progress channel (stderr), not the CLI's console
        note(msg)


class _Pruner:
    def __init__(self, model, example_input, cfg: PruneConfig, data):
        self.model, self.x, self.cfg, self.data = model, example_input, cfg, data
        if criterion_needs_data(cfg.criterion) and data is None:
            raise InvalidInputError(f"criterion {cfg.criterion!r} reads data: pass data=get_data(...)")
        if (cfg.reconstruct or cfg.bn_recalibration) and data is None:
            raise InvalidInputError("reconstruct and bn_recalibration read training images: pass data=get_data(...)")
        self.reconstruction: list[dict] = []
        self.teacher = copy.deepcopy(model).eval() if cfg.distill and (cfg.finetune or cfg.final_finetune) else None
        self._graph = ChannelGraph(model, example_input)
        self.original = dict(self._graph.base)
        self.current = dict(self.original)
        self.notes = [n for n in self._graph.trace.notes if n != "model output"]  # why channels were pinned
        self.tracer, self.tracer_caveat = self._graph.trace.tracer, self._graph.trace.caveat
        self.steps: list[dict] = []
        self.taylor = None

    @property
    def graph(self) -> ChannelGraph:
        if self._graph is None:  # retrace lazily after surgery
            self._graph = ChannelGraph(self.model, self.x)
        return self._graph

    def filtered_out(self) -> tuple[str, ...]:
        """The groups `filter_fn` rejects (judged on each group's first layer)."""
        if self.cfg.filter_fn is None:
            return ()
        mods = dict(self.model.named_modules())
        return tuple(g.name for g in self.graph.groups
                     if g.name in mods and not self.cfg.filter_fn(mods[g.name], g.name))

    def scores(self, ratio):
        ctx = ScoreContext(self.model, self.graph, self.data, ratio=ratio, batches=self.cfg.batches,
                           options=self.cfg.options)
        if self.taylor is not None and self.taylor.graph is self.graph:
            ctx.state["taylor"] = self.taylor
        return CRITERIA.get(self.cfg.criterion)(ctx)

    def step(self, *, ratio=None, goal=None, metric="macs", only=None):
        """One prune round: `ratio` of each group, or down to `goal` (absolute MACs/params)."""
        g, cfg = self.graph, self.cfg
        skip = tuple(cfg.skip) + self.filtered_out()
        if only is not None:  # layer-by-layer: every other group is skipped this round
            skip += tuple(x.name for x in g.groups if x.name != only)
        kw = dict(allocation=cfg.allocation, layer_ratios=cfg.layer_ratios, skip=skip, min_keep=cfg.min_keep,
                  round_to=cfg.round_to)
        t0 = time.perf_counter()
        if goal is not None and cfg.allocation != "global":
            # uniform: MACs depend on counts only, so the ratio is found before scoring
            ratio, _ = search_ratio(g, torch.zeros(g.num_units), goal / g.base[metric], metric=metric,
                                    **(kw | {"round_to": 1}))  # the criteria's ratio hint; rounded below
        scores = self.scores(ratio)
        if goal is not None:  # again with the scores: rounded plans are topped up to the goal
            ratio, plan = search_ratio(g, scores, goal / g.base[metric], metric=metric, **kw)
        else:
            plan = select(g, scores, ratio, **kw)
        before = dict(g.base)
        after = g.estimate(plan)  # exact (tested against the profiler), no retrace needed
        original = copy.deepcopy(self.model) if cfg.reconstruct else None
        kept = g.kept_indices(plan) if cfg.reconstruct else None
        apply_plan(self.model, g, plan)
        self._graph, self.current = None, after
        self.recover_without_training(original, kept)
        row = {"ratio": round(float(ratio), 4), "removed_channels": int(plan.sum()), "macs_before": before["macs"],
               "macs_after": after["macs"], "params_after": after["params"],
               "time_s": round(time.perf_counter() - t0, 2)}
        if only:
            row["group"] = only
        self.steps.append(row)
        _log(cfg, f"pruned {row['removed_channels']} channels{' of ' + only if only else ''}: MACs "
                  f"{before['macs'] / 1e6:.1f}M -> {after['macs'] / 1e6:.1f}M")
        return row

    def recover_without_training(self, original, kept) -> None:
        """Least-squares refit of the layers that lost inputs, then BatchNorm statistics, if asked."""
        cfg = self.cfg
        if cfg.reconstruct:
            from torchslim.prune.reconstruct import reconstruct

            rows = reconstruct(original, self.model, kept, as_batches(self.data, cfg.calibration_images))
            self.reconstruction.extend(rows)
            _log(cfg, f"least-squares reconstruction of {len(rows)} layers")
        if cfg.bn_recalibration:
            from torchslim.train import recalibrate_batchnorm

            recalibrate_batchnorm(self.model, as_batches(self.data, cfg.bn_recalibration))

    def finetune(self, fc: FitConfig | None, label: str = "prune: fine-tuning"):
        if fc is None or self.data is None or fc.epochs == 0:
            return None
        fc = replace(fc, label=label)
        callbacks = []
        if self.cfg.criterion == "taylor":  # Molchanov et al.: the criterion accumulates while fine-tuning
            from torchslim.prune.criteria.taylor import TaylorCallback

            self.taylor = TaylorCallback(self.graph)
            callbacks.append(self.taylor)
        loss_fn = None
        if self.teacher is not None:
            from torchslim.distill import from_original

            loss_fn = from_original(self.teacher)
        from torchslim.data import as_loaders

        train, val = as_loaders(self.data)  # a bundle, a (train, val) pair or one loader
        res = fit(self.model, train, val_loader=val, config=fc, callbacks=callbacks, loss_fn=loss_fn)
        self.model.cpu()
        return res.last


def _is_input(x) -> bool:
    """An example input (the old second argument): a tensor, or a tuple / dict of them."""
    if isinstance(x, torch.Tensor):
        return True
    values = x.values() if isinstance(x, dict) else x if isinstance(x, (tuple, list)) else ()
    return bool(values) and all(isinstance(v, torch.Tensor) for v in values)


def example_input_for(model: nn.Module, data=None) -> torch.Tensor:
    """One input for tracing: the first training image of `data`, else zeros of the recorded input size."""
    if data is not None:
        from torchslim.verbs import images

        return images(data, 1)[0][:1]
    size = (getattr(model, "_torchslim_arch", None) or {}).get("input_size")
    if not size:
        raise InvalidInputError("prune traces the model: pass example_input= (e.g. torch.zeros(1, 3, 32, 32)) "
                                "or data=")
    return torch.zeros(1, *size)


def prune(model: nn.Module, method="l1", *args, data=None, filter_fn=None, example_input=None,
          ratio: float | None = None, target_macs: float | None = None, target_params: float | None = None,
          config: PruneConfig | None = None, inplace: bool = False, **options) -> nn.Module:
    """Structured pruning: remove whole channels and return a smaller dense model.

    Args:
        model: a traceable CNN (torchvision zoo, torchslim models, most custom models).
        method: importance criterion name (see `torchslim.prune.criteria.CRITERIA`), or a `PruneConfig`.
        data: a `torchslim.data` DataBundle, needed by data-driven criteria and by fine-tuning.
        filter_fn: `filter_fn(module, name) -> bool`: groups whose first layer it rejects stay whole.
        example_input: a tensor the model accepts, e.g. torch.randn(1, 3, 32, 32); a tuple of tensors for
            `model(a, b)` or a dict for keyword inputs `model(a=..., b=...)`. Default: one image of
            `data`, else zeros of the input size `create_model` recorded.
        ratio: fraction of channels removed from every group; or
        target_macs / target_params: prune until MACs (params) <= this fraction of the original.
        config: (old spelling) a full `PruneConfig`; keyword `options` override its fields (e.g.
            schedule="iterative", allocation="global", finetune=FitConfig(epochs=1)).
        inplace: modify `model` itself instead of a copy.

    Returns the pruned model; `torchslim.report_of(model)` (or `prune_report(model)`) gives the
    before/after figures and steps.

    Example:
        >>> small = torchslim.prune(create_model("resnet56", pretrained=True), "l1", target_macs=0.5)

    The old call `prune(model, example_input, criterion, ratio)` still works, with a DeprecationWarning.
    """
    from torchslim import verbs

    if _is_input(method):  # prune(model, x, criterion="l1", ratio=None, ...): the old shape
        verbs.deprecated("torchslim.prune(model, example_input, criterion, ratio)",
                           "torchslim.prune(model, criterion, example_input=x, ratio=...)")
        example_input, method = method, "l1"
        if len(args) > 2:
            raise TypeError("prune(model, example_input, criterion, ratio) takes at most 4 positional arguments")
        method = args[0] if args else options.pop("criterion", method)
        ratio = args[1] if len(args) > 1 else ratio
    elif args:
        raise TypeError("prune(model, method, *, ratio=..., ...): give the other arguments by keyword")
    if "criterion" in options:  # the config field's own name
        method = options.pop("criterion")
    name, given = verbs.resolve(CRITERIA, "prune", method, lambda c: getattr(c, "criterion", None))
    config = config if config is not None else given
    known = set(PruneConfig.__dataclass_fields__) - {"criterion"}
    unknown = set(options) - known
    if unknown:
        raise InvalidInputError(f"unknown prune option(s) {sorted(unknown)}; known: {sorted(known)}")
    base = {f.name: getattr(config, f.name) for f in fields(PruneConfig)} if config is not None else {}
    base.update(options)
    if config is None or given is not None or name != "l1":
        base["criterion"] = name
    if filter_fn is not None:
        base["filter_fn"] = filter_fn
    if ratio is not None or target_macs is not None or target_params is not None:
        base.update(ratio=ratio, target_macs=target_macs, target_params=target_params)
    if example_input is None:
        example_input = example_input_for(model, data)
    cfg = PruneConfig(**base)
    if not inplace:
        model = copy.deepcopy(model)
    t0 = time.perf_counter()
    p = _Pruner(model, example_input, cfg, data)
    metric = "params" if cfg.target_params is not None else "macs"
    target = cfg.target_params if cfg.target_params is not None else cfg.target_macs
    goal = target * p.original[metric] if target is not None else None
    history = []
    if cfg.schedule == "oneshot":
        p.step(ratio=cfg.ratio, goal=goal, metric=metric)
    elif cfg.schedule == "iterative":
        n = max(1, cfg.steps)
        for i in range(1, n + 1):
            if goal is not None:  # geometric steps towards the goal
                p.step(goal=p.original[metric] * target ** (i / n), metric=metric)
            else:
                p.step(ratio=1 - (1 - cfg.ratio) ** (1 / n))
            if i < n:
                history.append(p.finetune(cfg.finetune, f"prune: recovery {i}/{n - 1}"))
    else:  # layerwise: the same per-group ratio, one group after the other
        r = cfg.ratio
        if goal is not None:
            r, _ = search_ratio(p.graph, torch.zeros(p.graph.num_units), target, metric=metric,
                                allocation="uniform", skip=tuple(cfg.skip), min_keep=cfg.min_keep,
                                round_to=cfg.round_to)
        names = [g.name for g in p.graph.groups if not any(fnmatch.fnmatch(g.name, s) for s in cfg.skip)]
        for i, name in enumerate(names, 1):
            if name in {g.name for g in p.graph.groups}:  # a group may have merged away
                p.step(ratio=r, only=name)
                history.append(p.finetune(cfg.finetune, f"prune: recovery {i}/{len(names)} ({name})"))
    history.append(p.finetune(cfg.final_finetune))
    report = {"config": {k: getattr(cfg, k) for k in PruneConfig.__dataclass_fields__
                         if k not in ("finetune", "final_finetune", "filter_fn")},
              "before": p.original, "after": dict(p.current),
              "macs_ratio": p.current["macs"] / max(p.original["macs"], 1),
              "params_ratio": p.current["params"] / max(p.original["params"], 1),
              "steps": p.steps, "pinned": p.notes, "reconstruction": p.reconstruction, "tracer": p.tracer, "tracer_caveat": p.tracer_caveat, "finetune": [h for h in history if h], "time_s": round(time.perf_counter() - t0, 2)}
    object.__setattr__(model, REPORT_ATTR, report)
    verbs.attach_report(model, "prune", cfg.criterion, report)
    return model


def prune_report(model: nn.Module) -> dict | None:
    """The report `prune` attached to the model it returned (or None)."""
    return getattr(model, REPORT_ATTR, None)

"""The shared machinery: the method interface, the registry of methods, and the whole-model walk.

A method factorises one layer into a short chain of smaller layers. It declares the matrices whose
spectra choose its ranks (`analyze`), its cost at given ranks (`cost`), and builds the chain
(`factorize`). `decompose` resolves the one `rank` argument per layer, refuses any chain that would
not reduce both parameters and MACs (a decomposition never grows a layer), swaps the chain in, and
records per-layer accounting (Kim et al. 2016, Eqs. 6-7) in a `DecompositionReport`.
"""
from __future__ import annotations

import copy
import dataclasses
import fnmatch
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from torchslim.errors import InvalidInputError
from torchslim.lowrank.ranks import Budget, RankSpec, is_budget, parse_rank, resolve_ranks, validate_rank
from torchslim.module_swap import replace_modules
from torchslim.registry import Registry


class Skip(Exception):
    """Raised by a method to leave a layer alone; the message is the reason shown in the report."""


@dataclass
class Analysis:
    """What a method learned about a layer before choosing ranks."""

    spectra: list  # per mode: (singular values, (rows, cols) of the unfolding)
    full: tuple  # the largest meaningful rank per mode
    cache: dict = field(default_factory=dict)  # factors computed on the way, reused by factorize


@dataclass
class Context:
    """Per-layer information beyond the weights: names, shapes, calibration inputs (response methods)."""

    name: str
    input_shape: tuple | None = None  # (C, H, W) of one input to the layer, when known
    output_shape: tuple | None = None
    inputs: torch.Tensor | None = None  # sampled layer inputs, for methods that reconstruct responses
    post_affine: tuple | None = None  # (a, c): the BatchNorm that follows, u = a * y + c
    options: dict = field(default_factory=dict)
    approx_inputs: torch.Tensor | None = None  # the same samples through the partly decomposed model (asymmetric)


class Method:
    """One decomposition (a file of its own in torchslim/lowrank/). Subclasses set `name`, `layer_types`."""

    name = ""
    paper = ""
    layer_types: tuple = (nn.Conv2d,)
    needs_data = False
    # Response methods: by default fit each layer to the original responses from the inputs the already
    # decomposed layers produce (Zhang et al. 2015, Sec. 3.3); options={"asymmetric": False} turns it off.
    asymmetric = False
    exact_full_rank = True  # rank=1.0 reproduces the layer (False: lossy by construction, e.g. monochromatic)
    for_input_layer = False  # made for the model's first layer (monochromatic): not left alone by default

    def skip_reason(self, layer: nn.Module) -> str | None:
        """Why this layer cannot be decomposed by this method (None: it can)."""
        if isinstance(layer, nn.Conv2d) and layer.groups > 1:
            return f"grouped conv (groups={layer.groups}) is already factorised"
        return None

    def analyze(self, layer: nn.Module, need_spectra: bool, ctx: Context | None = None) -> Analysis:
        raise NotImplementedError

    def cost(self, layer: nn.Module, ranks: tuple) -> tuple[int, int, int]:
        """(params, MACs per input pixel, MACs per output pixel) of the chain at `ranks`."""
        raise NotImplementedError

    def factorize(self, layer: nn.Module, ranks: tuple, analysis: Analysis, ctx: Context
                  ) -> tuple[nn.Module, torch.Tensor]:
        """The replacement chain and the kernel it realises (for the reconstruction error)."""
        raise NotImplementedError

    def adjust_ranks(self, layer: nn.Module, rank: RankSpec, ranks: tuple, analysis: Analysis) -> tuple:
        return ranks

    def resolve(self, layer: nn.Module, rank: RankSpec, analysis: Analysis, budget: Budget | None) -> tuple:
        """Ranks for this layer from the one `rank` argument (methods with sequential spectra override);
        `budget` is what a budget rank ({"compression": x}, {"macs": x}) allows this layer."""
        ranks = resolve_ranks(rank, analysis.spectra, analysis.full, lambda r: budget.fits(self.cost(layer, r)))
        return self.adjust_ranks(layer, rank, ranks, analysis)


METHODS: Registry[Method] = Registry("decomposition method")


def register_method(name: str):
    """Class decorator: instantiate and register a `Method` under `name`."""

    def add(cls):
        cls.name = name
        METHODS.register(name)(cls())
        return cls

    return add


def original_cost(layer: nn.Module) -> tuple[int, int, int]:
    """(params, MACs per input pixel, MACs per output pixel) of an unmodified Conv2d or Linear."""
    params = sum(p.numel() for p in layer.parameters(recurse=False))
    if isinstance(layer, nn.Conv2d):
        return params, 0, layer.weight.numel()
    return params, 0, layer.in_features * layer.out_features


@dataclass
class LayerResult:
    """Accounting of one layer (Kim et al. 2016: M = compression ratio, Eq. 6; E = speedup ratio, Eq. 7)."""

    name: str
    layer: str  # e.g. "conv3x3 64->128 /2"
    method: str
    status: str  # decomposed | skipped
    reason: str = ""
    ranks: tuple | None = None
    rel_error: float | None = None  # ||W - W_hat||_F / ||W||_F
    response_error: float | None = None  # response methods: relative error of the layer's outputs
    params_before: int = 0
    params_after: int = 0
    macs_before: int = 0
    macs_after: int = 0
    seconds: float = 0.0
    latency_before_ms: float | None = None
    latency_after_ms: float | None = None
    original: nn.Module | None = field(default=None, repr=False)
    replacement: nn.Module | None = field(default=None, repr=False)
    input_shape: tuple | None = None

    @property
    def compression(self) -> float:
        """M: parameters before / after."""
        return self.params_before / self.params_after if self.params_after else 1.0

    @property
    def speedup(self) -> float:
        """E: MACs before / after (the theoretical speedup)."""
        return self.macs_before / self.macs_after if self.macs_after else 1.0

    @property
    def measured_speedup(self) -> float | None:
        if self.latency_before_ms and self.latency_after_ms:
            return self.latency_before_ms / self.latency_after_ms
        return None

    def to_dict(self) -> dict:
        keys = ["name", "layer", "method", "status", "reason", "ranks", "rel_error", "response_error",
                "params_before", "params_after", "macs_before", "macs_after", "seconds",
                "latency_before_ms", "latency_after_ms", "input_shape"]
        d = {k: getattr(self, k) for k in keys}
        d.update(compression=self.compression, speedup=self.speedup, measured_speedup=self.measured_speedup)
        return d


def describe(layer: nn.Module) -> str:
    if isinstance(layer, nn.Conv2d):
        k = "x".join(map(str, layer.kernel_size))
        s = f" /{layer.stride[0]}" if max(layer.stride) > 1 else ""
        g = f" g{layer.groups}" if layer.groups > 1 else ""
        return f"conv{k} {layer.in_channels}->{layer.out_channels}{s}{g}"
    if isinstance(layer, nn.Linear):
        return f"linear {layer.in_features}->{layer.out_features}"
    return type(layer).__name__


def _pixels(shape: tuple | None) -> int:
    return int(math.prod(shape[1:])) if shape and len(shape) == 3 else 1


def layer_macs(cost: tuple[int, int, int], ctx: Context) -> int:
    """MACs of one image through a layer of `cost` (`Method.cost` / `original_cost`) at ctx's shapes."""
    _, per_in, per_out = cost
    return per_in * _pixels(ctx.input_shape) + per_out * _pixels(ctx.output_shape)


def layer_budget(rank: RankSpec, cost: tuple[int, int, int], ctx: Context) -> Budget | None:
    """What a budget rank allows a layer of `cost` (`original_cost`): x-fold fewer parameters
    ({"compression": x}) or MACs ({"macs": x}, at ctx's shapes); None for any other rank."""
    if not is_budget(rank):
        return None
    if "macs" in rank:
        if ctx.output_shape is None:
            raise InvalidInputError(f"rank {rank!r} counts MACs at the layer's input size: pass input_size= or "
                                    f"data= (layer {ctx.name or 'given'} has no recorded shape)")
        return Budget(lambda c: layer_macs(c, ctx), layer_macs(cost, ctx) / float(rank["macs"]))
    return Budget(lambda c: c[0], cost[0] / float(rank["compression"]))


def decompose_layer(layer: nn.Module, method: str | Method = "tucker", rank: RankSpec = "vbmf", *,
                    ctx: Context | None = None, allow_growth: bool = False) -> tuple[nn.Module, LayerResult]:
    """Decompose one layer; returns (the chain or the layer itself when skipped, its LayerResult).

    Args:
        allow_growth: build the chain even when it is not smaller (studies and tests: rank=1.0).
    """
    m = METHODS.get(method) if isinstance(method, str) else method
    validate_rank(rank)
    ctx = ctx or Context(name="")
    before = original_cost(layer)
    budget = layer_budget(rank, before, ctx)
    res = LayerResult(ctx.name, describe(layer), m.name, "skipped", params_before=before[0],
                      macs_before=layer_macs(before, ctx), original=layer, input_shape=ctx.input_shape)
    t0 = time.perf_counter()
    try:
        if not isinstance(layer, m.layer_types):
            raise Skip(f"{m.name} does not handle {type(layer).__name__}")
        reason = m.skip_reason(layer)
        if reason:
            raise Skip(reason)
        if m.needs_data and ctx.inputs is None:
            raise Skip("needs calibration inputs (pass data=...)")
        analysis = m.analyze(layer, need_spectra=isinstance(rank, (str, float)), ctx=ctx)
        ranks = m.resolve(layer, rank, analysis, budget)
        res.ranks = ranks
        after = m.cost(layer, ranks, **({"L": analysis.cache["L"]} if "L" in analysis.cache else
                                        {"analysis": analysis} if ("in_modes" in analysis.cache or "G" in analysis.cache)
                                        else {}))
        res.params_after, res.macs_after = after[0], layer_macs(after, ctx)
        if not allow_growth and (after[0] >= before[0] or res.macs_after >= res.macs_before):
            raise Skip(f"ranks {ranks} would not reduce the layer ({after[0]} vs {before[0]} params, "
                       f"{res.macs_after} vs {res.macs_before} MACs)")
        chain, w_hat = m.factorize(layer, ranks, analysis, ctx)
    except Skip as e:
        res.reason, res.seconds = str(e), time.perf_counter() - t0
        res.params_after, res.macs_after = res.params_before, res.macs_before
        return layer, res
    w = layer.weight.detach()
    res.rel_error = float(torch.linalg.vector_norm((w - w_hat.reshape(w.shape)).double())
                          / torch.linalg.vector_norm(w.double()).clamp_min(1e-30))
    res.response_error = ctx.options.get("response_error")
    chain.to(device=layer.weight.device, dtype=layer.weight.dtype)  # factors are built on the CPU
    chain.train(layer.training)
    res.status, res.replacement, res.seconds = "decomposed", chain, time.perf_counter() - t0
    return chain, res


LayerFilter = Callable[[nn.Module, str], bool]


def _selector(layers) -> LayerFilter:
    if layers is None:
        return lambda m, n: True
    if callable(layers):
        return layers
    if isinstance(layers, str):
        layers = [layers]
    pats = list(layers)
    return lambda m, n: any(fnmatch.fnmatch(n, p) for p in pats)


def following_batchnorm(model: nn.Module, names: list[str]) -> dict[str, tuple]:
    """For each conv, the per-channel affine (a, c) of the BatchNorm2d registered right after it."""
    mods = list(model.named_modules())
    out = {}
    for i, (n, m) in enumerate(mods):
        if n in names and isinstance(m, nn.Conv2d):
            for n2, m2 in mods[i + 1:]:
                if isinstance(m2, nn.BatchNorm2d) and m2.num_features == m.out_channels and m2.running_var is not None:
                    a = (m2.weight.detach() if m2.weight is not None else 1) / torch.sqrt(m2.running_var + m2.eps)
                    c = (m2.bias.detach() if m2.bias is not None else 0) - a * m2.running_mean
                    out[n] = (a * torch.ones(m.out_channels), c * torch.ones(m.out_channels))
                    break
                if isinstance(m2, (nn.Conv2d, nn.Linear)):
                    break
    return out


class _StopForward(Exception):
    """Raised by a tracing hook once it has what it needs: the rest of the forward pass is skipped."""


def trace_layers(model: nn.Module, names: list[str], batches: Sequence[torch.Tensor], keep_inputs: bool,
           max_inputs: int = 256, stop_early: bool = False) -> tuple[dict, dict, dict]:
    """Input/output shapes (C, H, W) of the named layers and, if asked, up to `max_inputs` of their inputs.

    stop_early: for one layer, end each forward pass at that layer and skip batches once it has
    `max_inputs` inputs (the asymmetric re-trace runs once per layer, so this halves its cost).
    """
    shapes_in, shapes_out, inputs = {}, {}, {}
    hooks = []
    for n in names:
        def hook(mod, args, out, n=n):
            x = args[0]
            shapes_in.setdefault(n, tuple(x.shape[1:]))
            shapes_out.setdefault(n, tuple(out.shape[1:]))
            if keep_inputs:
                have = inputs.get(n)
                take = x.detach()[: max_inputs - (0 if have is None else len(have))]
                inputs[n] = take if have is None else torch.cat([have, take])
            if stop_early:
                raise _StopForward
        hooks.append(model.get_submodule(n).register_forward_hook(hook))
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            for b in batches:
                if stop_early and len(inputs.get(names[0], ())) >= max_inputs:
                    break
                try:
                    model(b)
                except _StopForward:
                    pass
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    return shapes_in, shapes_out, inputs


INPUT_LAYER_REASON = ("the model's input layer: few input channels, little to save, and every later layer "
                      "sees its error (Kim et al. 2016 keep it); include_ends=True (--include-ends) decomposes it")
CLASSIFIER_REASON = ("the final classifier: a low rank there cuts the prediction itself (Kim et al. 2016 keep "
                     "it); include_ends=True (--include-ends) decomposes it")


def _ends(order: list[str], method: Method) -> dict[str, str]:
    """{layer: why it is left alone} for the first and last weight layers in forward order."""
    if not order:
        return {}
    out = {order[-1]: CLASSIFIER_REASON}
    if method.for_input_layer:
        out.pop(order[0], None)  # the layer it is made for
    else:
        out[order[0]] = INPUT_LAYER_REASON
    return out


def _method_for(method, linear_method, module) -> Method | None:
    for name in (method, linear_method):
        if name is None:
            continue
        m = METHODS.get(name) if isinstance(name, str) else name
        if isinstance(module, m.layer_types):
            return m
    return None


@dataclass
class DecompositionReport:
    """Per-layer results of one `decompose` call; `.table()` for a rich table, `.to_dict()` for JSON."""

    method: str
    rank: RankSpec
    layers: list[LayerResult]
    seconds: float = 0.0
    latency_runtime: str | None = None  # where `measure` timed the layers

    @property
    def decomposed(self) -> list[LayerResult]:
        return [l for l in self.layers if l.status == "decomposed"]

    def totals(self) -> dict:
        pb = sum(l.params_before for l in self.layers)
        pa = sum(l.params_after for l in self.layers)
        mb = sum(l.macs_before for l in self.layers)
        ma = sum(l.macs_after for l in self.layers)
        lb = [l.latency_before_ms for l in self.layers if l.latency_before_ms is not None]
        la = [l.latency_after_ms for l in self.layers if l.latency_after_ms is not None]
        d = {"layers": len(self.layers), "decomposed": len(self.decomposed), "params_before": pb,
             "params_after": pa, "macs_before": mb, "macs_after": ma,
             "compression": pb / pa if pa else 1.0, "speedup": mb / ma if ma else 1.0, "seconds": self.seconds}
        if lb and la and len(lb) == len(la):
            d.update(latency_before_ms=sum(lb), latency_after_ms=sum(la), measured_speedup=sum(lb) / sum(la))
        return d

    def to_dict(self) -> dict:
        return {"method": self.method, "rank": self.rank, "totals": self.totals(),
                "latency_runtime": self.latency_runtime, "layers": [l.to_dict() for l in self.layers]}

    def table(self, title: str | None = None):
        from torchslim.lowrank.report import report_table

        return report_table(self, title)

    def measure(self, threads: int | None = None, batch_size: int = 1, **kw) -> "DecompositionReport":
        """Time every layer and its replacement (`runtime=`: torch (default), onnxruntime or openvino)."""
        from torchslim.lowrank.report import measure_layers

        measure_layers(self, threads=threads, batch_size=batch_size, **kw)
        return self


def decompose_with_report(
    model: nn.Module,
    method: str = "tucker",
    rank: RankSpec = "vbmf",
    layers: Iterable[str] | str | LayerFilter | None = None,
    *,
    linear_method: str | None = "svd",
    input_size: tuple | None = None,
    data: Sequence[torch.Tensor] | None = None,
    allow_growth: bool = False,
    inplace: bool = False,
    options: dict | None = None,
    include_ends: bool = False,
    progress: Callable[[str], None] | None = None,
) -> tuple[nn.Module, DecompositionReport]:
    """`decompose`, also returning the per-layer `DecompositionReport`."""
    m = METHODS.get(method) if isinstance(method, str) else method
    rank = "vbmf" if rank is None else rank
    per_layer = isinstance(rank, dict) and not is_budget(rank)  # {layer pattern: rank}
    for r in (rank.values() if per_layer else [rank]):
        validate_rank(r)
    t0 = time.perf_counter()
    model = model if inplace else copy.deepcopy(model)
    select = _selector(layers)
    targets = [(n, mod) for n, mod in model.named_modules()
               if n and isinstance(mod, (nn.Conv2d, nn.Linear)) and select(mod, n)]
    if layers is not None and not targets:
        raise InvalidInputError(f"layers={layers!r} matches no Conv2d/Linear of the model; names look like "
                                f"{[n for n, x in model.named_modules() if isinstance(x, (nn.Conv2d, nn.Linear))][:5]}")
    names = [n for n, _ in targets]
    if input_size is None:
        arch = getattr(model, "_torchslim_arch", None) or {}
        input_size = arch.get("input_size")
    batches = list(data) if data is not None else []
    if not batches and input_size:
        batches = [torch.randn(1, *input_size)]
    needs_data = any(getattr(_method_for(method, linear_method, mod), "needs_data", False) for _, mod in targets)
    if needs_data and data is None:
        raise InvalidInputError(f"method {m.name!r} reconstructs layer responses: pass data= (a few input batches)")
    shapes_in, shapes_out, inputs = trace_layers(model, names, batches, keep_inputs=needs_data) if batches else ({}, {}, {})
    post = following_batchnorm(model, names) if needs_data else {}
    if needs_data:  # response methods fit layers in forward order (the hooks fired in that order)
        order = {n: i for i, n in enumerate(shapes_in)}
        targets.sort(key=lambda t: order.get(t[0], len(order)))
    # Default selection: the input layer and the final classifier stay (an explicit selection is obeyed).
    # The trace's hooks fired in forward order; without a trace, registration order stands in for it.
    ends = {} if include_ends or layers is not None or per_layer else _ends(list(shapes_in) or names, m)
    results = []
    replaced = False  # has an earlier layer been swapped? then asymmetric methods re-trace their inputs
    for i, (n, mod) in enumerate(targets):
        if progress is not None:
            progress(f"[{i + 1}/{len(targets)}] {n} ({describe(mod)}) after {time.perf_counter() - t0:.1f} s")
        lm = _method_for(method, linear_method, mod)
        ctx = Context(n, shapes_in.get(n), shapes_out.get(n), inputs.get(n), post.get(n), dict(options or {}))
        if n in ends:
            before = original_cost(mod)
            results.append(LayerResult(n, describe(mod), lm.name if lm else str(method), "skipped", ends[n],
                                       params_before=before[0], params_after=before[0],
                                       macs_before=layer_macs(before, ctx), macs_after=layer_macs(before, ctx),
                                       original=mod, input_shape=ctx.input_shape))
            continue
        if lm is None:
            before = original_cost(mod)
            results.append(LayerResult(n, describe(mod), str(method), "skipped",
                                       f"{type(mod).__name__} is not handled by {method!r}"
                                       + ("" if linear_method else " (linear_method=None)"),
                                       params_before=before[0], params_after=before[0],
                                       macs_before=layer_macs(before, ctx), macs_after=layer_macs(before, ctx),
                                       original=mod, input_shape=ctx.input_shape))
            continue
        layer_rank = rank
        if per_layer:
            layer_rank = next((r for pat, r in rank.items() if fnmatch.fnmatch(n, pat)), None)
            if layer_rank is None:
                before = original_cost(mod)
                results.append(LayerResult(n, describe(mod), lm.name, "skipped", "no rank given for this layer",
                                           params_before=before[0], params_after=before[0],
                                           macs_before=layer_macs(before, ctx), macs_after=layer_macs(before, ctx),
                                           original=mod, input_shape=ctx.input_shape))
                continue
        if replaced and lm.needs_data and ctx.options.get("asymmetric", lm.asymmetric) and ctx.inputs is not None:
            # this layer's inputs as the partly decomposed model computes them, paired sample by sample
            # with ctx.inputs (same batches, same order)
            ctx.approx_inputs = trace_layers(model, [n], batches, True, len(ctx.inputs), stop_early=True)[2][n]
        new, res = decompose_layer(mod, lm, layer_rank, ctx=ctx, allow_growth=allow_growth)
        if new is not mod:
            replace_modules(model, {n: new})
            replaced = True
        results.append(res)
    return model, DecompositionReport(m.name, rank, results, time.perf_counter() - t0)


@dataclass
class DecomposeConfig:
    """Options of `decompose` (every decomposition takes the same ones).

    Args:
        method: a name in `torchslim.lowrank.METHODS` (tucker, cp, separable, svd, channel, ...).
        rank: "vbmf" (also None), an int or tuple, a float in (0, 1] (energy kept), {"compression": x}
            (each layer's parameters cut x-fold), {"macs": x} (each layer's MACs cut x-fold), or
            {layer name pattern: any of these} (unmatched layers are left alone); as text also "8",
            "4,8", "0.9", "compression=4" (or "x4") and "macs=3".
        linear_method: method for layer types `method` does not handle ("svd" for Linear; None or "none":
            leave them).
        input_size: (C, H, W) to count MACs at the real resolution (default: recorded by create_model).
        allow_growth: build chains even when not smaller (for studies; rank=1.0 reproduces the model).
        include_ends: also decompose the input layer and the final classifier (left alone by default).
        options: per-method settings passed to every layer (e.g. {"asymmetric": False, "n_samples": 4096}).
        calibration_images: training images response methods (channel, zhang3d) read from data=.
        strict: with per-layer ranks, fail when a named layer is left alone (saying why) instead of skipping it.
    """

    method: str = "tucker"
    rank: Any = "vbmf"
    linear_method: str | None = "svd"
    input_size: tuple | None = None
    allow_growth: bool = False
    include_ends: bool = False
    options: dict | None = None
    calibration_images: int = 256
    strict: bool = False

    def __post_init__(self):
        if isinstance(self.rank, str):  # text forms: "compression=4", "4,8", "0.9" (CLI, recipes)
            self.rank = parse_rank(self.rank)
        if self.linear_method == "none":
            self.linear_method = None


def check_named_layers(report: "DecompositionReport", rank) -> None:
    """Each layer pattern of a per-layer `rank` must have decomposed a layer: else one line per
    pattern saying why (the layer's reason from the report)."""
    if not isinstance(rank, dict) or "compression" in rank:
        return
    done = [r.name for r in report.decomposed]
    missed = [p for p in rank if not fnmatch.filter(done, p)]
    if missed:
        why = {r.name: r.reason for r in report.layers}
        raise InvalidInputError("not decomposed: " + "; ".join(
            f"{p}: {why.get(p) or 'matches no Conv2d/Linear layer'}" for p in missed))


def decompose(model: nn.Module, method: "str | DecomposeConfig" = "tucker", rank: RankSpec = None,
              layers: Iterable[str] | str | LayerFilter | None = None, *, data=None, filter_fn: LayerFilter | None = None,
              inplace: bool = False, progress: Callable[[str], None] | None = None, **options) -> nn.Module:
    """Replace each selected layer by a low-rank chain that computes nearly the same function.

    Kim et al. 2016 ("one-shot whole network compression"): VBMF ranks, Tucker-2 for every conv and a
    truncated SVD for every fully connected layer, then fine-tune. Layers a method cannot shrink
    (grouped convs, 1x1 convs without gain, ranks that would not reduce MACs) are left alone; the
    reasons are in `decompose_with_report(...)[1]`.

    Args:
        model: the trained model (not modified unless inplace=True).
        method: a name in `torchslim.lowrank.METHODS` (tucker, cp, separable, svd, channel,
            ...), used for the layer types it handles, or a `DecomposeConfig`.
        rank: "vbmf" (also None), an int or tuple, a float in (0, 1] (energy kept), {"compression": x}
            (each layer's parameters cut x-fold), {"macs": x} (each layer's MACs cut x-fold), or
            {layer name pattern: any of these} (unmatched layers are left alone).
        layers / filter_fn: fnmatch patterns of layer names, or `filter_fn(module, name) -> bool`; None = all.
        linear_method: method for layer types `method` does not handle (default "svd" for Linear;
            None leaves them alone).
        input_size: (C, H, W) to count MACs at the real resolution (default: recorded by create_model).
        data: a DataBundle, a DataLoader or input batches, needed by response-reconstruction methods
            ("channel", "zhang3d", `calibration_images` of them); these
            fit the layers in order, each on the inputs the already decomposed layers produce (the
            asymmetric variant of Zhang et al. 2015; options={"asymmetric": False} for the symmetric one).
        allow_growth: build chains even when not smaller (for studies; rank=1.0 reproduces the model).
        options: per-method settings passed to every layer (e.g. {"asymmetric": False, "n_samples": 4096}).
        include_ends: also decompose the input layer and the final classifier, which the default
            selection (layers=None, one rank for all) leaves alone with the reason in the report:
            little to gain there, and accuracy lost directly (Kim et al. 2016 keep them).
        progress: called with one line per layer as the walk reaches it (e.g. print).

    The `DecompositionReport` is `torchslim.report_of(result)["decomposition"]`.

    Example:
        >>> model = torchslim.models.create_model("resnet20")
        >>> small = torchslim.decompose(model, method="tucker", rank="vbmf")
    """
    from torchslim import verbs

    name, config = verbs.resolve(METHODS, "decompose", method, lambda c: getattr(c, "method", None))
    known = {f.name for f in dataclasses.fields(DecomposeConfig)} - {"method"}
    unknown = set(options) - known
    if unknown:
        raise InvalidInputError(f"decompose has no option(s) {sorted(unknown)}; its options: {sorted(known)}")
    values = dataclasses.asdict(config) if config is not None else {}
    values.update(method=name, **options)
    if rank is not None:
        values["rank"] = rank
    cfg = DecomposeConfig(**values)
    if filter_fn is not None and layers is not None:
        raise InvalidInputError("decompose: give filter_fn or layers (name patterns), not both")
    select = filter_fn if filter_fn is not None else layers  # patterns stay patterns: errors quote them
    batches = verbs.images(data, cfg.calibration_images) if data is not None else None
    model, report = decompose_with_report(model, cfg.method, cfg.rank, select, linear_method=cfg.linear_method,
                                          input_size=cfg.input_size, data=batches, allow_growth=cfg.allow_growth,
                                          inplace=inplace, options=cfg.options, include_ends=cfg.include_ends,
                                          progress=progress)
    if cfg.strict:
        check_named_layers(report, cfg.rank)
    verbs.attach_report(model, "decompose", name, {"decomposition": report, **report.totals()})
    return model

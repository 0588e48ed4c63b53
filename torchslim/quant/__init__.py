"""Quantization: int8 with real int8 execution (PTQ, QAT), k-means weight sharing, binary/ternary weights.

`torchslim.quantize(model, method=..., ...)` resolves `method` through `METHODS` (one file per method).
"""
from __future__ import annotations

import copy

from torch import nn

from torchslim.data import as_loaders
from torchslim.errors import InvalidInputError
from torchslim.quant.binary import LowBitConfig, LowBitConv2d, LowBitLinear, low_bit_quantize
from torchslim.quant.bn_fold import fold_bn
from torchslim.quant.int8_ptq import PATHS, Int8Config, OnnxRuntimeModule, quantize_int8
from torchslim.quant.kmeans import (KMeansConfig, SharedWeightConv2d, SharedWeightLinear, kmeans_quantize,
                                    parse_bits, share_weights)
from torchslim.quant.observers import OBSERVERS
from torchslim.quant.pt2e import PT2EConfig, quantize_pt2e
from torchslim.quant.qat import QATConfig, qat_quantize
from torchslim.registry import Registry

METHODS: Registry = Registry("quantization method")


def _with(cfg, options: dict):
    from dataclasses import fields, replace

    names = {f.name for f in fields(cfg)}
    bad = set(options) - names
    if bad:
        raise InvalidInputError(f"unknown option(s) {sorted(bad)} for {type(cfg).__name__}; known: {sorted(names)}")
    return replace(cfg, **options)


def _method(*names: str, config: type, implementation, output: str, needs_data: bool = True,
            fixed: dict | None = None, changes_input: bool = False):
    """Register a method under its name (and aliases after it): its config class, the function that
    implements it (the method table points there), what it returns (`MethodSpec.output`: int8 |
    program | coded | model), whether it needs data, fields it fixes itself, and whether it changes the
    model it is given (then `quantize` hands it a copy unless inplace=True)."""
    def add(fn):
        fn.config, fn.implementation, fn.needs_data, fn.fixed = config, implementation, needs_data, fixed or {}
        fn.changes_input, fn.output = changes_input, output
        for n in names:
            METHODS.register(n)(fn)
        return fn
    return add


@_method("int8-ptq", "int8", config=Int8Config, implementation=quantize_int8, output="int8")  # int8: the short name recipes use
def _int8_ptq(model, *, calib=None, data=None, config=None, eval_loader=None, **options):
    calib = calib if calib is not None else data
    return quantize_int8(model, calib, _with(config or Int8Config(), options), eval_loader=eval_loader)


@_method("int8-qat", config=QATConfig, implementation=qat_quantize, output="int8")
def _int8_qat(model, *, calib=None, data=None, config=None, eval_loader=None, **options):
    train, val = as_loaders(data)
    if train is None:
        raise InvalidInputError("method 'int8-qat' trains the model: pass data= (a DataBundle or a DataLoader)")
    return qat_quantize(model, train, val, _with(config or QATConfig(), options),
                        calib=calib if calib is not None else train, eval_loader=eval_loader)


@_method("int8-pt2e", config=PT2EConfig, implementation=quantize_pt2e, output="program")
def _int8_pt2e(model, *, calib=None, data=None, config=None, eval_loader=None, **options):
    calib = calib if calib is not None else data
    return quantize_pt2e(model, calib, _with(config or PT2EConfig(), options))


@_method("kmeans", config=KMeansConfig, implementation=kmeans_quantize, output="coded", changes_input=True)
def _kmeans(model, *, calib=None, data=None, config=None, eval_loader=None, **options):
    train, val = as_loaders(data)
    if "conv_bits" in options or "fc_bits" in options:  # recipe spelling of bits={"conv": .., "fc": ..}
        bits = dict(options.pop("bits", None) or {"conv": 8, "fc": 5})
        bits.update({k: options.pop(f"{k}_bits") for k in ("conv", "fc") if f"{k}_bits" in options})
        options["bits"] = bits
    return kmeans_quantize(model, _with(config or KMeansConfig(), options), train_loader=train, val_loader=val)


def _low_bit(mode):
    def run(model, *, calib=None, data=None, config=None, eval_loader=None, **options):
        train, val = as_loaders(data)
        return low_bit_quantize(model, _with(config or LowBitConfig(mode=mode), {"mode": mode, **options}),
                                train_loader=train, val_loader=val)
    return run


for _mode in ("binary", "ternary"):
    _method(_mode, config=LowBitConfig, implementation=low_bit_quantize, output="coded", fixed={"mode": _mode},
            changes_input=True)(_low_bit(_mode))


def quantize(model: nn.Module, method="int8-ptq", *, data=None, filter_fn=None, calib=None, config=None,
             eval_loader=None, inplace: bool = False, **options) -> nn.Module:
    """Quantize `model` with a method of `torchslim.quant.METHODS`; returns a new model.

    Args:
        method: int8-ptq (calibration only; real int8 execution through ONNX Runtime or torch x86, the
            fastest correct path measured on this machine), int8-qat (fake-quant training, then the
            same int8 paths), int8-pt2e (torch.export-based int8 program for torch.compile, needs
            torchao), kmeans (Deep Compression weight sharing + centroid fine-tuning),
            binary / ternary (STE training); an alias (int8); or the method's config dataclass.
        filter_fn: `filter_fn(module, name) -> bool` chooses the layers (methods whose config has one).
        calib: calibration data for int8 (DataBundle, DataLoader, or tensors); default: `data`.
        data: training data (DataBundle, DataLoader or (train, val)) for the methods that train.
        config: the method's config dataclass; `options` override its fields (e.g. observer="mse",
            bits={"conv": 8, "fc": 5}, epochs=2).
        eval_loader: int8 methods report top-1 of every execution path on it.

    The report (int8: execution paths and timings) is `torchslim.report_of(q)`.

    Example:
        >>> q = torchslim.quantize(model, "int8-ptq", calib=data.calibration_batches(256))
        >>> q.quant_report["chosen"], q.quant_report["paths"]
        >>> k = torchslim.quantize(model, "kmeans", data=data, bits={"conv": 8, "fc": 5}, epochs=1)
    """
    from torchslim import verbs

    name, given = verbs.resolve(METHODS, "quantize", method, lambda c: next(
        (n for n in METHODS.names() if type(c) is METHODS.get(n).config
         and all(getattr(c, k) == v for k, v in METHODS.get(n).fixed.items())), None))
    config = config if config is not None else given
    if filter_fn is not None:
        options["filter_fn"] = filter_fn  # the method checks its options (kmeans also takes conv_bits / fc_bits)
    fn = METHODS.get(name)
    if not inplace and fn.changes_input:
        model = copy.deepcopy(model)  # the method works in place: on a copy
    q = fn(model, calib=calib, data=data, config=config, eval_loader=eval_loader, **options)
    verbs.attach_report(q, "quantize", name, dict(getattr(q, "quant_report", None) or {}))
    return q


__all__ = ["METHODS", "OBSERVERS", "PATHS", "Int8Config", "KMeansConfig", "LowBitConfig", "LowBitConv2d",
           "LowBitLinear", "OnnxRuntimeModule", "PT2EConfig", "QATConfig", "SharedWeightConv2d", "SharedWeightLinear", "fold_bn",
           "kmeans_quantize", "low_bit_quantize", "parse_bits", "qat_quantize", "quantize", "quantize_int8", "quantize_pt2e",
           "share_weights"]

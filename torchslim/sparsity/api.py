"""The `sparsify` verb: one registry of methods, one signature, every method retrains with `torchslim.train.fit`."""
from __future__ import annotations

import copy
import dataclasses
from typing import Callable

from torch import nn

from torchslim.data import as_loaders
from torchslim.errors import InvalidInputError
from torchslim.registry import Registry

# name -> (config dataclass, run(model, config, train_loader, val_loader) -> info dict)
METHODS: Registry[tuple[type, Callable]] = Registry("sparsity method")


def register_method(name: str, config_cls: type, *, needs_data: bool = True):
    """Register `fn(model, config, train, val) -> info` as sparsity method `name` (it appears in the
    method table, `torchslim.methods`); `needs_data=False` for methods that can run without images."""
    def add(fn):
        fn.needs_data = needs_data
        METHODS.register(name)((config_cls, fn))
        return fn

    return add


def epochs_field(method: str) -> str:
    """The config field holding a method's training budget in epochs (what the CLI's --epochs sets):
    `epochs` unless its config class names another in `EPOCHS_FIELD`."""
    config_cls, _ = METHODS.get(method)
    return getattr(config_cls, "EPOCHS_FIELD", "epochs")


def need_data(train, method: str):
    if train is None:
        raise InvalidInputError(f"method {method!r} trains the model: pass data= (a DataBundle from "
                                "torchslim.data.get_data, or a training DataLoader)")


def _check_sparsity(sparsity) -> None:
    values = sparsity.items() if isinstance(sparsity, dict) else [("", sparsity)]
    for layer, v in values:
        if v is not None and not (isinstance(v, (int, float)) and 0 <= v < 1):
            raise InvalidInputError(f"sparsity{f' of {layer!r}' if layer else ''} must be a fraction in [0, 1), "
                                    f"got {v!r}")


def sparsify(model: nn.Module, method="magnitude", sparsity: float | dict | None = 0.9, *, data=None,
             filter_fn=None, config=None, inplace: bool = False, return_info: bool = False, **options):
    """Make the weights of `model` sparse with a kernel-sparsification method; masks stay attached.

    Args:
        model: a trained network (Linear / Conv layers are sparsified).
        method: a name in `torchslim.sparsity.METHODS`: magnitude, dns, iht, ssl, l1, correlation,
            random_masks, kernel_magnitude (whole k x k kernels, `kernel_masks.py`), force (Force
            Regularization: low-rank filters for `decompose`, `force.py`), energy-aware; or the
            method's config dataclass itself (e.g. `DNSConfig(sparsity=0.9)`).
        sparsity: target fraction of zero weights (a float, or {layer fqn: fraction} for magnitude);
            None keeps the method's own default (e.g. magnitude with `quality=`).
        data: a `DataBundle` (torchslim.data.get_data), a training DataLoader, or (train, val);
            needed by every method that retrains (all but one-shot magnitude).
        filter_fn: `filter_fn(module, name) -> bool` chooses the layers sparsified (default: all).
        config: (old spelling) the method's config dataclass; `options` override its fields.
        inplace: modify `model` itself (default: work on a deep copy).
        return_info: also return a dict of what happened (per-round history, per-layer densities).

    Returns:
        The sparsified model (masked layers: `torchslim.sparsity.remove_masks` bakes them in), and the
        info dict if `return_info` (it is also `torchslim.report_of(model)`).

    Example:
        >>> data = torchslim.data.get_data("mnist")
        >>> sparse = torchslim.sparsify(model, "magnitude", sparsity=0.92, data=data, epochs=4)
    """
    from torchslim import verbs

    method, given = verbs.resolve(METHODS, "sparsify", method,
                                  lambda c: next((n for n in METHODS.names() if type(c) is METHODS.get(n)[0]), None))
    config_cls, run = METHODS.get(method)
    config = config if config is not None else given
    if config is None:
        config = config_cls()
    elif not isinstance(config, config_cls):
        raise InvalidInputError(f"method {method!r} takes a {config_cls.__name__}, got {type(config).__name__}")
    fields = {f.name for f in dataclasses.fields(config_cls)}
    if sparsity is not None and "sparsity" in fields and given is None:
        options.setdefault("sparsity", sparsity)
    if filter_fn is not None:
        options["filter_fn"] = filter_fn
    unknown = set(options) - fields
    if unknown:
        raise InvalidInputError(f"sparsify method {method!r} has no option(s) {sorted(unknown)}; "
                                f"its options: {sorted(fields - {'callbacks'})}")
    config = dataclasses.replace(config, **options)
    _check_sparsity(getattr(config, "sparsity", None))
    if not inplace:
        model = copy.deepcopy(model)
    train, val = as_loaders(data)
    info = run(model, config, train, val) or {}
    from torchslim.sparsity.masks import density_summary

    info = {"method": method, **info, "density": density_summary(model)}
    verbs.attach_report(model, "sparsify", method, info)
    return (model, info) if return_info else model

"""What every compression verb shares: how a method is named (a name, an alias or its config), how
layers are chosen, how data becomes calibration batches, how the report comes back, and how an old
call is told its new spelling.

Each family's verb (`torchslim.prune`, `sparsify`, `decompose`, `quantize`, `distill`) resolves its
method through its own registry with these helpers; `torchslim.methods` reads those registries into
the one table. Nothing here imports a family, so no family imports the table that reads it.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import warnings
from typing import Callable

from torchslim.errors import InvalidInputError
from torchslim.registry import Registry

REPORT_ATTR = "_torchslim_report"


def resolve(registry: Registry, family: str, method, config_name: Callable | None = None) -> tuple[str, object]:
    """(canonical method name, config or None) from a name or alias of `registry`, or from a config
    instance (`config_name(config)` names its method)."""
    if isinstance(method, str):
        return registry.canonical(method), None
    if dataclasses.is_dataclass(method) and not isinstance(method, type) and config_name is not None:
        name = config_name(method)
        if name is not None:
            return registry.canonical(name), method
    raise InvalidInputError(f"{family}: give a method name ({', '.join(registry.names())}) or its config, "
                            f"got {type(method).__name__}")


def layer_filter(filter_fn=None, layers=None) -> Callable | None:
    """One way to choose layers: `filter_fn(module, name) -> bool` (torchao-style); `layers`, fnmatch
    patterns of layer names, is the convenience spelling of the same thing."""
    if filter_fn is not None and layers is not None:
        raise InvalidInputError("give filter_fn or layers (name patterns), not both")
    if layers is None or callable(layers):
        return filter_fn if filter_fn is not None else layers
    pats = [layers] if isinstance(layers, str) else list(layers)
    return lambda module, name: any(fnmatch.fnmatch(name, p) for p in pats)


def images(data, n: int) -> list:
    """The first `n` training images of `data` as batches (`torchslim.data.as_batches`); input batches
    given as a list of tensors are used as they are, all of them."""
    if isinstance(data, (list, tuple)) and all(hasattr(x, "shape") for x in data):
        return list(data)
    from torchslim.data import as_batches

    return as_batches(data, n)


def attach_report(model, family: str, method: str, report: dict) -> None:
    """Every verb leaves its report on the model it returns; `report_of(model)` reads it back."""
    try:
        object.__setattr__(model, REPORT_ATTR, {"family": family, "method": method, **report})
    except (AttributeError, TypeError):
        pass


def report_of(model) -> dict | None:
    """The report the last torchslim verb attached to `model`: family, method and its figures (prune:
    before/after and steps; sparsify: densities; decompose: the DecompositionReport; quantize: int8 paths)."""
    return getattr(model, REPORT_ATTR, None)


def deprecated(old: str, new: str) -> None:
    warnings.warn(f"{old} is deprecated; call {new}", DeprecationWarning, stacklevel=3)

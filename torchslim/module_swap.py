"""The one way torchslim swaps modules inside a model (torchao's `_replace_with_custom_fn_if_matches_filter`
idea): walk the module tree once and put a new module where the old one was.

    replace_modules(model, lambda m, fqn: Masked(m) if isinstance(m, nn.Linear) else None)
    replace_modules(model, {"fc": nn.Linear(512, 5)})        # by name
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Callable

from torch import nn

from torchslim.errors import InvalidInputError

SwapFn = Callable[[nn.Module, str], "nn.Module | None"]


def replace_modules(model: nn.Module, swap: SwapFn | Mapping[str, nn.Module]) -> nn.Module:
    """Walk the tree once; where `swap(module, fqn)` returns a module, put it in place of the old one.

    Args:
        model: changed in place (unless the root itself is swapped: then the new root is returned).
        swap: `(module, fqn) -> new module or None` (None keeps the module), or a mapping
            {fqn: new module}; every name of a mapping must exist. The walk sees the tree as it was
            before the swap, so nested names (an outer module and one inside it) take one call each,
            outer first.

    Returns:
        The model (or the new root).
    """
    if isinstance(swap, Mapping):
        table = dict(swap)
        missing = sorted(set(table) - {fqn for fqn, _ in model.named_modules(remove_duplicate=False)})
        if missing:
            raise InvalidInputError(f"no module named {missing[0]!r} to replace in {type(model).__name__}")
        swap = lambda m, fqn: table.get(fqn)  # noqa: E731
    if (new := swap(model, "")) is not None:
        return new
    for fqn, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            child_fqn = f"{fqn}.{name}" if fqn else name
            new = swap(child, child_fqn)
            if new is not None and new is not child:
                setattr(parent, name, new)
    return model

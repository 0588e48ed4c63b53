"""Re-heading: a model's last linear layer replaced so that it gives the data's number of classes."""
from __future__ import annotations

import torch
from torch import nn

from torchslim.errors import InvalidInputError
from torchslim.module_swap import replace_modules


def output_classes(model: nn.Module, input_size) -> int:
    """Length of the model's output on one input of `input_size` (C, H, W)."""
    was = model.training
    with torch.no_grad():
        out = model.eval()(torch.zeros(1, *input_size))
    model.train(was)
    return int(out.shape[-1])


def replace_head(model: nn.Module, num_classes: int) -> str:
    """Swap the last `nn.Linear` (in module order) for a new, randomly initialised one with `num_classes`
    outputs; returns what changed, e.g. "fc: 1000 -> 5 outputs"."""
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise InvalidInputError(f"{type(model).__name__} has no nn.Linear output layer to re-head; "
                                f"build it with {num_classes} outputs")
    name, old = linears[-1]
    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    replace_modules(model, {name: new})
    return f"{name}: {old.out_features} -> {num_classes} outputs (new layer, randomly initialised)"

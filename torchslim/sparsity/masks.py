"""Binary weight masks: a masked layer computes with W * M, and the mask travels with the model.

Design: a masked layer is a subclass of its dense class (`MaskedLinear(nn.Linear)`,
`MaskedConv2d(nn.Conv2d)`...) that keeps the *same* `weight` Parameter (so optimizers, state-dict keys
and `isinstance(m, nn.Conv2d)` checks are unchanged) and adds one boolean buffer `weight_mask`.

- forward uses W * M, so pruned connections contribute nothing whatever the optimizer does to W;
- `straight_through = True` (Dynamic Network Surgery) makes the gradient of W the gradient of W * M,
  so masked weights keep learning and can be spliced back (Guo et al. 2016, eq. 4);
- `KeepMasks` (a `torchslim.train.Callback`) re-zeroes W under the mask after every optimizer step
  (momentum and weight decay would otherwise move pruned weights away from 0);
- masks survive `torchslim.io.save_model` / `load_model`: the masked classes are torchslim modules
  rebuilt from their constructor arguments, and `weight_mask` is a persistent buffer. Call
  `remove_masks(model)` to bake W * M into plain layers (for export, quantization, sparse execution).
- `torchslim.analyze` reports the density of masked layers: it reads the `<param>_mask` attribute.
"""
from __future__ import annotations

from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from torchslim.errors import InvalidInputError
from torchslim.module_swap import replace_modules
from torchslim.train.fit import Callback

FilterFn = Callable[[nn.Module, str], bool]


class _MaskedMixin:
    """W * M in the forward; the mask is a bool buffer of W's shape."""

    _dense_cls: type[nn.Module]
    straight_through: bool = False

    def _init_mask(self) -> None:
        self.register_buffer("weight_mask", torch.ones_like(self.weight, dtype=torch.bool))
        self.straight_through = False

    def masked_weight(self) -> torch.Tensor:
        w, m = self.weight, self.weight_mask
        if self.straight_through and torch.is_grad_enabled():
            # value W*M, gradient dL/d(W*M) passed to all of W (DNS, Guo et al. 2016 eq. 4)
            return w - (w * ~m).detach()
        return w * m

    def spec_args(self) -> dict:
        """Constructor arguments of the dense class, read from attributes (for torchslim.io)."""
        from torchslim.io.model_file import init_args

        args = init_args(self, self._dense_cls)
        return args

    @property
    def density(self) -> float:
        return float(self.weight_mask.float().mean())

    def dense_module(self) -> nn.Module:
        """A plain layer (new Parameters) holding W * M: for export, which needs no mask tensor."""
        from torchslim.io.model_file import init_args

        new = self._dense_cls(**init_args(self, self._dense_cls))
        with torch.no_grad():
            new.weight.copy_(self.weight * self.weight_mask)
            if getattr(self, "bias", None) is not None:
                new.bias.copy_(self.bias)
        return new.to(self.weight.device).train(self.training)


class MaskedLinear(_MaskedMixin, nn.Linear):
    _dense_cls = nn.Linear

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_mask()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.masked_weight(), self.bias)


class MaskedConv1d(_MaskedMixin, nn.Conv1d):
    _dense_cls = nn.Conv1d

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_mask()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.masked_weight(), self.bias)


class MaskedConv2d(_MaskedMixin, nn.Conv2d):
    _dense_cls = nn.Conv2d

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_mask()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.masked_weight(), self.bias)


_MASKED = {nn.Linear: MaskedLinear, nn.Conv1d: MaskedConv1d, nn.Conv2d: MaskedConv2d}
MASKABLE = tuple(_MASKED)


def is_masked(m: nn.Module) -> bool:
    return isinstance(m, _MaskedMixin)


def _default_filter(m: nn.Module, fqn: str) -> bool:
    return type(m) in _MASKED


def _to_masked(m: nn.Module) -> nn.Module:
    cls = _MASKED[type(m)]
    new = cls.__new__(cls)
    new.__dict__ = m.__dict__.copy()  # same Parameters (optimizer state stays valid), hooks, training flag
    new._parameters, new._buffers, new._modules = dict(m._parameters), dict(m._buffers), dict(m._modules)
    new._init_mask()
    return new


def attach_masks(model: nn.Module, filter_fn: FilterFn | None = None) -> dict[str, nn.Module]:
    """Give every selected Linear/Conv layer an all-ones mask (in place); return {fqn: masked layer}.

    Layers that already carry a mask are kept as they are.

    Args:
        model: the network; modified in place.
        filter_fn: `(module, fqn) -> bool` choosing the layers (default: every Linear, Conv1d, Conv2d).

    Example:
        >>> layers = attach_masks(model)
        >>> set_mask(layers["0"], layers["0"].weight.abs() > 0.01)
    """
    flt = filter_fn or _default_filter

    def swap(m, fqn):
        if type(m) in _MASKED and flt(m, fqn):
            return _to_masked(m)
        return None

    replace_modules(model, swap)
    return dict(masked_layers(model))


def masked_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(fqn, layer) of every masked layer, in module order."""
    for name, m in model.named_modules():
        if is_masked(m):
            yield name, m


def set_mask(layer: nn.Module, mask: torch.Tensor, *, zero_weights: bool = True) -> None:
    """Replace the mask of a masked layer; optionally zero the pruned weights now."""
    if not is_masked(layer):
        raise InvalidInputError(f"{type(layer).__name__} has no mask; call attach_masks(model) first")
    if mask.shape != layer.weight.shape:
        raise InvalidInputError(f"mask of shape {tuple(mask.shape)} does not fit weight {tuple(layer.weight.shape)}")
    layer.weight_mask.copy_(mask.to(layer.weight_mask.device, torch.bool))
    if zero_weights:
        with torch.no_grad():
            layer.weight.mul_(layer.weight_mask)


def apply_masks(model: nn.Module) -> None:
    """Zero every weight under its mask (W <- W * M)."""
    with torch.no_grad():
        for _, m in masked_layers(model):
            m.weight.mul_(m.weight_mask)


def remove_masks(model: nn.Module) -> nn.Module:
    """Bake W * M into plain nn.Linear / nn.Conv layers (in place) and return the model.

    The pruned weights become exact zeros; the same Parameter objects are kept.
    """
    def swap(m, fqn):
        if not is_masked(m):
            return None
        with torch.no_grad():
            m.weight.mul_(m.weight_mask)
        cls = m._dense_cls
        new = cls.__new__(cls)
        new.__dict__ = m.__dict__.copy()
        new._parameters, new._modules = dict(m._parameters), dict(m._modules)
        new._buffers = {k: v for k, v in m._buffers.items() if k != "weight_mask"}
        new.__dict__.pop("straight_through", None)
        return new

    return replace_modules(model, swap)


def sparsity_table(model: nn.Module) -> list[dict]:
    """Per weight tensor of Linear/Conv layers: fqn, shape, params, nonzeros (of W*M), density."""
    rows = []
    for name, m in model.named_modules():
        if isinstance(m, MASKABLE) or hasattr(m, "sparse_weight_nnz"):
            if hasattr(m, "sparse_weight_nnz"):
                total, nnz, shape = m.weight_numel, m.sparse_weight_nnz(), list(m.weight_shape)
            else:
                w = m.masked_weight() if is_masked(m) else m.weight
                total, nnz, shape = w.numel(), int(torch.count_nonzero(w.detach())), list(w.shape)
            rows.append({"layer": name, "type": type(m).__name__, "shape": shape, "params": total,
                         "nonzero": nnz, "density": nnz / total if total else 1.0})
    return rows


def density_summary(model: nn.Module) -> dict:
    """Totals over `sparsity_table`: weights, nonzeros, density and compression ratio (total / kept)."""
    rows = sparsity_table(model)
    total = sum(r["params"] for r in rows)
    nnz = sum(r["nonzero"] for r in rows)
    return {"weights": total, "nonzero": nnz, "density": nnz / total if total else 1.0,
            "compression": total / nnz if nnz else float("inf"), "layers": rows}


class KeepMasks(Callback):
    """Keep pruned weights at exactly zero during retraining: W <- W * M after every optimizer step.

    Also zeroes the gradients of pruned weights (after_backward), so momentum buffers do not build up.
    """

    def after_backward(self, model: nn.Module, step: int) -> None:
        for _, m in masked_layers(model):
            if m.weight.grad is not None and not m.straight_through:
                m.weight.grad.mul_(m.weight_mask)

    def after_step(self, model: nn.Module, step: int) -> None:
        apply_masks(model)

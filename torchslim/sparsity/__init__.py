"""Kernel sparsification: weights driven to zero element by element or in groups (one file per method).

`torchslim.sparsify(model, method, sparsity, data=...)` runs a method from `METHODS`; masked layers
compute with W * M (`masks.py`) and `remove_masks` bakes the zeros in.
"""
from torchslim.sparsity.api import METHODS, register_method, sparsify
from torchslim.sparsity.masks import (KeepMasks, MaskedConv1d, MaskedConv2d, MaskedLinear, apply_masks,
                                      attach_masks, density_summary, is_masked, masked_layers, remove_masks,
                                      set_mask, sparsity_table)
from torchslim.sparsity.magnitude import AGPSchedule, MagnitudeConfig, magnitude_masks, prune_by_magnitude

__all__ = [
    "METHODS", "register_method", "sparsify", "KeepMasks", "MaskedConv1d", "MaskedConv2d", "MaskedLinear",
    "apply_masks", "attach_masks", "density_summary", "is_masked", "masked_layers", "remove_masks", "set_mask",
    "sparsity_table", "AGPSchedule", "MagnitudeConfig", "magnitude_masks", "prune_by_magnitude",
]

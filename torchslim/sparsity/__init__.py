"""Kernel sparsification: weights driven to zero element by element, by whole k x k kernels or in groups (one file per method).

`torchslim.sparsify(model, method, sparsity, data=...)` runs a method from `METHODS`; masked layers
compute with W * M (`masks.py`) and `remove_masks` bakes the zeros in. `force` (Force Regularization)
trains the same way but makes each layer's filters low-rank instead of sparse, for `decompose`.
"""
from torchslim.sparsity.api import METHODS, register_method, sparsify
from torchslim.sparsity.masks import (KeepMasks, MaskedConv1d, MaskedConv2d, MaskedLinear, apply_masks,
                                      attach_masks, density_summary, is_masked, masked_layers, remove_masks,
                                      set_mask, sparsity_table)
from torchslim.sparsity.magnitude import AGPSchedule, MagnitudeConfig, magnitude_masks, prune_by_magnitude
from torchslim.sparsity.dns import DNSConfig, NetworkSurgery
from torchslim.sparsity.iht import IHTConfig
from torchslim.sparsity.l1 import L1Config, L1Regularizer
from torchslim.sparsity.correlation import CorrelationConfig, activation_correlation, correlation_mask
from torchslim.sparsity.lowered_conv import LoweredConv2d
from torchslim.sparsity.sparse_exec import SparseConv2d, SparseLinear, to_dense, to_sparse
from torchslim.sparsity.kernel_masks import (KernelMagnitudeConfig, RandomMasksConfig, magnitude_kernel_mask,
                                             random_kernel_mask)
from torchslim.sparsity.energy_aware import EnergyAwareConfig, energy_aware_prune, restore_least_squares
from torchslim.sparsity.force import ForceConfig, ForceRegularizer, energy_kept, filter_force
from torchslim.sparsity.ssl import (GroupLasso, GroupLassoProx, KeepZeroGroups, SSLConfig, drop_zero_blocks, gemm_table,
                                    lower_sparse_convs, remove_zero_groups, zero_small_groups)

__all__ = [
    "METHODS", "register_method", "sparsify", "KeepMasks", "MaskedConv1d", "MaskedConv2d", "MaskedLinear",
    "apply_masks", "attach_masks", "density_summary", "is_masked", "masked_layers", "remove_masks", "set_mask",
    "sparsity_table", "AGPSchedule", "MagnitudeConfig", "magnitude_masks", "prune_by_magnitude", "DNSConfig",
    "NetworkSurgery", "IHTConfig", "L1Config", "L1Regularizer", "CorrelationConfig", "activation_correlation",
    "correlation_mask", "LoweredConv2d", "SparseConv2d", "SparseLinear", "to_dense", "to_sparse",
    "KernelMagnitudeConfig", "RandomMasksConfig", "magnitude_kernel_mask", "random_kernel_mask",
    "EnergyAwareConfig", "energy_aware_prune", "restore_least_squares", "GroupLasso", "GroupLassoProx",
    "KeepZeroGroups", "SSLConfig", "drop_zero_blocks", "ForceConfig", "ForceRegularizer", "energy_kept", "filter_force",
    "gemm_table", "lower_sparse_convs", "remove_zero_groups", "zero_small_groups",
]

"""Sparse execution: Linear and Conv2d layers whose weights are stored in CSR and multiplied sparse.

torch 2.14 CPU multiplies a `torch.sparse_csr` matrix by a dense one through MKL's sparse BLAS
(`torch.backends.mkl.is_available()`); a conv runs as CSR(W: N x C*kh*kw) @ im2col(x). Whether this
beats the dense GEMM depends on the sparsity and the shape: `benchmarks/bench_sparse_execution.py`
measures the crossover on the machine at hand (dense MKL GEMM is so efficient that irregular sparsity
pays only at high sparsity). Weights are stored as three buffers (crow_indices, col_indices, values),
so a sparse model round-trips through `torchslim.io` and takes nnz * (4 + 4) bytes instead of n * 4.
"""
from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from torchslim.errors import InvalidInputError
from torchslim.module_swap import replace_modules
from torchslim.sparsity.masks import FilterFn, is_masked, remove_masks


class _CSRWeight(nn.Module):
    """Holds a 2-D CSR weight as buffers and builds the sparse tensor once per device."""

    def _init_csr(self, rows: int, cols: int, nnz: int, bias: bool) -> None:
        self.nnz = int(nnz)
        self.register_buffer("crow_indices", torch.zeros(rows + 1, dtype=torch.int32))
        self.register_buffer("col_indices", torch.zeros(nnz, dtype=torch.int32))
        self.register_buffer("values", torch.zeros(nnz))
        self.bias = nn.Parameter(torch.zeros(self._bias_size())) if bias else None
        self._csr = None
        self._csr_key = None

    def _set_from_dense(self, w2d: torch.Tensor) -> None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            csr = w2d.detach().to_sparse_csr()
        self.crow_indices = csr.crow_indices().to(torch.int32)
        self.col_indices = csr.col_indices().to(torch.int32)
        self.values = csr.values().clone()
        self.nnz = int(self.values.numel())

    def csr(self) -> torch.Tensor:
        key = (self.values.data_ptr(), self.values.device, self.values.dtype)
        if self._csr is None or self._csr_key != key:
            # checked once per build: the indices may come from a file
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
                self._csr = torch.sparse_csr_tensor(self.crow_indices, self.col_indices, self.values,
                                                    size=self.weight_shape_2d, check_invariants=True)
            self._csr_key = key
        return self._csr

    def sparse_weight_nnz(self) -> int:
        return self.nnz

    @property
    def weight_numel(self) -> int:
        return math.prod(self.weight_shape)

    def dense_weight(self) -> torch.Tensor:
        return self.csr().to_dense().view(self.weight_shape)

    def profile_params(self) -> tuple[int, int]:
        """(params, nonzero) as the dense layer would count them (for torchslim.analysis)."""
        b = self.bias.numel() if self.bias is not None else 0
        nzb = int(torch.count_nonzero(self.bias)) if self.bias is not None else 0
        return self.weight_numel + b, self.nnz + nzb


class SparseLinear(_CSRWeight):
    """y = x W^T + b with W in CSR (MKL sparse BLAS on CPU)."""

    def __init__(self, in_features: int, out_features: int, nnz: int = 0, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self._init_csr(out_features, in_features, nnz, bias)

    def _bias_size(self) -> int:
        return self.out_features

    @property
    def weight_shape(self):
        return (self.out_features, self.in_features)

    weight_shape_2d = weight_shape

    @classmethod
    def from_dense(cls, lin: nn.Linear) -> "SparseLinear":
        w = lin.masked_weight() if is_masked(lin) else lin.weight
        new = cls(lin.in_features, lin.out_features, 0, lin.bias is not None)
        new._set_from_dense(w)
        if lin.bias is not None:
            new.bias.data.copy_(lin.bias.detach())
        return new.to(lin.weight.device)

    def spec_args(self) -> dict:
        return {"in_features": self.in_features, "out_features": self.out_features, "nnz": self.nnz,
                "bias": self.bias is not None}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        y = torch.sparse.mm(self.csr(), x2.t().contiguous()).t()
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], self.out_features)

    def profile_macs(self, inp: torch.Tensor, out: torch.Tensor) -> int:
        return self.nnz * (out.numel() // out.shape[-1] // max(out.shape[0], 1))

    def extra_repr(self) -> str:
        return f"{self.in_features}->{self.out_features}, nnz={self.nnz} ({self.nnz / self.weight_numel:.1%})"


class SparseConv2d(_CSRWeight):
    """conv2d as CSR(W: out x in*kh*kw) @ im2col(x); groups=1, zero padding."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 nnz: int = 0, bias: bool = True):
        super().__init__()
        pair = lambda v: tuple(v) if isinstance(v, (list, tuple)) else (int(v), int(v))  # noqa: E731
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size, self.stride = pair(kernel_size), pair(stride)
        self.padding, self.dilation = pair(padding), pair(dilation)
        self._init_csr(out_channels, in_channels * math.prod(self.kernel_size), nnz, bias)

    def _bias_size(self) -> int:
        return self.out_channels

    @property
    def weight_shape(self):
        return (self.out_channels, self.in_channels, *self.kernel_size)

    @property
    def weight_shape_2d(self):
        return (self.out_channels, self.in_channels * math.prod(self.kernel_size))

    @classmethod
    def from_dense(cls, conv: nn.Conv2d) -> "SparseConv2d":
        if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise InvalidInputError(f"cannot run {conv} sparse: only groups=1 and numeric zero padding")
        w = conv.masked_weight() if is_masked(conv) else conv.weight
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                  conv.dilation, 0, conv.bias is not None)
        new._set_from_dense(w.flatten(1))
        if conv.bias is not None:
            new.bias.data.copy_(conv.bias.detach())
        return new.to(conv.weight.device)

    def spec_args(self) -> dict:
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": list(self.kernel_size), "stride": list(self.stride), "padding": list(self.padding),
                "dilation": list(self.dilation), "nnz": self.nnz, "bias": self.bias is not None}

    def _out_hw(self, h: int, w: int) -> tuple[int, int]:
        kh, kw = self.kernel_size
        return ((h + 2 * self.padding[0] - self.dilation[0] * (kh - 1) - 1) // self.stride[0] + 1,
                (w + 2 * self.padding[1] - self.dilation[1] * (kw - 1) - 1) // self.stride[1] + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        ho, wo = self._out_hw(x.shape[2], x.shape[3])
        cols = F.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)  # (N, K, L)
        k, L = cols.shape[1], cols.shape[2]
        rhs = cols.transpose(0, 1).reshape(k, n * L) if n > 1 else cols[0]
        y = torch.sparse.mm(self.csr(), rhs)  # (out, N*L)
        y = y.view(self.out_channels, n, L).transpose(0, 1) if n > 1 else y.unsqueeze(0)
        if self.bias is not None:
            y = y + self.bias[:, None]
        return y.reshape(n, self.out_channels, ho, wo)

    def profile_macs(self, inp: torch.Tensor, out: torch.Tensor) -> int:
        return self.nnz * out.shape[-1] * out.shape[-2]

    def extra_repr(self) -> str:
        return (f"{self.in_channels}->{self.out_channels}, k={self.kernel_size}, s={self.stride}, "
                f"nnz={self.nnz} ({self.nnz / self.weight_numel:.1%})")


def to_sparse(model: nn.Module, *, min_sparsity: float = 0.9, filter_fn: FilterFn | None = None) -> list[str]:
    """Replace (in place) every Linear / Conv2d whose weight sparsity is at least `min_sparsity` by its CSR
    version; masks are baked in first. Returns the converted layers' names.

    Args:
        min_sparsity: convert only layers at least this sparse (measure your crossover with
            benchmarks/bench_sparse_execution.py: below it the dense GEMM is faster).

    Example:
        >>> names = to_sparse(remove_masks(model), min_sparsity=0.9)
    """
    remove_masks(model)
    done = []

    def swap(m, fqn):
        if type(m) not in (nn.Linear, nn.Conv2d) or (filter_fn is not None and not filter_fn(m, fqn)):
            return None
        if isinstance(m, nn.Conv2d) and (m.groups != 1 or m.padding_mode != "zeros" or isinstance(m.padding, str)):
            return None
        sparsity = 1.0 - float(torch.count_nonzero(m.weight)) / m.weight.numel()
        if sparsity < min_sparsity:
            return None
        done.append(fqn)
        return SparseLinear.from_dense(m) if isinstance(m, nn.Linear) else SparseConv2d.from_dense(m)

    replace_modules(model, swap)
    return done


def to_dense(model: nn.Module) -> nn.Module:
    """Undo `to_sparse`: plain nn.Linear / nn.Conv2d layers with the (zero-filled) dense weights."""
    def swap(m, fqn):
        if isinstance(m, SparseLinear):
            new = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
        elif isinstance(m, SparseConv2d):
            new = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation,
                            bias=m.bias is not None)
        else:
            return None
        with torch.no_grad():
            new.weight.copy_(m.dense_weight())
            if m.bias is not None:
                new.bias.copy_(m.bias)
        return new.to(m.values.device)

    return replace_modules(model, swap)

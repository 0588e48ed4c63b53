"""A convolution lowered to one GEMM over the im2col rows and filters that survived structured sparsity.

Caffe-style lowering (Wen et al. 2016, fig. 2): a conv is W (N filters x C*kh*kw) times the im2col
matrix (C*kh*kw x H'W'). SSL's shape-wise groups are *columns* of W: a column that is all zero can be
dropped together with the matching im2col row, and an all-zero filter (row of W) with its output.
`LoweredConv2d` keeps only the surviving `rows` (filters) and `cols` (im2col rows, index c*kh*kw +
i*kw + j) and computes W[rows][:, cols] @ im2col(x)[cols]; dropped filters output zeros (or their bias),
so the layer is a drop-in replacement with the same output shape. Input channels with no surviving
column are skipped before im2col.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from torchslim.errors import InvalidInputError


def _pair(v) -> tuple[int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (int(v), int(v))


class LoweredConv2d(nn.Module):
    """conv2d as `W_small (|rows| x |cols|) @ im2col(x)[cols]`; round-trips through torchslim.io.

    Args: the Conv2d geometry, `rows` (kept filter indices), `cols` (kept im2col row indices), `bias`.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 rows=None, cols=None, bias: bool = False):
        super().__init__()
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
        self.padding, self.dilation = _pair(padding), _pair(dilation)
        kk = math.prod(self.kernel_size)
        rows = list(range(out_channels)) if rows is None else [int(r) for r in rows]
        cols = list(range(in_channels * kk)) if cols is None else [int(c) for c in cols]
        if not rows or not cols:
            raise InvalidInputError("LoweredConv2d needs at least one kept filter and one kept column "
                                    "(a conv with none left should be removed instead)")
        self.rows, self.cols = rows, cols
        # input channels that feed a kept column; columns re-indexed into the sliced input
        chans = sorted({c // kk for c in cols})
        pos = {ch: i for i, ch in enumerate(chans)}
        self.register_buffer("channel_index", torch.tensor(chans, dtype=torch.long), persistent=False)
        self.register_buffer("col_index", torch.tensor([pos[c // kk] * kk + c % kk for c in cols],
                                                       dtype=torch.long), persistent=False)
        self.register_buffer("row_index", torch.tensor(rows, dtype=torch.long), persistent=False)
        # im2col of the kept columns only: for each kernel offset (i, j), the kept channels at that offset
        # are one strided slice + index_select of the padded input (unfold would build every column)
        kw = self.kernel_size[1]
        by_offset: dict[int, list[int]] = {}
        for c in cols:
            by_offset.setdefault(c % kk, []).append(c // kk)
        self._offsets = sorted(by_offset)
        for o in self._offsets:
            self.register_buffer(f"chans_{o}", torch.tensor(by_offset[o], dtype=torch.long), persistent=False)
        order = [o_c for o in self._offsets for o_c in ((c * kk + o) for c in by_offset[o])]
        where = {c: i for i, c in enumerate(cols)}
        self.register_buffer("gather_perm", torch.tensor([where[c] for c in order], dtype=torch.long),
                             persistent=False)
        self._kw = kw
        self._all_chans = len(chans) == in_channels
        self._all_cols = len(cols) == len(chans) * kk
        self._all_rows = len(rows) == out_channels
        self.weight = nn.Parameter(torch.zeros(len(rows), len(cols)))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def spec_args(self) -> dict:
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": list(self.kernel_size), "stride": list(self.stride), "padding": list(self.padding),
                "dilation": list(self.dilation), "rows": self.rows, "cols": self.cols,
                "bias": self.bias is not None}

    @property
    def gemm_shape(self) -> tuple[int, int]:
        """(filters, im2col rows) of the GEMM this layer runs."""
        return tuple(self.weight.shape)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, rows=None, cols=None) -> "LoweredConv2d":
        """Lower `conv`, keeping the filters `rows` and im2col rows `cols` (default: the nonzero ones)."""
        if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise InvalidInputError(f"cannot lower {conv}: only groups=1, zero padding given as numbers")
        w = conv.weight.detach().flatten(1)
        if rows is None:
            rows = torch.nonzero(w.abs().sum(1) > 0).flatten().tolist()
        if cols is None:
            cols = torch.nonzero(w[rows].abs().sum(0) > 0).flatten().tolist() if rows else []
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                  rows=rows, cols=cols, bias=conv.bias is not None)
        with torch.no_grad():
            new.weight.copy_(w[rows][:, cols])
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
        return new.to(conv.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        kh, kw = self.kernel_size
        x_full = x
        if not self._all_chans:
            x = x.index_select(1, self.channel_index)
        if self._all_cols:
            # only whole channels (and filters) removed: a smaller dense conv, which oneDNN runs best
            out = F.conv2d(x, self.weight.view(len(self.rows), -1, kh, kw), None, self.stride, self.padding,
                           self.dilation)
            ho, wo = out.shape[-2:]
            out = out.flatten(2)
        else:
            ho = (h + 2 * self.padding[0] - self.dilation[0] * (kh - 1) - 1) // self.stride[0] + 1
            wo = (w + 2 * self.padding[1] - self.dilation[1] * (kw - 1) - 1) // self.stride[1] + 1
            cols = self._im2col(x_full, ho, wo)  # (N, |cols|, L), columns in gather_perm order
            L = cols.shape[-1]
            w_perm = self.weight.index_select(1, self.gather_perm)
            if torch.jit.is_tracing():
                # ONNX export traces one batch size: a broadcast matmul keeps the batch dimension dynamic
                out = w_perm @ cols
            else:  # one GEMM over the whole batch: (rows x cols) @ (cols x N*L)
                rhs = cols[0] if n == 1 else cols.transpose(0, 1).reshape(cols.shape[1], n * L)
                out = w_perm @ rhs
                out = out.unsqueeze(0) if n == 1 else out.view(len(self.rows), n, L).transpose(0, 1)
        if not self._all_rows:
            full = out.new_zeros(out.shape[0], self.out_channels, out.shape[-1])
            out = full.index_copy(1, self.row_index, out.contiguous())
        if self.bias is not None:
            out = out + self.bias[:, None]
        return out.reshape(-1, self.out_channels, ho, wo)

    def _im2col(self, x: torch.Tensor, ho: int, wo: int) -> torch.Tensor:
        (sh, sw), (dh, dw) = self.stride, self.dilation
        xp = F.pad(x, (self.padding[1], self.padding[1], self.padding[0], self.padding[0]))
        parts = []
        for o in self._offsets:
            i, j = divmod(o, self._kw)
            sl = xp[:, :, i * dh: i * dh + (ho - 1) * sh + 1: sh, j * dw: j * dw + (wo - 1) * sw + 1: sw]
            parts.append(sl.index_select(1, getattr(self, f"chans_{o}")))
        return torch.cat(parts, 1).flatten(2)

    def profile_macs(self, inp: torch.Tensor, out: torch.Tensor) -> int:
        """MACs per image of the GEMM this layer really runs (for torchslim.analysis)."""
        return len(self.rows) * len(self.cols) * out.shape[-1] * out.shape[-2]

    def extra_repr(self) -> str:
        return (f"{self.in_channels}->{self.out_channels}, k={self.kernel_size}, s={self.stride}, "
                f"GEMM {len(self.rows)}x{len(self.cols)} of {self.out_channels}x"
                f"{self.in_channels * math.prod(self.kernel_size)}")

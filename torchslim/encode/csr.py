"""Sparse storage with relative indices (Deep Compression sec. 2, fig. 2).

The weight tensor is flattened (row-major over (out, in, kh, kw)); each surviving weight is stored
as (gap, value) where gap = its position minus the previous stored position, minus 1. A gap is held
in `gap_bits` bits (8 for conv, 5 for FC in the paper); when a gap needs more, filler entries are
inserted: gap 2^gap_bits - 1 (a jump of 2^gap_bits positions) with the reserved value FILLER.
"""
from __future__ import annotations

import numpy as np


def to_relative(positions: np.ndarray, values: np.ndarray, gap_bits: int, filler: int) -> tuple[np.ndarray, np.ndarray]:
    """(gaps, values) with filler entries, from sorted flat positions and their values."""
    span = 1 << gap_bits
    gaps, vals = [], []
    prev = -1
    for p, v in zip(np.asarray(positions).tolist(), np.asarray(values).tolist()):
        d = p - prev - 1
        while d >= span:  # the filler sits at prev + span (a zero weight)
            gaps.append(span - 1)
            vals.append(filler)
            d -= span
        gaps.append(d)
        vals.append(v)
        prev = p
    return np.asarray(gaps, dtype=np.int64), np.asarray(vals, dtype=np.int64)


def from_relative(gaps: np.ndarray, values: np.ndarray, numel: int, filler: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of `to_relative`: (positions, values) of the real entries. Raises ValueError if out of range."""
    gaps, values = np.asarray(gaps, dtype=np.int64), np.asarray(values, dtype=np.int64)
    pos = np.cumsum(gaps + 1) - 1
    keep = values != filler
    positions = pos[keep]
    if len(pos) and (pos[-1] >= numel if len(pos) else False):
        raise ValueError(f"sparse index {int(pos[-1])} is outside the tensor of {numel} elements")
    return positions, values[keep]

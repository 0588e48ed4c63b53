"""Activation range observers: from calibration values to the clipping range [lo, hi] of an asymmetric
uint8 quantizer (scale = (hi - lo) / 255, zero point = round(-lo / scale)).

All observers work on one histogram per tensor (2048 bins over the tensor's min..max, collected in a
first pass), so the same code serves the torch and the ONNX Runtime paths:

- `minmax`: the full range (no clipping error, largest rounding error);
- `percentile`: the 0.01 / 99.99 percentiles (clip rare outliers; Wu et al. 2020, "Integer
  quantization for deep learning inference", sec. 4.3);
- `mse`: the range minimising the expected squared error of quantize-dequantize under the
  histogram (Banner et al. 2019 / Migacz's "8-bit inference with TensorRT" uses KL; we take MSE).
"""
from __future__ import annotations

import numpy as np

from torchslim.registry import Registry

BINS = 2048
OBSERVERS: Registry = Registry("observer")


class Histogram:
    """Running min/max (pass 1), then a fixed-range histogram (pass 2)."""

    def __init__(self) -> None:
        self.lo, self.hi = np.inf, -np.inf
        self.counts: np.ndarray | None = None

    def update_range(self, x: np.ndarray) -> None:
        if x.size:
            self.lo, self.hi = min(self.lo, float(x.min())), max(self.hi, float(x.max()))

    def update_hist(self, x: np.ndarray) -> None:
        lo, hi = self.lo, self.hi if self.hi > self.lo else self.lo + 1e-8
        c, _ = np.histogram(x.ravel(), bins=BINS, range=(lo, hi))
        self.counts = c.astype(np.float64) if self.counts is None else self.counts + c

    def edges(self) -> np.ndarray:
        hi = self.hi if self.hi > self.lo else self.lo + 1e-8
        return np.linspace(self.lo, hi, (BINS if self.counts is None else len(self.counts)) + 1)


@OBSERVERS.register("minmax")
def minmax_range(h: Histogram) -> tuple[float, float]:
    return _include_zero(h.lo, h.hi)


@OBSERVERS.register("percentile")
def percentile_range(h: Histogram, pct: float = 99.99) -> tuple[float, float]:
    if h.counts is None or h.counts.sum() == 0:
        return minmax_range(h)
    cdf = np.cumsum(h.counts) / h.counts.sum()
    e = h.edges()
    lo = e[np.searchsorted(cdf, 1 - pct / 100)]
    hi = e[min(np.searchsorted(cdf, pct / 100) + 1, len(e) - 1)]
    return _include_zero(float(lo), float(hi))


def _quant_mse(centers: np.ndarray, counts: np.ndarray, lo: float, hi: float, levels: int = 255) -> float:
    scale = max(hi - lo, 1e-12) / levels
    zp = np.round(-lo / scale)
    q = np.clip(np.round(centers / scale) + zp, 0, levels)
    return float(np.sum(counts * ((q - zp) * scale - centers) ** 2))


@OBSERVERS.register("mse")
def mse_range(h: Histogram, steps: int = 100) -> tuple[float, float]:
    """Search shrinking ranges [lo * a, hi * a], a in (0, 1], for the least quantization MSE."""
    if h.counts is None or h.counts.sum() == 0:
        return minmax_range(h)
    e = h.edges()
    centers = (e[:-1] + e[1:]) / 2
    lo0, hi0 = _include_zero(h.lo, h.hi)
    best, best_err = (lo0, hi0), np.inf
    for a in np.linspace(1.0, 0.2, steps):
        err = _quant_mse(centers, h.counts, lo0 * a, hi0 * a)
        if err < best_err:
            best, best_err = (lo0 * a, hi0 * a), err
    return float(best[0]), float(best[1])


def _include_zero(lo: float, hi: float) -> tuple[float, float]:
    """Quantized ranges contain 0 exactly (zero padding and ReLU outputs stay exact)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo < 1e-8:
        hi = lo + 1e-8
    return lo, hi


def qparams(lo: float, hi: float, levels: int = 255) -> tuple[float, int]:
    """(scale, zero_point) of an asymmetric uint8 quantizer for the range [lo, hi]."""
    scale = (hi - lo) / levels
    return scale, int(np.clip(np.round(-lo / scale), 0, levels))

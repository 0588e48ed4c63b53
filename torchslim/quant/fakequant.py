"""Fake quantization (quantize -> dequantize in float) with the straight-through estimator.

Weights: symmetric int8 per output channel, scale_c = max|W_c| / 127 (zero point 0).
Activations: asymmetric uint8, scale = (hi - lo) / 255, zero point z: q = clamp(round(x / s) + z, 0, 255).
The STE (Bengio et al. 2013) passes the gradient through round() unchanged inside the range and
zeroes it where the value was clipped (Jacob et al. 2018, eq. 2 / sec. 3).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from torchslim.module_swap import replace_modules


def fake_quant_weight(w: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Symmetric per-output-channel fake quantization of a weight tensor (STE gradient)."""
    qmax = 2 ** (bits - 1) - 1
    scale = w.detach().abs().flatten(1).amax(1).clamp_min(1e-12) / qmax
    scale = scale.view(-1, *([1] * (w.ndim - 1)))
    q = torch.clamp(torch.round(w / scale), -qmax, qmax) * scale
    return q.detach() + (w - w.detach())  # value exactly q, gradient 1 (STE)


def fake_quant_act(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
    """Asymmetric uint8 fake quantization with STE (gradient 0 where clipped)."""
    return torch.fake_quantize_per_tensor_affine(x, scale, zero_point.to(torch.int32), 0, 255)


class FakeQuantLayer(nn.Module):
    """Wrap a Conv/Linear: fake-quantize its input (asymmetric uint8) and its weight (per-channel int8).

    `observe=True` tracks the input range with an exponential moving average (QAT, Jacob et al. sec. 3);
    otherwise the range set by calibration is used.
    """

    def __init__(self, layer: nn.Module, momentum: float = 0.01):
        super().__init__()
        self.layer = layer
        self.momentum = momentum
        self.register_buffer("lo", torch.tensor(0.0))
        self.register_buffer("hi", torch.tensor(0.0))
        self.observe = False

    def set_range(self, lo: float, hi: float) -> None:
        self.lo.fill_(min(lo, 0.0))
        self.hi.fill_(max(hi, 0.0, min(lo, 0.0) + 1e-8))

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        scale = ((self.hi - self.lo) / 255).clamp_min(1e-12)
        zp = torch.clamp(torch.round(-self.lo / scale), 0, 255)
        return scale.float(), zp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observe and self.training:
            with torch.no_grad():
                lo, hi = float(x.min()), float(x.max())
                if float(self.hi - self.lo) == 0.0:
                    self.set_range(lo, hi)
                else:
                    m = self.momentum
                    self.set_range((1 - m) * float(self.lo) + m * lo, (1 - m) * float(self.hi) + m * hi)
        if float(self.hi - self.lo) > 0:
            x = fake_quant_act(x, *self.qparams())
        w = fake_quant_weight(self.layer.weight)
        if isinstance(self.layer, nn.Linear):
            return F.linear(x, w, self.layer.bias)
        return self.layer._conv_forward(x, w, self.layer.bias)


def wrap_layers(model: nn.Module) -> dict[str, FakeQuantLayer]:
    """Replace every Conv2d/Linear of `model` (in place) by a FakeQuantLayer; returns {fqn: wrapper}."""
    out = {name: FakeQuantLayer(m) for name, m in model.named_modules()
           if name and isinstance(m, (nn.Conv2d, nn.Linear)) and not isinstance(m, FakeQuantLayer)}
    replace_modules(model, out)
    return out


def unwrap_layers(model: nn.Module) -> nn.Module:
    """Undo `wrap_layers` (in place): the float layers come back with their current weights."""
    return replace_modules(model, lambda m, fqn: m.layer if fqn and isinstance(m, FakeQuantLayer) else None)

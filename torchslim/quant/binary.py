"""Binary and ternary weights trained with the straight-through estimator.

- Binary (BinaryConnect, Courbariaux et al. 2015; with XNOR-Net's per-filter scale, Rastegari et al.
  2016, eq. 4): W_b = alpha_c * sign(W), alpha_c = mean |W_c| over filter c.
- Ternary (TWN, Li & Liu 2016, eq. 9-10): threshold Delta_c = 0.7 * mean |W_c|; W_t = alpha_c * sign(W)
  where |W| > Delta_c else 0, alpha_c = mean of |W| over the weights above the threshold.
The float weights are kept ("latent" weights); forward uses the binarised/ternarised ones, backward
passes the gradient straight through (clipped to |W| <= 1 for binary, as in BinaryConnect).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from torchslim.errors import InvalidInputError
from torchslim.module_swap import replace_modules


def _per_filter(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return x.to(w.dtype).view(-1, *([1] * (w.ndim - 1)))


# The per-filter statistics are taken in float64: a mean of n copies of one float32 value is then that
# value exactly, so binarize(binarize(w)) == binarize(w) bit for bit (same for ternarize). The .slim
# file stores only alpha and the signs and relies on this to give back exactly the same model.
def binarize(w: torch.Tensor) -> torch.Tensor:
    alpha = _per_filter(w.detach().abs().flatten(1).double().mean(1), w)
    b = alpha * torch.where(w >= 0, 1.0, -1.0)
    ste = w.clamp(-1, 1)  # gradient 1 inside [-1, 1], 0 outside
    return b.detach() + (ste - ste.detach())  # value exactly b, gradient of ste


def ternarize(w: torch.Tensor, delta_factor: float = 0.7) -> torch.Tensor:
    a = w.detach().abs().flatten(1).double()
    delta = delta_factor * a.mean(1, keepdim=True)
    keep = a > delta
    alpha = (a * keep).sum(1) / keep.sum(1).clamp_min(1)
    t = _per_filter(alpha, w) * torch.sign(w.detach()) * keep.view(w.shape)
    return t + (w - w.detach())  # value exactly t, gradient 1


class _LowBitMixin:
    _dense_cls: type[nn.Module]
    mode: str

    def quantized_weight(self) -> torch.Tensor:
        return binarize(self.weight) if self.mode == "binary" else ternarize(self.weight)

    def spec_args(self) -> dict:
        import inspect

        args = {}
        for name, p in inspect.signature(self._dense_cls.__init__).parameters.items():
            if name in ("self", "device", "dtype") or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            v = (self.bias is not None) if name == "bias" else getattr(self, name, None)
            if name == "bias" or hasattr(self, name):
                args[name] = list(v) if isinstance(v, tuple) else v
        args["mode"] = self.mode
        return args


class LowBitLinear(_LowBitMixin, nn.Linear):
    """nn.Linear with binary or ternary weights (latent float weights, STE)."""

    _dense_cls = nn.Linear

    def __init__(self, in_features: int, out_features: int, bias: bool = True, mode: str = "binary"):
        nn.Linear.__init__(self, in_features, out_features, bias)
        self.mode = mode

    def forward(self, x):
        return F.linear(x, self.quantized_weight(), self.bias)


class LowBitConv2d(_LowBitMixin, nn.Conv2d):
    """nn.Conv2d with binary or ternary weights (per-filter scale, latent float weights, STE)."""

    _dense_cls = nn.Conv2d

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", mode: str = "binary"):
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                           padding_mode)
        self.mode = mode

    def forward(self, x):
        return self._conv_forward(x, self.quantized_weight(), self.bias)


@dataclass
class LowBitConfig:
    """mode: binary | ternary. keep_first_last: leave the first conv and the last linear in float
    (as BinaryConnect/XNOR/TWN do). epochs of STE training with `fit` (default FitConfig otherwise)."""

    mode: str = "binary"
    keep_first_last: bool = True
    epochs: int = 1  # epochs of straight-through training
    fit: object = None


def to_low_bit(model: nn.Module, mode: str = "binary", keep_first_last: bool = True) -> dict[str, nn.Module]:
    """Swap Conv2d/Linear layers (in place) for binary/ternary layers; returns {fqn: layer}."""
    if mode not in ("binary", "ternary"):
        raise InvalidInputError(f"low-bit mode must be 'binary' or 'ternary', got {mode!r}")
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    skip = {names[0], names[-1]} if keep_first_last and len(names) > 2 else set()
    out = {}
    for name in names:
        if name in skip:
            continue
        m = model.get_submodule(name)
        if isinstance(m, nn.Linear):
            new = LowBitLinear(m.in_features, m.out_features, m.bias is not None, mode=mode)
        else:
            new = LowBitConv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation,
                               m.groups, m.bias is not None, m.padding_mode, mode=mode)
        new.load_state_dict(m.state_dict())
        out[name] = new
    replace_modules(model, out)
    return out


def low_bit_quantize(model: nn.Module, config: LowBitConfig | None = None, *, train_loader=None, val_loader=None,
                     inplace: bool = False) -> nn.Module:
    """Binary or ternary weights, trained with the STE.

    Example:
        >>> b = low_bit_quantize(model, LowBitConfig(mode="ternary", epochs=2), train_loader=data.train)
    """
    from dataclasses import replace

    from torchslim.train import FitConfig, fit

    cfg = config or LowBitConfig()
    model = model if inplace else copy.deepcopy(model)
    if not to_low_bit(model, cfg.mode, cfg.keep_first_last):
        raise InvalidInputError(f"{type(model).__name__} has no Conv2d/Linear layer to {cfg.mode}-quantize")
    if cfg.epochs > 0 and train_loader is not None:
        fc = cfg.fit or FitConfig(lr=0.01, weight_decay=0.0, progress=False)
        fit(model, train_loader, val_loader=val_loader, config=replace(fc, epochs=cfg.epochs))
    return model.eval()

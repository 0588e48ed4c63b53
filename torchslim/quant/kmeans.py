"""Weight sharing by k-means: Deep Compression's trained quantization (Han et al., ICLR 2016, sec. 3).

Each layer's surviving (non-pruned) weights are clustered into k = 2^b shared values (defaults: 8 bits
for conv, 5 bits for FC, as in the paper). Centroids start linearly spaced over [min W, max W] (the
initialisation Han et al. found best, fig. 4), then 1-D Lloyd iterations minimise the
within-cluster sum of squares (eq. 1). The layer then stores an index per weight and a small
codebook: `W = C[I] * M` (M: the pruning mask; pruned weights stay exactly zero).

Fine-tuning (eq. 3): dL/dC_k = sum over weights i with I_i = k of dL/dW_i. That is exactly the
gradient autograd computes through the gather `C[I]`, so the shared-weight layers train with the plain
`torchslim.train.fit`: only the centroids (and biases) are parameters.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from torchslim.errors import InvalidInputError
from torchslim.module_swap import replace_modules


def kmeans_1d(values: torch.Tensor, k: int, iters: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's algorithm in 1-D with linear initialisation; returns (centroids (k,), assignment)."""
    v = values.detach().double().flatten()
    if v.numel() == 0:
        return torch.zeros(k), torch.zeros(0, dtype=torch.long)
    lo, hi = float(v.min()), float(v.max())
    c = torch.linspace(lo, hi, k, dtype=torch.float64)
    for _ in range(iters):
        mids = (c[1:] + c[:-1]) / 2  # c stays sorted: nearest centroid = bucket between midpoints
        a = torch.bucketize(v, mids)
        sums = torch.zeros(k, dtype=torch.float64).index_add_(0, a, v)
        cnt = torch.zeros(k, dtype=torch.float64).index_add_(0, a, torch.ones_like(v))
        new = torch.where(cnt > 0, sums / cnt.clamp_min(1), c)  # empty clusters keep their place
        if torch.allclose(new, c):
            break
        c = new.sort().values
    a = torch.bucketize(v, (c[1:] + c[:-1]) / 2)
    return c.float(), a


class _SharedMixin:
    """W = centroids[index] * weight_mask; `centroids` is the only weight parameter."""

    _dense_cls: type[nn.Module]

    def _init_shared(self, bits: int) -> None:
        if not 1 <= int(bits) <= 16:
            raise InvalidInputError(f"k-means bits must be in [1, 16], got {bits}")
        self.bits = int(bits)
        shape = self.weight.shape
        del self.weight
        self.centroids = nn.Parameter(torch.zeros(2 ** self.bits))
        self.register_buffer("index", torch.zeros(shape, dtype=torch.uint8 if self.bits <= 8 else torch.int16))
        self.register_buffer("weight_mask", torch.ones(shape, dtype=torch.bool))

    @property
    def weight(self) -> torch.Tensor:
        return self.centroids[self.index.long()] * self.weight_mask

    def spec_args(self) -> dict:
        """Constructor arguments of the dense class, read from attributes (for torchslim.io)."""
        from torchslim.io.model_file import init_args

        args = init_args(self, self._dense_cls)
        args["bits"] = self.bits
        return args

    def profile_params(self) -> tuple[int, int]:
        b = self.bias.numel() if self.bias is not None else 0
        return self.index.numel() + b, int(self.weight_mask.sum()) + b

    def dense_module(self) -> nn.Module:
        """The plain layer with the decoded weights C[I] * M: what exporters write (runtimes have no
        codebook op, and the graph that decodes on the fly stores int64 indices, 3x the dense file)."""
        from torchslim.io.model_file import init_args

        new = self._dense_cls(**init_args(self, self._dense_cls))
        with torch.no_grad():
            new.weight.copy_(self.weight)
            if self.bias is not None:
                new.bias.copy_(self.bias)
        return new.to(self.centroids.device).train(self.training)

    @torch.no_grad()
    def set_from(self, w: torch.Tensor, mask: torch.Tensor | None = None, iters: int = 30) -> None:
        """Cluster the surviving weights of `w` (mask, default w != 0) into 2^bits shared values."""
        mask = (w != 0) if mask is None else mask.bool()
        c, a = kmeans_1d(w[mask], 2 ** self.bits, iters)
        members = torch.bincount(a, minlength=c.numel())
        self.centroids.copy_(torch.where(members > 0, c, torch.zeros_like(c)))  # empty slots: 0, never stored
        idx = torch.zeros(w.shape, dtype=torch.long)
        idx[mask] = a
        self.index.copy_(idx.to(self.index.dtype))
        self.weight_mask.copy_(mask)


class SharedWeightLinear(_SharedMixin, nn.Linear):
    """nn.Linear whose weights are indices into a codebook of 2^bits shared values."""

    _dense_cls = nn.Linear

    def __init__(self, in_features: int, out_features: int, bias: bool = True, bits: int = 5):
        nn.Linear.__init__(self, in_features, out_features, bias)
        self._init_shared(bits)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class SharedWeightConv2d(_SharedMixin, nn.Conv2d):
    """nn.Conv2d whose weights are indices into a codebook of 2^bits shared values."""

    _dense_cls = nn.Conv2d

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", bits: int = 8):
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                           padding_mode)
        self._init_shared(bits)

    def forward(self, x):
        return self._conv_forward(x, self.weight, self.bias)


SHARED = (SharedWeightLinear, SharedWeightConv2d)


@dataclass
class KMeansConfig:
    """k-means weight sharing: `bits` per layer kind ("conv", "fc") or per layer fqn (fqn wins);
    `epochs` of centroid fine-tuning with `fit` (0: cluster only). `filter_fn(module, fqn)` picks layers."""

    bits: dict = field(default_factory=lambda: {"conv": 8, "fc": 5})  # bits per kind (conv, fc) or layer: 2**bits values
    iters: int = 30  # k-means iterations
    epochs: int = 1  # epochs of centroid fine-tuning (0: cluster only)
    fit: object = None  # a torchslim.train.FitConfig (default: SGD lr 1e-3, no weight decay)
    filter_fn: object = None


def _bits_for(name: str, m: nn.Module, bits: dict) -> int | None:
    if name in bits:
        return bits[name]
    kind = "fc" if isinstance(m, nn.Linear) else "conv"
    return bits.get(kind)


def share_weights(model: nn.Module, bits: dict | None = None, *, filter_fn=None, iters: int = 30) -> dict[str, nn.Module]:
    """Replace Conv2d/Linear layers (in place) by shared-weight layers clustered with k-means.

    Pruning masks (torchslim.sparsity) are respected: masked layers keep their masks (pruned weights
    stay zero), plain layers treat exact zeros as pruned. Returns {fqn: shared layer}.

    Example:
        >>> share_weights(model, {"conv": 8, "fc": 5})
    """
    bits = dict(bits or {"conv": 8, "fc": 5})
    names = {n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    unknown = set(bits) - {"conv", "fc"} - names
    if unknown:
        raise InvalidInputError(f"bits names unknown layer(s) {sorted(unknown)}; layers: {', '.join(sorted(names))}")
    out = {}
    for name, m in list(model.named_modules()):
        if not isinstance(m, (nn.Conv2d, nn.Linear)) or isinstance(m, SHARED):
            continue
        if filter_fn is not None and not filter_fn(m, name):
            continue
        b = _bits_for(name, m, bits)
        if b is None:
            continue
        w = (m.masked_weight() if hasattr(m, "masked_weight") else m.weight).detach()
        mask = m.weight_mask if hasattr(m, "weight_mask") else (w != 0)
        if isinstance(m, nn.Linear):
            new = SharedWeightLinear(m.in_features, m.out_features, m.bias is not None, bits=b)
        else:
            new = SharedWeightConv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation,
                                     m.groups, m.bias is not None, m.padding_mode, bits=b)
        new.set_from(w, mask, iters)
        if m.bias is not None:
            new.bias.data.copy_(m.bias.detach())
        new.train(m.training)
        out[name] = new
    replace_modules(model, out)
    return out


def kmeans_quantize(model: nn.Module, config: KMeansConfig | None = None, *, train_loader=None, val_loader=None,
                    inplace: bool = False) -> nn.Module:
    """Share weights by k-means, then fine-tune the centroids (Deep Compression, trained quantization).

    Example:
        >>> q = kmeans_quantize(model, KMeansConfig(bits={"conv": 8, "fc": 5}, epochs=1), train_loader=data.train)
    """
    from dataclasses import replace

    from torchslim.train import FitConfig, fit

    cfg = config or KMeansConfig()
    model = model if inplace else copy.deepcopy(model)
    layers = share_weights(model, cfg.bits, filter_fn=cfg.filter_fn, iters=cfg.iters)
    if not layers:
        raise InvalidInputError(f"{type(model).__name__} has no Conv2d/Linear layer to quantize with k-means")
    if cfg.epochs > 0 and train_loader is not None:
        fc = cfg.fit or FitConfig(lr=1e-3, weight_decay=0.0, progress=False)
        fit(model, train_loader, val_loader=val_loader, config=replace(fc, epochs=cfg.epochs))
    return model.eval()


def parse_bits(text: str | None) -> dict | None:
    """'conv=8,fc=5' or 'conv=8,features.0=4' -> {"conv": 8, "fc": 5, ...}."""
    from torchslim.errors import InvalidInputError

    if not text:
        return None
    out = {}
    for part in text.split(","):
        k, _, v = part.partition("=")
        try:
            out[k.strip()] = int(v)
        except ValueError:
            raise InvalidInputError(f"--bits must look like conv=8,fc=5 (kind or layer = integer), got {text!r}") from None
    return out

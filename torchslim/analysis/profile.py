"""Per-layer analysis by forward hooks on leaf modules.

`macs` counts the multiply-accumulates of convolutions and fully connected layers: the GEMM work that
compression reduces and that published figures (ResNet-18 1.82 G, VGG-16 15.47 G) quote. BN, pooling,
activations and residual adds go to `other_ops` (one per output element, k*k per pooled output), so
they are shown without inflating the comparison. Matrix products done outside any leaf module
(attention in ViTs) are caught by torch's FLOP counter and shown as one "(functional)" row.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from torchslim.errors import InvalidInputError


@dataclass
class LayerProfile:
    name: str
    type: str
    input_shape: tuple
    output_shape: tuple
    params: int
    nonzero_params: int
    macs: int
    other_ops: int
    weight_bytes: int
    activation_bytes: int
    calls: int = 1

    @property
    def density(self) -> float:
        return self.nonzero_params / self.params if self.params else 1.0


@dataclass
class ModelProfile:
    layers: list[LayerProfile]
    input_shape: tuple
    params: int  # all parameters of the model, counted once each
    weight_bytes: int  # parameters and buffers
    functional_macs: int = 0  # matmuls outside leaf modules
    meta: dict = field(default_factory=dict)

    @property
    def macs(self) -> int:
        return sum(l.macs for l in self.layers) + self.functional_macs

    @property
    def other_ops(self) -> int:
        return sum(l.other_ops for l in self.layers)

    @property
    def nonzero_params(self) -> int:
        return sum(l.nonzero_params for l in self.layers)

    @property
    def activation_bytes(self) -> int:
        return sum(l.activation_bytes for l in self.layers)

    def totals(self) -> dict:
        return {
            "params": self.params, "nonzero_params": self.nonzero_params, "macs": self.macs,
            "other_ops": self.other_ops, "weight_bytes": self.weight_bytes,
            "activation_bytes": self.activation_bytes, "functional_macs": self.functional_macs,
        }

    def to_dict(self) -> dict:
        return {"input_shape": list(self.input_shape), "totals": self.totals(),
                "layers": [asdict(l) | {"density": l.density} for l in self.layers], "meta": self.meta}

    def table(self, title: str | None = None, max_rows: int | None = None):
        """A rich Table of the layers and the totals."""
        from rich.table import Table

        from torchslim.report.format import human

        t = Table(title=title, show_lines=False, header_style="bold")
        for col, just in [("layer", "left"), ("type", "left"), ("output", "left"), ("params", "right"),
                          ("density", "right"), ("MACs", "right"), ("weights", "right"),
                          ("activations", "right")]:
            t.add_column(col, justify=just)
        rows = self.layers if max_rows is None else self.layers[:max_rows]
        for l in rows:
            t.add_row(l.name, l.type, "x".join(map(str, l.output_shape[1:])), human(l.params),
                      f"{l.density:.0%}" if l.params else "", human(l.macs), human(l.weight_bytes, "B"),
                      human(l.activation_bytes, "B"))
        if max_rows is not None and len(self.layers) > max_rows:
            t.add_row(f"... {len(self.layers) - max_rows} more", "", "", "", "", "", "", "")
        if self.functional_macs:
            t.add_row("(functional)", "matmul", "", "", "", human(self.functional_macs), "", "")
        density = self.nonzero_params / self.params if self.params else 1.0
        t.add_row("[bold]total", "", "", f"[bold]{human(self.params)}", f"{density:.0%}",
                  f"[bold]{human(self.macs)}", human(self.weight_bytes, "B"), human(self.activation_bytes, "B"))
        return t


def _conv_macs(m: nn.modules.conv._ConvNd, out: torch.Tensor) -> int:
    # Each output element needs (C_in / groups) * prod(kernel) MACs; stride and dilation enter via the
    # output size only. (Transposed convs are counted per input element by _layer_cost.)
    return out.numel() // out.shape[0] * (m.in_channels // m.groups) * math.prod(m.kernel_size)


def _layer_cost(m: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> tuple[int, int]:
    """(macs, other_ops) of one call, per image."""
    per = lambda t: t.numel() // t.shape[0] if t.ndim else t.numel()  # noqa: E731
    if hasattr(m, "profile_macs"):  # layers that run their own GEMM (sparse / lowered convs) say what it costs
        return int(m.profile_macs(inp, out)), 0
    if isinstance(m, nn.modules.conv._ConvTransposeMixin):
        return per(inp) * (m.out_channels // m.groups) * math.prod(m.kernel_size), 0
    if isinstance(m, nn.modules.conv._ConvNd):
        return _conv_macs(m, out), (per(out) if m.bias is not None else 0)
    if isinstance(m, nn.Linear):
        return per(out) * m.in_features, (per(out) if m.bias is not None else 0)
    if isinstance(m, nn.MultiheadAttention):
        # q, k, v and output projections (4 E^2 per token) plus QK^T and AV (2 L E per token); the fused
        # inference kernel hides these from torch's FLOP counter.
        L, E = (inp.shape[1] if m.batch_first else inp.shape[0]), m.embed_dim
        return L * 4 * E * E + 2 * L * L * E, 0
    if isinstance(m, nn.Bilinear):
        return per(out) * m.in1_features * m.in2_features, 0
    if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm,
                      nn.modules.instancenorm._InstanceNorm)):
        return 0, 2 * per(out)
    if isinstance(m, (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)):
        k = m.kernel_size if isinstance(m.kernel_size, int) else math.prod(m.kernel_size)
        k = k ** (out.ndim - 2) if isinstance(m.kernel_size, int) else k
        return 0, per(out) * k
    if isinstance(m, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
                      nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)):
        return 0, per(inp)
    return 0, per(out) if isinstance(out, torch.Tensor) and out.ndim else 0


def _first_tensor(x):
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, (list, tuple)):
        for v in x:
            t = _first_tensor(v)
            if t is not None:
                return t
    if isinstance(x, dict):
        return _first_tensor(list(x.values()))
    return None


def _is_leaf(m: nn.Module) -> bool:
    return len(list(m.children())) == 0 or any(True for _ in m.parameters(recurse=False))


def profile(model: nn.Module, input_size: tuple | None = None, *, example_input: torch.Tensor | None = None,
            batch_size: int = 1) -> ModelProfile:
    """Profile `model` on one forward pass.

    Args:
        model: any module taking one image batch.
        input_size: (C, H, W); or give `example_input` (a batch) instead.
        batch_size: batch for the pass made from `input_size`; costs are reported per image.

    Example:
        >>> p = profile(torchvision.models.resnet18(), (3, 224, 224))
        >>> round(p.macs / 1e9, 2)
        1.82
    """
    if example_input is None:
        if input_size is None or len(input_size) != 3 or not all(int(s) > 0 for s in input_size):
            raise InvalidInputError(f"input_size must be (C, H, W) with positive sizes, got {input_size!r}")
        example_input = torch.randn(batch_size, *map(int, input_size))
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    example_input = example_input.to(device)
    records: dict[str, LayerProfile] = {}
    order: list[str] = []
    hooks = []

    def hook(name):
        def fn(m, args, out):
            inp, o = _first_tensor(args), _first_tensor(out)
            if o is None:
                return
            macs, other = _layer_cost(m, inp if inp is not None else o, o)
            if name in records:
                r = records[name]
                r.calls += 1
                r.macs += macs
                r.other_ops += other
                r.activation_bytes += o.numel() // max(o.shape[0], 1) * o.element_size()
                return
            own = list(m.parameters(recurse=False))
            bufs = list(m.buffers(recurse=False))
            records[name] = LayerProfile(
                name=name, type=type(m).__name__,
                input_shape=tuple(inp.shape) if inp is not None else (),
                output_shape=tuple(o.shape),
                params=sum(p.numel() for p in own),
                nonzero_params=sum(_nonzero(m, n, p) for n, p in m.named_parameters(recurse=False)),
                macs=macs, other_ops=other,
                weight_bytes=sum(t.numel() * t.element_size() for t in own + bufs),
                activation_bytes=o.numel() // max(o.shape[0], 1) * o.element_size(),
            )
            order.append(name)
            if hasattr(m, "profile_params"):  # weights stored sparse (torchslim.sparsity): dense shape, stored nonzeros
                records[name].params, records[name].nonzero_params = m.profile_params()

        return fn

    for name, m in model.named_modules():
        if name and _is_leaf(m) or (not name and _is_leaf(m) and not list(model.children())):
            hooks.append(m.register_forward_hook(hook(name or type(m).__name__)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(example_input)
    except Exception as e:
        raise InvalidInputError(
            f"{type(model).__name__} failed on an input of shape {tuple(example_input.shape)}: {e}"
        ) from e
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    n = example_input.shape[0]
    gemm_total = sum(counter.get_flop_counts().get("Global", {}).values()) // 2 // n
    layers = [records[k] for k in order]
    attributed = sum(l.macs for l in layers)
    functional = max(0, gemm_total - attributed) if gemm_total > attributed * 1.001 else 0
    all_params = {id(p): p for p in model.parameters()}
    all_bufs = {id(b): b for b in model.buffers()}
    return ModelProfile(
        layers=layers, input_shape=tuple(example_input.shape[1:]),
        params=sum(p.numel() for p in all_params.values()) + sum(  # weights stored sparse count as dense
            m.profile_params()[0] - sum(p.numel() for p in m.parameters(recurse=False))
            for m in model.modules() if hasattr(m, "profile_params")),
        weight_bytes=sum(t.numel() * t.element_size() for t in list(all_params.values()) + list(all_bufs.values())),
        functional_macs=functional,
    )


def _nonzero(m: nn.Module, name: str, p: torch.Tensor) -> int:
    """Nonzeros of a weight tensor; vectors (biases, BN affine) count as dense: sparsity is about weights."""
    if p.ndim <= 1:
        return p.numel()
    return int(torch.count_nonzero(_effective(m, name, p)))


def _effective(m: nn.Module, name: str, p: torch.Tensor) -> torch.Tensor:
    """The weight the layer really uses: masked models (torch.nn.utils.prune or torchslim masks) expose it."""
    if name.endswith("_orig") and hasattr(m, name[: -len("_orig")]):
        return getattr(m, name[: -len("_orig")])
    mask = getattr(m, f"{name}_mask", None)
    return p * mask if isinstance(mask, torch.Tensor) and mask.shape == p.shape else p

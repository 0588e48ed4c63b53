"""Trace a model once and label every tensor element with the channel it belongs to.

The idea (our own take on the dependency graph of Fang et al., "DepGraph", CVPR 2023, and of
Torch-Pruning): run the torch.fx graph of the model on one example and, next to every real tensor,
carry a *label tensor* of the same shape whose entries name the channel each element comes from.

* A producer (conv / linear output dim) creates fresh labels, one per output channel.
* Shape ops (view, permute, flatten, cat, chunk, getitem, ...) are simply run on the label tensor,
  so concatenation offsets, splits, channel shuffles and flatten -> linear (a channel becomes H*W
  features) need no rule of their own.
* Element-wise ops with several tensor inputs (residual add, SE multiply) *join* the labels found
  at the same position: those channels must be pruned together.
* Anything whose channel arithmetic we cannot follow (an unknown op, a literal reshape size, an
  output) joins its labels with label 0, PINNED: such channels are never removed.

A model torch.fx cannot trace (Python control flow on tensor values or shapes) is traced concretely
instead (concrete.py: the graph of the forward pass the example input took), with the same labelling.

Joined labels form connected components (`ChannelGraph` in groups.py); each component is one
prunable unit, and pruning keeps, at every tensor, the positions whose unit survives, in order.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
import torch.fx as fx
from torch import nn

from torchslim.errors import UnsupportedModelError
from torchslim.graph.concrete import CAVEAT, concrete_trace

PINNED = 0
SPLIT_SIZE = "_split:"  # virtual attribute of a "size" use: `_split:<attr>.<part>` counts part <part> of <attr>

# Functions/methods that only move elements around: run them on the label tensor.
_SHAPE_OPS = {
    "view", "reshape", "flatten", "permute", "transpose", "t", "unsqueeze", "squeeze", "expand",
    "expand_as", "contiguous", "getitem", "chunk", "split", "tensor_split", "cat", "concat", "concatenate",
    "stack", "unbind", "movedim", "unflatten", "repeat", "tile", "swapaxes", "clone", "detach", "to",
    "type_as", "float", "half", "double", "view_as", "reshape_as", "roll",
}
# Ops whose output has one value per (batch, channel) of the input, spatial size changed.
_CHANNELWISE_OPS = {
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool1d",
    "adaptive_max_pool2d", "adaptive_max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d", "max_pool1d",
    "max_pool2d", "max_pool3d", "interpolate", "upsample", "lp_pool2d", "pixel_unshuffle_",
}
_REDUCE_OPS = {"mean", "sum", "amax", "amin", "max", "min", "std", "var", "logsumexp", "norm", "prod"}
ACTIVATIONS = {"relu", "relu_", "relu6", "hardtanh", "silu", "hardswish", "gelu", "leaky_relu", "elu",
               "mish", "ReLU", "ReLU6", "SiLU", "Hardswish", "GELU", "LeakyReLU", "ELU", "Mish", "Hardtanh"}
_MODULE_SHAPE_OPS = {nn.Flatten: "flatten", nn.Unflatten: "unflatten"}


@dataclass
class ParamUse:
    """One dimension of one parameter (or a virtual attribute, name starting with "_") whose indices
    are channels: `labels[i]` names the channel of index i along `dim`.

    kind: "out" (a conv/linear output filter), "in" (a consumer's input channel), "norm" (a per-channel
    affine/statistic), "free" (any other parameter, labelled per element: `dim` is -1 and `labels`
    has the parameter's shape), "size" (one part of a list attribute of channel counts, see
    `_split_sizes_follow`).
    """

    module: str
    name: str
    dim: int
    labels: torch.Tensor
    kind: str


@dataclass
class TraceResult:
    gm: fx.GraphModule
    num_labels: int
    edges: torch.Tensor  # (2, E) label pairs that must be pruned together
    uses: list[ParamUse]
    macs_per_weight: dict[str, float]  # module -> MACs per weight element (spatial positions x calls)
    module_kind: dict[str, str]  # module -> "conv", "conv_dw", "conv_group", "linear", "norm", "pad_shortcut"
    node_channels: dict[str, torch.Tensor]  # fx node name -> labels along dim 1 (activation sites)
    node_kind: dict[str, str]  # fx node name -> "act" (activation output) | "out" (producer output)
    notes: list[str] = field(default_factory=list)  # why some channels are pinned
    tracer: str = "symbolic"  # "symbolic" (torch.fx) or "concrete" (the forward pass of the example, concrete.py)
    caveat: str | None = None  # what the tracer used cannot promise


class _Tracer(fx.Tracer):
    def __init__(self, leaf_types: tuple[type, ...]):
        super().__init__()
        self.leaf_types = leaf_types

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, self.leaf_types):
            return True
        return super().is_leaf_module(m, qualname)


def _leaf_types() -> tuple[type, ...]:
    from torchslim.models.cifar_resnet import ChannelPadShortcut

    return (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm,
            nn.MultiheadAttention, ChannelPadShortcut)


def symbolic_trace(model: nn.Module) -> fx.GraphModule:
    """torch.fx trace with norm/conv subclasses kept as leaves; failures name the module and op."""
    tracer = _Tracer(_leaf_types())
    try:
        graph = tracer.trace(model)
    except Exception as e:  # fx raises many types; name what failed
        where = ""
        for frame in reversed(getattr(e, "__traceback__", None) and _frames(e) or []):
            where = frame
            break
        raise UnsupportedModelError(
            f"cannot trace {type(model).__name__} with torch.fx{where}: {type(e).__name__}: {e}. "
            "Data-dependent control flow is not supported; make the module a leaf or rewrite it") from None
    return fx.GraphModule(tracer.root, graph, type(model).__name__)


def _frames(e: BaseException) -> list[str]:
    import traceback

    out = []
    for fs in traceback.extract_tb(e.__traceback__):
        if "torch/fx" not in fs.filename:
            out.append(f" (in {fs.name}, {fs.filename.rsplit('/', 1)[-1]}:{fs.lineno})")
    return out


def _tree_map(x, fn):
    if isinstance(x, torch.Size):
        return fn(x)
    if isinstance(x, (list, tuple)):
        return type(x)(_tree_map(v, fn) for v in x) if not hasattr(x, "_fields") else type(x)(
            *[_tree_map(v, fn) for v in x])
    if isinstance(x, dict):
        return {k: _tree_map(v, fn) for k, v in x.items()}
    if isinstance(x, slice):  # x[:, :n] with n a size read from a tensor
        return slice(_tree_map(x.start, fn), _tree_map(x.stop, fn), _tree_map(x.step, fn))
    return fn(x)


def _tensors(x) -> list:
    out: list = []
    _tree_map(x, lambda v: out.append(v) if isinstance(v, torch.Tensor) else None)
    return out


def _target_name(node: fx.Node) -> str:
    if node.op == "call_method":
        return node.target
    t = node.target
    if t is operator.getitem:
        return "getitem"
    return getattr(t, "__name__", str(t))


class _Labeler:
    """Runs the graph on real values and label tensors side by side."""

    def __init__(self, gm: fx.GraphModule, model: nn.Module | None = None):
        self.gm = gm
        self.model = model  # the traced model: attributes that hold channel counts (split sizes)
        self.modules = dict(gm.named_modules())
        self.next = 1
        self.edges: list[torch.Tensor] = []
        self.uses: dict[tuple, ParamUse] = {}
        self.macs_per_weight: dict[str, float] = {}
        self.module_kind: dict[str, str] = {}
        self.node_channels: dict[str, torch.Tensor] = {}
        self.node_kind: dict[str, str] = {}
        self.notes: list[str] = []
        # fx node -> where a size value came from: ("size", labels) for x.shape / x.size(),
        # ("dim", labels, k) for x.shape[k] / x.size(k)
        self.sizes: dict[str, tuple] = {}

    # -- labels ------------------------------------------------------------------------------
    def fresh(self, n: int) -> torch.Tensor:
        t = torch.arange(self.next, self.next + n, dtype=torch.long)
        self.next += n
        return t

    def join(self, a: torch.Tensor, b: torch.Tensor) -> None:
        a, b = torch.broadcast_tensors(a, b)
        # dims along which both sides are expanded (stride 0) repeat the same pairs: compare one slice
        one = tuple(0 if a.stride(d) == 0 and b.stride(d) == 0 else slice(None) for d in range(a.dim()))
        a, b = a[one], b[one]
        m = a != b
        if m.any():
            key = torch.unique(a[m] * (1 << 31) + b[m])  # 1-D unique is much faster than unique(dim=1)
            self.edges.append(torch.stack([key >> 31, key & ((1 << 31) - 1)]))

    def pin(self, lab: torch.Tensor, why: str) -> None:
        u = torch.unique(lab)
        u = u[u != PINNED]
        if len(u):
            self.edges.append(torch.stack([u, torch.zeros_like(u)]))
            self.notes.append(why)

    def along(self, lab: torch.Tensor, dim: int) -> torch.Tensor:
        """Labels along `dim`, joining every element of a slice (a channel is pruned as a whole)."""
        if all(lab.stride(d) == 0 or lab.shape[d] == 1 for d in range(lab.dim()) if d != dim):
            # an expanded per-channel vector (most activations): every slice holds one label already
            return lab[tuple(slice(None) if d == dim else 0 for d in range(lab.dim()))].clone()
        flat = lab.movedim(dim, 0).reshape(lab.shape[dim], -1)
        rep = flat[:, 0]
        if flat.shape[1] > 1:
            self.join(rep[:, None], flat)
        return rep.clone()

    @staticmethod
    def expand(ch: torch.Tensor, shape, dim: int = 1) -> torch.Tensor:
        view = [1] * len(shape)
        view[dim] = len(ch)
        return ch.view(view).expand(shape)

    def use(self, module: str, name: str, dim: int, labels: torch.Tensor, kind: str) -> None:
        key = (module, name, dim)
        if key in self.uses:  # module called twice: its weights serve both calls
            self.join(self.uses[key].labels, labels)
        else:
            self.uses[key] = ParamUse(module, name, dim, labels.clone(), kind)

    # -- running ------------------------------------------------------------------------------
    def run(self, example: torch.Tensor):
        env: dict[str, tuple] = {}

        def val(a):
            return _tree_map(a, lambda n: env[n.name][0] if isinstance(n, fx.Node) else n)

        def lab(a):  # label tensors where the value is a tensor, the value itself otherwise (sizes)
            return _tree_map(a, lambda n: (env[n.name][1] if env[n.name][1] is not None else env[n.name][0])
                             if isinstance(n, fx.Node) else n)

        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                if node.name in env:
                    continue
                v = example if not env else None
                env[node.name] = (v, torch.zeros(v.shape, dtype=torch.long) if isinstance(v, torch.Tensor) else None)
                continue
            if node.op == "output":
                for t in _tensors(lab(node.args)):
                    self.pin(t, "model output")
                break
            args, kwargs = val(node.args), val(node.kwargs)
            try:
                if node.op == "get_attr":
                    v = _fetch_attr(self.gm, node.target)
                    out_lab = self.get_attr_labels(node, v)
                elif node.op == "call_module":
                    m = self.modules[node.target]
                    v = m(*args, **kwargs)
                    out_lab = self.call_module(node, m, args, lab(node.args), v)
                else:
                    fn = getattr(args[0], node.target) if node.op == "call_method" else node.target
                    a = args[1:] if node.op == "call_method" else args
                    v = fn(*a, **kwargs)
                    out_lab = self.call_function(node, args, kwargs, lab(node.args), lab(node.kwargs), v)
            except UnsupportedModelError:
                raise
            except Exception as e:
                where = f"module {node.target!r} ({type(self.modules[node.target]).__name__})" \
                    if node.op == "call_module" else f"op {_target_name(node)!r} (node {node.name})"
                raise UnsupportedModelError(f"channel tracing failed at {where}: {type(e).__name__}: {e}") from None
            env[node.name] = (v, out_lab)
        return env

    def get_attr_labels(self, node, v):
        if not isinstance(v, torch.Tensor):
            return None
        owner, _, name = node.target.rpartition(".")
        if not v.is_floating_point() or v.dim() == 0:
            return torch.zeros(v.shape, dtype=torch.long)
        labels = self.fresh(v.numel()).view(v.shape)
        self.use(owner, name, -1, labels, "free")
        return labels

    # -- modules ------------------------------------------------------------------------------
    def call_module(self, node, m, args, arg_labs, out):
        from torchslim.models.cifar_resnet import ChannelPadShortcut

        fqn = node.target
        x, xl = (args[0], arg_labs[0]) if args else (None, None)
        if isinstance(m, nn.modules.conv._ConvNd) and not m.transposed and isinstance(x, torch.Tensor):
            return self._conv(fqn, m, xl, out, node.name)
        if isinstance(m, nn.Linear):
            return self._linear(fqn, m, xl, out)
        if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)):
            ch = self.along(xl, 1)
            for name in ("weight", "bias", "running_mean", "running_var"):
                if getattr(m, name, None) is not None:
                    self.use(fqn, name, 0, ch, "norm")
            self.module_kind[fqn] = "norm"
            return xl
        if isinstance(m, nn.LayerNorm):
            return self._layernorm(fqn, m, xl, out)
        if isinstance(m, nn.PReLU) and m.num_parameters > 1:
            ch = self.along(xl, 1)
            self.use(fqn, "weight", 0, ch, "norm")
            self.module_kind[fqn] = "prelu"
            return xl
        if isinstance(m, ChannelPadShortcut):
            return self._pad_shortcut(fqn, m, xl, out)
        if type(m) in _MODULE_SHAPE_OPS:
            if isinstance(m, nn.Flatten):
                return torch.flatten(xl, m.start_dim, m.end_dim)
            return xl.unflatten(m.dim, m.unflattened_size)
        has_params = any(True for _ in m.parameters(recurse=False))
        if not has_params and isinstance(out, torch.Tensor) and isinstance(x, torch.Tensor):
            name = type(m).__name__
            if out.shape == x.shape and len(_tensors(args)) == 1:
                if name in ACTIVATIONS:
                    self._activation_site(node.name, xl)
                return xl
            if out.dim() == x.dim() and out.dim() >= 3 and out.shape[:2] == x.shape[:2]:
                return self.expand(self.along(xl, 1), out.shape)  # pooling, upsampling
        for t in _tensors(arg_labs):
            self.pin(t, f"module {fqn!r} ({type(m).__name__}) is not understood: its channels are kept")
        return _pinned_like(out)

    def _conv(self, fqn, m, xl, out, node_name):
        g = m.groups
        cin = self.along(xl, 1)
        in_pg, out_pg = m.in_channels // g, m.out_channels // g
        self.macs_per_weight[fqn] = self.macs_per_weight.get(fqn, 0) + out[0].numel() / out.shape[1]
        if g == 1:
            outl = self.fresh(m.out_channels)
            self.use(fqn, "weight", 1, cin, "in")
            self.module_kind[fqn] = "conv"
        elif in_pg == 1 and out_pg == 1:  # depthwise: channel c in -> channel c out
            outl = cin.clone()
            self.module_kind[fqn] = "conv_dw"
        elif in_pg == out_pg:  # grouped: keep the group count, prune the same positions in each group
            per = cin.view(g, in_pg)
            self.join(per[:1], per)
            outl = cin.clone()
            self.use(fqn, "weight", 1, per[0], "in")
            self.module_kind[fqn] = "conv_group"
        else:
            self.pin(cin, f"grouped conv {fqn!r} with {in_pg} inputs and {out_pg} outputs per group is kept")
            outl = torch.zeros(m.out_channels, dtype=torch.long)
            self.module_kind[fqn] = "conv_fixed"
        self.use(fqn, "weight", 0, outl, "out")
        if m.bias is not None:
            self.use(fqn, "bias", 0, outl, "out")
        for name, p in m.named_parameters(recurse=False):  # a conv subclass's per-filter tensor (timm's
            if name not in ("weight", "bias") and p.dim() and p.shape[0] == p.numel() == m.out_channels:
                self.use(fqn, name, 0, outl, "norm")  # ScaledStdConv2d gain), shaped (out, 1, 1, 1)
        ol = self.expand(outl, out.shape)
        self.node_channels[node_name] = outl
        self.node_kind.setdefault(node_name, "out")
        return ol

    def _linear(self, fqn, m, xl, out):
        cin = self.along(xl, -1)
        outl = self.fresh(m.out_features)
        self.use(fqn, "weight", 1, cin, "in")
        self.use(fqn, "weight", 0, outl, "out")
        if m.bias is not None:
            self.use(fqn, "bias", 0, outl, "out")
        self.module_kind[fqn] = "linear"
        self.macs_per_weight[fqn] = self.macs_per_weight.get(fqn, 0) + out[0].numel() / out.shape[-1]
        return self.expand(outl, out.shape, dim=out.dim() - 1)

    def _layernorm(self, fqn, m, xl, out):
        shape = tuple(m.normalized_shape)
        if len(shape) != 1 or not m.elementwise_affine:
            self.pin(xl, f"LayerNorm {fqn!r} over {shape} is kept")
            return xl
        # torchvision's LayerNorm2d normalises dim 1 of an NCHW tensor; nn.LayerNorm the last dim
        dim = xl.dim() - 1 if type(m) is nn.LayerNorm or xl.shape[1] != shape[0] else 1
        ch = self.along(xl, dim)
        for name in ("weight", "bias"):
            if getattr(m, name, None) is not None:
                self.use(fqn, name, 0, ch, "norm")
        self.module_kind[fqn] = "layernorm"
        return xl

    def _pad_shortcut(self, fqn, m, xl, out):
        cin = self.along(xl, 1)
        outl = self.fresh(m.out_channels)  # zero positions: free to drop together with their partners
        outl[m.index] = cin
        self.use(fqn, "_in", 0, cin, "norm")
        self.use(fqn, "_out", 0, outl, "norm")
        self.module_kind[fqn] = "pad_shortcut"
        return self.expand(outl, out.shape)

    # -- functions ----------------------------------------------------------------------------
    def call_function(self, node, args, kwargs, arg_labs, kw_labs, out):
        name = _target_name(node)
        tin = _tensors(args) + _tensors(kwargs)
        tlab = _tensors(arg_labs) + _tensors(kw_labs)
        if not tin:
            self._record_size(node, name, args, out)
            # size arithmetic, or a tensor made from literal sizes (torch.arange, torch.zeros(...)): fixed
            return _pinned_like(out) if isinstance(out, torch.Tensor) else None
        if name in ("size", "dim", "numel", "__len__") or not _tensors(out) and not isinstance(out, torch.Tensor):
            self._record_size(node, name, args, out, tlab[0] if tlab else None)
            return None
        if name == "layer_norm":
            self.pin(tlab[0], f"functional layer_norm at {node.name} has a literal shape: its channels are kept")
            return _pinned_like(out)
        if name in _SHAPE_OPS:
            return self._shape_op(node, name, args, arg_labs, kw_labs, out)
        if name in _CHANNELWISE_OPS and isinstance(out, torch.Tensor) and out.dim() == tin[0].dim() \
                and out.shape[:2] == tin[0].shape[:2]:
            return self.expand(self.along(tlab[0], 1), out.shape)
        if name == "pad":
            return self._pad(node, tlab[0], tin[0], args, kwargs, out)
        if name in _REDUCE_OPS and isinstance(out, torch.Tensor):
            return self._reduce(node, name, tin[0], tlab[0], args, kwargs, out)
        if isinstance(out, torch.Tensor) and all(_broadcasts(t.shape, out.shape) for t in tin):
            full = [l for t, l in zip(tin, tlab) if t.shape == out.shape]
            base = full[0] if full else torch.broadcast_to(tlab[0], out.shape)
            for other in tlab:
                if other is not base and not self._broadcast_over_channels(other, base):
                    self.join(base, other)
            if name in ACTIVATIONS:
                self._activation_site(node.name, base)
            return base
        for t in tlab:
            self.pin(t, f"op {name!r} at {node.name} is not understood: its channels are kept")
        return _pinned_like(out)

    def _broadcast_over_channels(self, other: torch.Tensor, base: torch.Tensor) -> bool:
        """`other` has size 1 along every channel dim of `base` (a scalar scale, a spatial attention
        map): broadcast over the channels, it neither fixes nor couples any of them."""
        if other.dim() > base.dim():
            return False
        shift = base.dim() - other.dim()
        var = self._varying(base)  # none (e.g. a pinned residual stream): join, which pins `other`
        return bool(var) and all(d < shift or other.shape[d - shift] == 1 for d in var)

    def _shape_op(self, node, name, args, arg_labs, kw_labs, out):
        fn = getattr(arg_labs[0], name) if node.op == "call_method" else node.target
        a = arg_labs[1:] if node.op == "call_method" else arg_labs
        if name == "getitem" and node.op != "call_method":  # index by the index's values, not its labels
            a = (arg_labs[0], *args[1:])
        if name in ("to", "float", "half", "double", "type_as"):
            return arg_labs[0]
        res = fn(*a, **kw_labs)
        src = _tensors(arg_labs)
        if name in ("view", "reshape", "expand"):
            self._check_sizes(node, res)
        if name in ("view", "reshape", "unflatten"):
            self._check_reshape(node, name, src[0], res)
        elif name == "getitem" and isinstance(res, torch.Tensor) and isinstance(arg_labs[0], torch.Tensor):
            if not torch.equal(torch.unique(res), torch.unique(arg_labs[0])):
                self.pin(arg_labs[0], f"indexing at {node.name} selects channels by position: they are kept")
        elif name in ("chunk", "split", "tensor_split", "unbind"):
            self._check_split(node, name, src[0], res)
        elif name == "roll":
            self.pin(src[0], f"roll at {node.name} is kept")
        return res

    def _activation_site(self, node_name: str, lab: torch.Tensor) -> None:
        """Record an activation output for data-driven criteria, which read channels along dim 1.
        Channels-last activations ((B, N, C) tokens, (B, H, W, C) in ConvNeXt/Swin MLPs) are not
        recorded: `along(lab, 1)` would join all their channels into one unit."""
        if lab.dim() < 2:
            return
        var = self._varying(lab)
        if var and 1 not in var:
            return
        self.node_kind[node_name] = "act"
        self.node_channels[node_name] = self.along(lab, 1)

    def _record_size(self, node, name, args, out, lab=None):
        """Remember which tensor dim a size value was read from (x.shape, x.size(k), x.shape[k])."""
        if name == "size" and lab is not None:
            dim = node.kwargs.get("dim", args[1] if len(args) > 1 else None)
            self.sizes[node.name] = ("size", lab) if dim is None else ("dim", lab, dim % lab.dim())
        elif name == "getattr" and lab is not None and len(args) > 1 and args[1] == "shape":
            self.sizes[node.name] = ("size", lab)
        elif name == "getitem" and isinstance(node.args[0], fx.Node) and isinstance(node.args[1], int):
            src = self.sizes.get(node.args[0].name)
            if src is not None and src[0] == "size":
                self.sizes[node.name] = ("dim", src[1], node.args[1] % src[1].dim())

    def _check_sizes(self, node, res):
        """A view/reshape/expand whose size along dim d is read from another tensor's dim k
        (`out.reshape(B, N, C)` with `B, N, C = x.shape`) keeps working after pruning only if both
        dims lose the same number of channels: unless the two carry the same channels, join them
        position by position (a pinned side pins the other)."""
        shape_args = list(node.args[1:])
        if len(shape_args) == 1 and isinstance(shape_args[0], (list, tuple)):
            shape_args = list(shape_args[0])
        if len(shape_args) != res.dim():
            return
        for d, a in enumerate(shape_args):
            src = self.sizes.get(a.name) if isinstance(a, fx.Node) else None
            if src is None or src[0] != "dim" or src[1].shape[src[2]] != res.shape[d]:
                continue
            lab, k = src[1], src[2]
            theirs_vary, mine_vary = k in self._varying(lab), d in self._varying(res)
            if not theirs_vary and not mine_vary:
                continue  # a size no pruning changes (batch, spatial, pinned channels on both sides)
            if theirs_vary != mine_vary:  # one side can shrink, the other cannot: keep both
                self.pin(lab if theirs_vary else res, f"{node.target} at {node.name} takes dim {d} from the "
                                                      f"size of another tensor: channels kept")
                continue
            theirs = lab.movedim(k, 0).reshape(lab.shape[k], -1)
            mine = res.movedim(d, 0).reshape(res.shape[d], -1)
            if (theirs == theirs[:, :1]).all() and (mine == mine[:, :1]).all() and \
                    torch.equal(torch.unique(mine), torch.unique(theirs)):
                continue  # the same channels (e.g. reordered by a channel shuffle): counts match
            self.join(res, self.expand(self.along(lab, k), res.shape, d))

    def _varying(self, lab: torch.Tensor) -> list[int]:
        """Dims along which labels differ (a stride-0 dim is an expand: constant by construction)."""
        return [d for d in range(lab.dim()) if lab.shape[d] > 1 and lab.stride(d) != 0
                and bool((lab != lab.narrow(d, 0, 1)).any())]

    def _check_reshape(self, node, name, src, res):
        var = self._varying(res)
        if not var:
            return
        shape_args = list(node.args[1:])
        if name == "unflatten":
            start = shape_args[0] % res.dim() if isinstance(shape_args[0], int) else None
            sizes = list(shape_args[1])
            literal = {start + i: isinstance(s, int) and s != -1 for i, s in enumerate(sizes)} if start is not None else {}
        else:
            if len(shape_args) == 1 and isinstance(shape_args[0], (list, tuple)):
                shape_args = list(shape_args[0])
            literal = {i: isinstance(s, int) and s != -1 for i, s in enumerate(shape_args)}
        lit = [d for d in var if literal.get(d, False)]
        free = [d for d in var if not literal.get(d, False)]
        if not free:
            self.pin(src, f"{name} at {node.name} has a literal channel size {tuple(res.shape)}: channels kept")
            return
        # Keep every dim but the innermost free one whole: prune the same positions in each slice
        # (channel shuffle: the same channel of every group).
        for d in lit + free[:-1]:
            self.join(res.narrow(d, 0, 1), res)

    def _check_split(self, node, name, src, res):
        parts = list(res)
        dim = node.kwargs.get("dim", node.args[2] if len(node.args) > 2 else 0)
        if name == "unbind":
            dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
        dim = dim % src.dim()
        if dim not in self._varying(src):
            return
        sizes = {p.shape[dim] for p in parts}
        size_arg = node.args[1] if len(node.args) > 1 else None
        literal = name in ("split", "tensor_split") and (
            isinstance(size_arg, (list, tuple)) or isinstance(size_arg, int))
        if literal and self._split_sizes_follow(node, size_arg, dim, parts):
            return
        if len(sizes) != 1 or literal:
            self.pin(src, f"{name} at {node.name} splits channels at fixed positions: they are kept")
            return
        for p in parts[1:]:
            self.join(parts[0], p)

    def _split_sizes_follow(self, node, sizes, dim, parts) -> bool:
        """`torch.split(x, self.splits, 1)` (timm's MixedConv2d: one kernel size per channel part):
        when the sizes are a list attribute of the module that splits, every part is pruned on its
        own and surgery rewrites the attribute to the new part sizes ("size" uses, one per part)."""
        stack = node.meta.get("nn_module_stack") or {}
        if self.model is None or not stack or not isinstance(sizes, (list, tuple)):
            return False
        owner = list(stack.values())[-1][0]
        try:
            m = self.model.get_submodule(owner)
        except AttributeError:
            return False
        attr = next((k for k, v in vars(m).items() if not k.startswith("_") and isinstance(v, (list, tuple))
                     and list(v) == list(sizes)), None)
        if attr is None:
            return False
        for i, p in enumerate(parts):
            self.use(owner, f"{SPLIT_SIZE}{attr}.{i}", 0, self.along(p, dim), "size")
        return True

    def _pad(self, node, lab, x, args, kwargs, out):
        pads = args[1] if len(args) > 1 else kwargs["pad"]
        res = lab
        for i in range(len(pads) // 2):
            d = lab.dim() - 1 - i
            if pads[2 * i] == 0 and pads[2 * i + 1] == 0:
                continue
            if d in self._varying(lab):
                self.pin(lab, f"pad at {node.name} pads the channel dim by a fixed amount: channels kept")
                return _pinned_like(out)
            res = res.narrow(d, 0, 1).expand(*res.shape[:d], out.shape[d], *res.shape[d + 1:])
        return res.expand(out.shape)

    def _reduce(self, node, name, x, lab, args, kwargs, out):
        dims = kwargs.get("dim", args[1] if len(args) > 1 and not isinstance(args[1], bool) else None)
        if dims is None or (name in ("max", "min") and isinstance(out, tuple)):
            self.pin(lab, f"{name} at {node.name} reduces over channels: they are kept")
            return _pinned_like(out)
        dims = [dims] if isinstance(dims, int) else list(dims)
        dims = [d % lab.dim() for d in dims]
        var = self._varying(lab)
        keep = kwargs.get("keepdim", args[2] if len(args) > 2 and isinstance(args[2], bool) else False)
        if any(d in var for d in dims) and all(d in dims for d in var):
            self.pin(lab, f"{name} at {node.name} reduces over channels: they are kept")
            return _pinned_like(out)
        if any(d in var for d in dims):  # channels stay on another dim: summing branches (SK / split
            first = lab  # attention sums (B, radix, C, H, W) over radix) joins them like an add
            for d in dims:
                first = first.narrow(d, 0, 1)
            self.join(first, lab)
            res = first if keep else first.squeeze(dims)
            return res.expand(out.shape) if res.shape != out.shape else res
        res = lab.amax(dim=dims, keepdim=bool(keep))
        return res.expand(out.shape) if res.shape != out.shape else res


def _broadcasts(a, b) -> bool:
    try:
        return tuple(torch.broadcast_shapes(a, b)) == tuple(b)
    except RuntimeError:
        return False


def _pinned_like(out):
    return _tree_map(out, lambda v: torch.zeros(v.shape, dtype=torch.long) if isinstance(v, torch.Tensor) else None)


def _fetch_attr(gm, target: str):
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def trace(model: nn.Module, example_input: torch.Tensor) -> TraceResult:
    """Trace `model` (torch.fx) and label its channels on `example_input` (only the first sample is used).

    Example:
        >>> tr = trace(torchvision.models.resnet18(), torch.randn(1, 3, 64, 64))
    """
    if not isinstance(example_input, torch.Tensor):
        raise UnsupportedModelError("example_input must be one tensor (models with several inputs are not supported)")
    was_training = model.training
    model.eval()
    x = example_input[:1].detach()
    tracer, caveat = "symbolic", None
    try:
        try:
            gm = symbolic_trace(model)
        except UnsupportedModelError as symbolic_error:  # data-dependent control flow: trace what ran
            gm = _concrete_fallback(model, x, symbolic_error)
            tracer, caveat = "concrete", CAVEAT.format(shape=tuple(x.shape))
        lab = _Labeler(gm, model)
        with torch.no_grad():
            lab.run(x)
    finally:
        model.train(was_training)
    edges = torch.cat(lab.edges, 1) if lab.edges else torch.zeros(2, 0, dtype=torch.long)
    notes = list(dict.fromkeys(lab.notes))
    return TraceResult(gm, lab.next, edges, list(lab.uses.values()), lab.macs_per_weight, lab.module_kind,
                       lab.node_channels, lab.node_kind, notes, tracer, caveat)


def _concrete_fallback(model: nn.Module, x: torch.Tensor, symbolic_error: Exception) -> fx.GraphModule:
    try:
        return concrete_trace(model, x, _Tracer(_leaf_types()).is_leaf_module)
    except Exception as e:
        raise UnsupportedModelError(f"{symbolic_error}; tracing the forward pass of the example input failed "
                                    f"too: {type(e).__name__}: {e}") from None

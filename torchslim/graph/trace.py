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
* A sum or norm over the channels is NEUTRAL (-1): it joins nothing (a zeroed channel adds nothing).
* Sizes read from module attributes (`self.conv.in_channels`, `self.hidden_dim`) are checked once all
  labels are joined (module_sizes.py): they follow the pruning or pin what they cut.

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
from torchslim.graph.module_sizes import ModuleSize, SizeConstraint, resolve, tracked_sizes

PINNED = 0
# A value that carries no channel (a sum or norm over the channels): it joins nothing, and a layer reading
# it along its channel dim treats it as PINNED.
NEUTRAL = -1
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
# Reductions over the channels that a zeroed channel does not change: pruning it is exact, the result
# is NEUTRAL (x / x.norm(dim=1, keepdim=True) leaves the channels of x free).
_CHANNEL_SAFE_REDUCE = {"sum", "norm", "linalg_vector_norm", "vector_norm"}
_REDUCE_OPS = {"mean", "sum", "amax", "amin", "max", "min", "std", "var", "logsumexp", "norm", "prod",
               "linalg_vector_norm", "vector_norm"}
ACTIVATIONS = {"relu", "relu_", "relu6", "hardtanh", "silu", "hardswish", "gelu", "leaky_relu", "elu",
               "mish", "ReLU", "ReLU6", "SiLU", "Hardswish", "GELU", "LeakyReLU", "ELU", "Mish", "Hardtanh"}
_MODULE_SHAPE_OPS = {nn.Flatten: "flatten", nn.Unflatten: "unflatten"}


def components(n: int, edges: torch.Tensor) -> torch.Tensor:
    """Connected components of a graph on `n` nodes: each node -> the smallest node of its component."""
    comp = torch.arange(n)
    if edges.numel() == 0:
        return comp
    a, b = edges[0], edges[1]
    while True:  # min-label propagation with pointer jumping: O(log n) rounds on these graphs
        m = torch.minimum(comp[a], comp[b])
        new = comp.clone()
        new.scatter_reduce_(0, a, m, "amin")
        new.scatter_reduce_(0, b, m, "amin")
        new = new[new]
        if torch.equal(new, comp):
            return comp
        comp = new


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
    macs_per_weight: dict[str, float]  # "module" (its weight) or "module:tensor" -> MACs per weight element
    module_kind: dict[str, str]  # module -> "conv", "conv_dw" (whole groups), "conv_group", "linear", "norm",
    # "groupnorm", "layernorm", "prelu", "attention", "pad_shortcut"
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
    own = set(model.__dict__)
    try:
        with tracked_sizes(model):  # sizes read from modules stay recognisable in the graph
            graph = tracer.trace(model)
    except Exception as e:  # fx raises many types; name what failed
        where = ""
        for frame in reversed(getattr(e, "__traceback__", None) and _frames(e) or []):
            where = frame
            break
        raise UnsupportedModelError(
            f"cannot trace {type(model).__name__} with torch.fx{where}: {type(e).__name__}: {e}. "
            "Data-dependent control flow is not supported; make the module a leaf or rewrite it") from None
    gm = fx.GraphModule(tracer.root, graph, type(model).__name__)
    for k in set(model.__dict__) - own:  # fx parks tensor constants on the traced model: take them back
        delattr(model, k)
    return gm


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
        self.size_constraints: list[SizeConstraint] = []  # literal sizes read from module attributes
        self.layer_sides: dict[tuple[str, str], torch.Tensor] = {}  # (module, "in"|"out") -> channel labels

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
        m = (a != b) & (a != NEUTRAL) & (b != NEUTRAL)
        if m.any():
            key = torch.unique(a[m] * (1 << 31) + b[m])  # 1-D unique is much faster than unique(dim=1)
            self.edges.append(torch.stack([key >> 31, key & ((1 << 31) - 1)]))

    def pin(self, lab: torch.Tensor, why: str) -> None:
        u = torch.unique(lab)
        u = u[u > PINNED]
        if len(u):
            self.edges.append(torch.stack([u, torch.zeros_like(u)]))
            self.notes.append(why)

    def along(self, lab: torch.Tensor, dim: int) -> torch.Tensor:
        """Labels along `dim`, joining every element of a slice (a channel is pruned as a whole)."""
        if all(lab.stride(d) == 0 or lab.shape[d] == 1 for d in range(lab.dim()) if d != dim):
            # an expanded per-channel vector (most activations): every slice holds one label already
            rep = lab[tuple(slice(None) if d == dim else 0 for d in range(lab.dim()))]
            return rep.clamp(min=PINNED)  # a channel read from a NEUTRAL value is kept
        flat = lab.movedim(dim, 0).reshape(lab.shape[dim], -1)
        rep = flat[:, 0]
        if flat.shape[1] > 1:
            self.join(rep[:, None], flat)
        return rep.clamp(min=PINNED)

    @staticmethod
    def expand(ch: torch.Tensor, shape, dim: int = 1) -> torch.Tensor:
        view = [1] * len(shape)
        view[dim] = len(ch)
        return ch.view(view).expand(shape)

    def sides(self, module: str, cin: torch.Tensor, cout: torch.Tensor) -> None:
        """Remember a layer's input and output channels (what its in_channels / out_channels count)."""
        self.layer_sides.setdefault((module, "in"), cin)
        self.layer_sides.setdefault((module, "out"), cout)

    def use(self, module: str, name: str, dim: int, labels: torch.Tensor, kind: str) -> None:
        key = (module, name, dim)
        if key in self.uses:  # module called twice: its weights serve both calls
            self.join(self.uses[key].labels, labels)
        else:
            self.uses[key] = ParamUse(module, name, dim, labels.clamp(min=PINNED), kind)

    # -- running ------------------------------------------------------------------------------
    def run(self, args: tuple, kwargs: dict):
        """Run on the model's positional `args` and keyword `kwargs` (model inputs are PINNED)."""
        env: dict[str, tuple] = {}
        positional = list(args)

        def val(a):
            return _tree_map(a, lambda n: env[n.name][0] if isinstance(n, fx.Node) else n)

        def lab(a):  # label tensors where the value is a tensor, the value itself otherwise (sizes)
            return _tree_map(a, lambda n: (env[n.name][1] if env[n.name][1] is not None else env[n.name][0])
                             if isinstance(n, fx.Node) else n)

        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                v = _placeholder_value(node, positional, kwargs)
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
        if isinstance(m, nn.modules.conv._ConvNd) and isinstance(x, torch.Tensor):
            return self._conv(fqn, m, xl, out, node.name)
        if isinstance(m, nn.GroupNorm):
            return self._group_norm(fqn, m, xl)
        if isinstance(m, nn.MultiheadAttention) and _plain_self_attention(m, node):
            return self._self_attention(fqn, m, xl, out)
        if isinstance(m, nn.Linear):
            return self._linear(fqn, m, xl, out)
        if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)):
            ch = self.along(xl, 1)
            for name in ("weight", "bias", "running_mean", "running_var"):
                if getattr(m, name, None) is not None:
                    self.use(fqn, name, 0, ch, "norm")
            self.use(fqn, "_channels", 0, ch, "norm")  # num_features follows (InstanceNorm: no tensors)
            self.sides(fqn, ch, ch)
            self.module_kind[fqn] = "norm"
            return xl
        if isinstance(m, nn.LayerNorm):
            return self._layernorm(fqn, m, xl, out)
        if isinstance(m, nn.PReLU) and m.num_parameters > 1:
            ch = self.along(xl, 1)
            self.use(fqn, "weight", 0, ch, "norm")
            self.sides(fqn, ch, ch)
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
        """1-D/2-D/3-D convolutions and their transposes, any groups. A plain conv's weight is
        (out, in/g, k...), a transposed one's (in, out/g, k...): dim 0 always spans every channel of its
        side, dim 1 one group's channels."""
        g = m.groups
        cin = self.along(xl, 1)
        in_pg, out_pg = m.in_channels // g, m.out_channels // g
        full_dim, group_dim = (1, 0) if m.transposed else (0, 1)  # the weight dims of all outputs / of a group's
        # MACs per weight element: output positions (input positions for a transposed conv)
        site = xl if m.transposed else out
        self.macs_per_weight[fqn] = self.macs_per_weight.get(fqn, 0) + site[0].numel() / site.shape[1]
        if g == 1:
            outl = self.fresh(m.out_channels)
            self.use(fqn, "weight", 1 - full_dim, cin, "in")
            self.use(fqn, "weight", full_dim, outl, "out")
            self.module_kind[fqn] = "conv"
        elif in_pg == 1 or out_pg == 1:
            # depthwise (with a channel multiplier) or many-to-one groups: prune whole groups, i.e. a
            # group's inputs and outputs are one unit; the group count shrinks.
            per = cin.view(g, in_pg)
            self.join(per[:, :1], per)
            outl = per[:, 0].repeat_interleave(out_pg)
            if m.transposed:
                self.use(fqn, "weight", 0, cin, "in")
            else:
                self.use(fqn, "weight", 0, outl, "out")
            self.module_kind[fqn] = "conv_dw"
        else:
            # grouped: keep the group count, prune the same positions in each group (inputs joined
            # across groups; with as many outputs as inputs per group, output i follows input i)
            per = cin.view(g, in_pg)
            self.join(per[:1], per)
            one = per[0] if in_pg == out_pg else self.fresh(out_pg)
            outl = one.repeat(g) if in_pg != out_pg else cin.clone()
            if m.transposed:
                self.use(fqn, "weight", 0, cin, "in")
                self.use(fqn, "weight", 1, one, "out")
            else:
                self.use(fqn, "weight", 1, per[0], "in")
                self.use(fqn, "weight", 0, outl, "out")
            self.module_kind[fqn] = "conv_group"
        if m.bias is not None:
            self.use(fqn, "bias", 0, outl, "out")
        self.sides(fqn, cin, outl)
        for name, p in m.named_parameters(recurse=False):  # a conv subclass's per-filter tensor (timm's
            if name not in ("weight", "bias") and p.dim() and p.shape[0] == p.numel() == m.out_channels:
                self.use(fqn, name, 0, outl, "norm")  # ScaledStdConv2d gain), shaped (out, 1, 1, 1)
        ol = self.expand(outl, out.shape)
        self.node_channels[node_name] = outl
        self.node_kind.setdefault(node_name, "out")
        return ol

    def _self_attention(self, fqn, m, xl, out):
        """nn.MultiheadAttention on one tensor (query = key = value): prune whole heads (exact: a head's
        head_dim and softmax scale stay as they are; removing head dims would change the scale). torch
        computes head_dim from the query width, so the q/k/v width follows the input channels position by
        position, and the output (a residual in practice) keeps the input's channels."""
        tokens = xl[..., 0].numel()
        cin = self.along(xl, xl.dim() - 1)
        per = cin.view(m.num_heads, m.head_dim)
        self.join(per[:, :1], per)
        self.use(fqn, "in_proj_weight", 1, cin, "in")
        self.use(fqn, "in_proj_weight", 0, cin.repeat(3), "out")
        if m.in_proj_bias is not None:
            self.use(fqn, "in_proj_bias", 0, cin.repeat(3), "out")
        proj = f"{fqn}.out_proj"
        self.use(proj, "weight", 1, cin, "in")
        self.use(proj, "weight", 0, cin, "out")
        if m.out_proj.bias is not None:
            self.use(proj, "bias", 0, cin, "out")
        self.module_kind[fqn] = "attention"
        self.module_kind[proj] = "linear"
        self.sides(fqn, cin, cin)
        # projection MACs per weight element: one per token (the L x L products are not counted)
        self.macs_per_weight[f"{fqn}:in_proj_weight"] = self.macs_per_weight.get(f"{fqn}:in_proj_weight", 0) + tokens
        self.macs_per_weight[proj] = self.macs_per_weight.get(proj, 0) + tokens
        return (self.expand(cin, out[0].shape, dim=out[0].dim() - 1),) + tuple(_pinned_like(list(out[1:])))

    def _group_norm(self, fqn, m, xl):
        """GroupNorm normalises each group of channels together: prune whole groups (exact: a removed
        group's statistics never touch the others)."""
        ch = self.along(xl, 1)
        per = ch.view(m.num_groups, -1)
        self.join(per[:, :1], per)
        for name in ("weight", "bias"):
            if getattr(m, name, None) is not None:
                self.use(fqn, name, 0, ch, "norm")
        self.use(fqn, "_channels", 0, ch, "norm")  # num_channels / num_groups follow, affine or not
        self.sides(fqn, ch, ch)
        self.module_kind[fqn] = "groupnorm"
        return xl

    def _linear(self, fqn, m, xl, out):
        cin = self.along(xl, -1)
        outl = self.fresh(m.out_features)
        self.use(fqn, "weight", 1, cin, "in")
        self.use(fqn, "weight", 0, outl, "out")
        if m.bias is not None:
            self.use(fqn, "bias", 0, outl, "out")
        self.module_kind[fqn] = "linear"
        self.sides(fqn, cin, outl)
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
        if name in ("matmul", "bmm") and len(tin) == 2 and isinstance(out, torch.Tensor):
            res = self._matmul(tlab[0], tlab[1], out)
            if res is not None:
                return res
        if name in _REDUCE_OPS and isinstance(out, torch.Tensor):
            return self._reduce(node, name, tin[0], tlab[0], args, kwargs, out)
        if isinstance(out, torch.Tensor) and all(_broadcasts(t.shape, out.shape) for t in tin):
            full = [l for t, l in zip(tin, tlab) if t.shape == out.shape]
            base = full[0] if full else torch.broadcast_to(tlab[0], out.shape)
            for other in tlab:
                if other is not base and not self._broadcast_over_channels(other, base):
                    self.join(base, other)
                    if bool((base == NEUTRAL).any()):  # take the channels of the other side
                        base = torch.where(base == NEUTRAL, other, base)
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
        if name in ("view", "view_as") and node.op == "call_method":
            # label tensors are broadcast views (stride 0) that `view` cannot reshape; reshape copies
            fn = getattr(arg_labs[0], "reshape" if name == "view" else "reshape_as")
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
            given = {start + i: s for i, s in enumerate(sizes)} if start is not None else {}
        else:
            if len(shape_args) == 1 and isinstance(shape_args[0], (list, tuple)):
                shape_args = list(shape_args[0])
            given = dict(enumerate(shape_args))
        literal = {d: isinstance(s, int) and not isinstance(s, ModuleSize) and s != -1 for d, s in given.items()}
        lit = [d for d in var if literal.get(d, False)]
        free = [d for d in var if not literal.get(d, False)]
        if not free:
            self.pin(src, f"{name} at {node.name} has a literal channel size {tuple(res.shape)}: channels kept")
            return
        # Keep every dim but the innermost free one whole: prune the same positions in each slice
        # (channel shuffle: the same channel of every group).
        for d in lit + free[:-1]:
            self.join(res.narrow(d, 0, 1), res)
        for d, size in given.items():  # a size read from a module: it must count what the dim keeps
            if isinstance(size, ModuleSize):
                self.size_constraint(size, res, d, f"{name} at {node.name}", shrinks=d == free[-1])

    def size_constraint(self, size: ModuleSize, lab: torch.Tensor, d: int, where: str, shrinks: bool) -> None:
        """A size read from module attributes at dim `d` of `lab`: checked in `resolve_sizes`. A dim that
        is kept whole (`shrinks` False) must keep its size: every layer the size is read from is kept."""
        if shrinks:
            self.size_constraints.append(SizeConstraint(size, lab.movedim(d, 0).reshape(lab.shape[d], -1), where))
        else:
            self.size_constraints.append(SizeConstraint(size, None, where))

    def resolve_sizes(self, model: nn.Module) -> None:
        """Once every channel is joined: sizes read from modules that follow the pruning are left free,
        a model's own attribute becomes a virtual use `_int:<name>` (the surgery sets it to the kept count),
        the rest pin their channels and the layers they were read from."""
        if not self.size_constraints:
            return
        edges = torch.cat(self.edges, 1) if self.edges else torch.zeros(2, 0, dtype=torch.long)
        comp = components(self.next, edges)
        for action in resolve(self.size_constraints, comp, self.layer_sides, model):
            if action[0] == "attr":
                _, module, attr, labels = action
                self.use(module, f"_int:{attr}", 0, labels, "norm")
            else:
                _, labels, layers, why = action
                if labels is not None:
                    self.pin(labels, why)
                for ch in layers:
                    self.pin(ch, why)

    def _check_split(self, node, name, src, res):
        parts = list(res)
        dim = node.kwargs.get("dim", node.args[2] if len(node.args) > 2 else 0)
        if name == "unbind":
            dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
        dim = dim % src.dim()
        if dim not in self._varying(src):
            return
        sizes = {p.shape[dim] for p in parts}
        size_arg = node.args[1] if len(node.args) > 1 else node.kwargs.get("split_size_or_sections")
        if name == "split" and isinstance(size_arg, (list, tuple)) and size_arg and \
                all(isinstance(s, ModuleSize) for s in size_arg):
            for p, size in zip(parts, size_arg):  # sizes read from modules: each must count what its part keeps
                self.size_constraint(size, p, dim, f"{name} at {node.name}", shrinks=True)
            return
        literal = name in ("split", "tensor_split") and (
            isinstance(size_arg, (list, tuple)) or isinstance(size_arg, int))
        if literal and self._split_sizes_follow(node, size_arg, dim, parts):
            return
        if len(sizes) != 1 or literal:
            self.pin(src, f"{name} at {node.name} splits channels at fixed positions: they are kept")
            return
        for p in parts[1:]:
            self.join(parts[0], p)

    def _matmul(self, la: torch.Tensor, lb: torch.Tensor, out: torch.Tensor) -> torch.Tensor | None:
        """a @ b where each operand has channels along at most one of its two matrix dims (attention:
        q @ k^T, attn @ v; x @ y with x's rows or y's columns as channels). The contracted positions
        are the same channels on both sides (a zeroed one adds nothing: removing it is exact); the result
        keeps a's row channels or b's column channels, or none (NEUTRAL). None: not understood."""
        if la.dim() < 2 or lb.dim() < 2:
            return None
        va, vb = set(self._varying(la)), set(self._varying(lb))
        a_rows, a_inner = la.dim() - 2, la.dim() - 1
        b_inner, b_cols = lb.dim() - 2, lb.dim() - 1
        if {a_rows, a_inner} <= va or {b_inner, b_cols} <= vb:
            return None
        rows, cols = a_rows in va, b_cols in vb
        if rows and cols:
            return None  # each result element would belong to two channels
        self.join(la.select(a_rows, 0), lb.select(b_cols, 0))
        if rows:
            return torch.broadcast_to(la.narrow(a_inner, 0, 1), out.shape)
        if cols:
            return torch.broadcast_to(lb.narrow(b_inner, 0, 1), out.shape)
        return torch.full(out.shape, NEUTRAL, dtype=torch.long)
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
        if name in ("norm", "linalg_vector_norm", "vector_norm"):  # (x, p, dim) / (x, ord, dim)
            dims = kwargs.get("dim", args[2] if len(args) > 2 else None)
        if name in _CHANNEL_SAFE_REDUCE and self._reads_channels_only(name, lab, dims, args, kwargs):
            return torch.full(out.shape, NEUTRAL, dtype=torch.long)
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

    def _reads_channels_only(self, name, lab, dims, args, kwargs) -> bool:
        """A sum or non-negative p-norm that reduces every dim where channels vary: a zeroed channel adds
        nothing to it, so removing that channel gives the same value."""
        p = kwargs.get("p", kwargs.get("ord", args[1] if len(args) > 1 and name != "sum" else 2))
        if name != "sum" and not (isinstance(p, (int, float)) and p >= 0 or p in ("fro",)):
            return False
        var = self._varying(lab)
        if dims is None:
            return True
        dims = {d % lab.dim() for d in ([dims] if isinstance(dims, int) else dims)}
        return bool(var) and set(var) <= dims


def _plain_self_attention(m: nn.MultiheadAttention, node: fx.Node) -> bool:
    """Self-attention whose q, k, v share one input and one projection matrix (ViT, most hybrids)."""
    qkv = list(node.args[:3]) + [node.kwargs.get(k) for k in ("query", "key", "value") if k in node.kwargs]
    return (m._qkv_same_embed_dim and m.bias_k is None and not m.add_zero_attn and len(qkv) == 3
            and qkv[0] is qkv[1] is qkv[2])


def _placeholder_value(node: fx.Node, positional: list, kwargs: dict):
    """The value of a forward() argument: next positional input, else by keyword, else its default."""
    if positional:
        return positional.pop(0)
    if node.target in kwargs:
        return kwargs[node.target]
    return node.args[0] if node.args else None


def model_inputs(example_input) -> tuple[tuple, dict]:
    """(args, kwargs) of a model call: a tensor is one argument, a tuple/list several, a dict keywords."""
    if isinstance(example_input, torch.Tensor):
        return (example_input,), {}
    if isinstance(example_input, (tuple, list)) and example_input:
        return tuple(example_input), {}
    if isinstance(example_input, dict) and example_input:
        return (), dict(example_input)
    raise UnsupportedModelError(f"example_input must be a tensor, a tuple of inputs or a dict of keyword inputs, "
                                f"got {type(example_input).__name__}")


def first_sample(example_input):
    """The example cut to its first sample (every tensor's dim 0), same structure."""
    return _tree_map(example_input, lambda v: v[:1].detach() if isinstance(v, torch.Tensor) and v.dim() else v)


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


def trace(model: nn.Module, example_input) -> TraceResult:
    """Trace `model` (torch.fx) and label its channels on `example_input` (only the first sample is used):
    a tensor, a tuple of positional inputs (`model(a, b)`) or a dict of keyword inputs.

    Example:
        >>> tr = trace(torchvision.models.resnet18(), torch.randn(1, 3, 64, 64))
    """
    args, kwargs = model_inputs(first_sample(example_input))
    was_training = model.training
    model.eval()
    tracer, caveat = "symbolic", None
    try:
        try:
            gm = symbolic_trace(model)
        except UnsupportedModelError as symbolic_error:  # data-dependent control flow: trace what ran
            if len(args) != 1 or kwargs or not isinstance(args[0], torch.Tensor):
                raise  # the concrete tracer records a call on one tensor
            x = args[0].detach()
            gm = _concrete_fallback(model, x, symbolic_error)
            tracer, caveat = "concrete", CAVEAT.format(shape=tuple(x.shape))
        lab = _Labeler(gm, model)
        with torch.no_grad():
            lab.run(args, kwargs)
            lab.resolve_sizes(model)
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

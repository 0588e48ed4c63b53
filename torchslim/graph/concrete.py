"""Concrete tracing: record the graph of the forward pass a model really ran on one example input.

torch.fx traces symbolically and gives up at Python control flow that reads a tensor
(`if x.shape[-2] < 7:` in timm's VGG head, `if new_h != H:` in MobileViT). Torch-Pruning avoids the
problem by running the model once and reading the autograd graph; we run it once too, but record
the calls at the level torch.fx would have recorded them, so the channel labelling of trace.py runs
on the result unchanged:

* a `TorchFunctionMode` sees every torch function and Tensor method called outside leaf modules
  (`torch.cat`, `F.relu`, `x.view`, `x + y`, `x.shape`...) and appends it as an fx node;
* global module hooks turn calls of leaf modules (the same leaves as the symbolic tracer: convs,
  norms, linears, torch.nn layers) into `call_module` nodes and hide what happens inside them;
* sizes read from a tensor (`B, C, H, W = x.shape`) are ints that remember their node, and
  arithmetic on them (`B * C`, `C // 2`) is recorded, so `x.reshape(B * C, -1)` is a reshape by a
  size taken from the tensor, not by a literal, as in a symbolic trace.

What a concrete trace cannot promise: the graph is the path this input took. Another input size or
content may take another branch (VGG's head pools only inputs under 7x7; MobileViT interpolates
only sizes that are not multiples of its patch); values read with `.item()` or turned into Python
numbers without a recorded size (`math.ceil(H / p)`) are frozen at their traced value. Pruning
keeps the channels consistent on the path traced; run the pruned model on the sizes you deploy.
"""
from __future__ import annotations

import operator
from collections import OrderedDict

import torch
import torch.fx as fx
from torch import nn
from torch.overrides import TorchFunctionMode

CAVEAT = ("traced concretely on one input of shape {shape}: another input size or content may take another "
          "branch of the model's control flow, which this trace did not see")


class _SizeInt(int):
    """An int read from a tensor's shape that remembers its fx node; arithmetic on it is recorded."""

    def __new__(cls, value: int, tracer: "_ConcreteTracer", make_node):
        self = super().__new__(cls, value)
        self._tracer, self._make_node, self._node = tracer, make_node, None
        return self

    @property
    def node(self) -> fx.Node:
        if self._node is None:  # created on first use: unused shape reads leave no node
            self._node = self._make_node()
        return self._node

    def __reduce__(self):  # a copy (deepcopy of a model that cached a shape) is a plain int
        return int, (int(self),)

    def _op(self, fn, other, reverse=False):
        value = fn(other, int(self)) if reverse else fn(int(self), other)
        if not isinstance(other, int) or isinstance(other, bool) or not isinstance(value, int):
            return value  # floats and the like: a plain, frozen number
        o = other.node if isinstance(other, _SizeInt) else int(other)
        args = (o, self.node) if reverse else (self.node, o)
        tr = self._tracer
        return _SizeInt(value, tr, lambda: tr.graph.call_function(fn, args))

    def __add__(self, o): return self._op(operator.add, o)
    def __radd__(self, o): return self._op(operator.add, o, True)
    def __sub__(self, o): return self._op(operator.sub, o)
    def __rsub__(self, o): return self._op(operator.sub, o, True)
    def __mul__(self, o): return self._op(operator.mul, o)
    def __rmul__(self, o): return self._op(operator.mul, o, True)
    def __floordiv__(self, o): return self._op(operator.floordiv, o)
    def __rfloordiv__(self, o): return self._op(operator.floordiv, o, True)
    def __mod__(self, o): return self._op(operator.mod, o)
    def __rmod__(self, o): return self._op(operator.mod, o, True)


class _ConcreteTracer(TorchFunctionMode):
    """Runs the model once and records an fx graph of what ran (see the module docstring)."""

    def __init__(self, model: nn.Module, is_leaf):
        super().__init__()
        self.model = model
        self.graph = fx.Graph()
        self.is_leaf = is_leaf
        self.names = {id(m): n for n, m in model.named_modules()}
        self.attrs = {id(t): n for n, t in list(model.named_parameters()) + list(model.named_buffers())}
        self.root: dict[str, object] = {}  # qualified name -> module or tensor the graph refers to
        self.env: dict[int, tuple[torch.Tensor, object]] = {}  # id(tensor) -> (tensor kept alive, node)
        self.depth = 0  # > 0 inside a leaf module: nothing is recorded
        self.stack: OrderedDict[str, tuple[str, type]] = OrderedDict()  # non-leaf modules being run
        self.leaf_calls: list[tuple[nn.Module, str]] = []

    # -- values -> graph arguments -------------------------------------------------------------
    def node_of(self, t: torch.Tensor) -> fx.Node:
        hit = self.env.get(id(t))
        if hit is not None and hit[0] is t:
            return hit[1]
        name = self.attrs.get(id(t))
        if name is None:  # a tensor from outside the traced call (a plain attribute, a global)
            name = f"_concrete_constant_{len(self.root)}"
        self.root[name] = t
        node = self.graph.get_attr(name)
        self.bind(t, node)
        return node

    def bind(self, t: torch.Tensor, node) -> None:
        self.env[id(t)] = (t, node)

    def arg(self, a):
        if isinstance(a, torch.Tensor):
            return self.node_of(a)
        if isinstance(a, _SizeInt):
            return a.node
        if isinstance(a, torch.Size):
            return tuple(self.arg(v) for v in a)
        if isinstance(a, (list, tuple)) and not hasattr(a, "_fields"):
            return type(a)(self.arg(v) for v in a)
        if isinstance(a, dict):
            return {k: self.arg(v) for k, v in a.items()}
        return a

    def bind_result(self, out, node: fx.Node) -> None:
        if isinstance(out, torch.Tensor):
            self.bind(out, node)
        elif isinstance(out, (list, tuple)):
            for i, v in enumerate(out):
                if isinstance(v, torch.Tensor):
                    self.bind(v, self.graph.call_function(operator.getitem, (node, i)))

    def sized(self, size: torch.Size, node_fn) -> torch.Size:
        """A shape whose entries remember `node_fn()[k]`."""
        cache: list = []

        def whole():
            if not cache:
                cache.append(node_fn())
            return cache[0]

        return torch.Size([_SizeInt(v, self, lambda k=k: self.graph.call_function(operator.getitem, (whole(), k)))
                           for k, v in enumerate(size)])

    def _meta(self, node: fx.Node) -> fx.Node:
        node.meta["nn_module_stack"] = OrderedDict(self.stack)
        return node

    # -- torch functions ----------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.depth:
            return out
        name = getattr(func, "__name__", "")
        if name == "__get__":  # a Tensor property: x.shape, x.T, x.device...
            prop = func.__self__.__name__
            if prop == "shape":
                x = args[0]
                return self.sized(out, lambda: self._meta(self.graph.call_method("size", (self.node_of(x),))))
            if isinstance(out, torch.Tensor):
                target = "detach" if prop == "data" else None
                n = self.graph.call_method(target, (self.arg(args[0]),)) if target else \
                    self.graph.call_function(getattr, (self.arg(args[0]), prop))
                self.bind(self._meta(n), n)
            return out
        if name == "size":
            x, rest = args[0], args[1:]
            make = lambda: self._meta(self.graph.call_method("size", (self.node_of(x),) + tuple(self.arg(rest)),  # noqa: E731
                                                             self.arg(kwargs)))
            return self.sized(out, make) if isinstance(out, torch.Size) else _SizeInt(out, self, make)
        if name == "__len__":
            x = args[0]
            return self.sized(torch.Size([out]), lambda: self._meta(self.graph.call_method("size", (self.node_of(x),))))[0]
        if name == "__iter__":  # `a, b = t`: the items of unbind(t, 0)
            items = list(out)
            node = self._meta(self.graph.call_method("unbind", (self.node_of(args[0]),)))
            self.bind_result(items, node)
            return iter(items)
        if not _has_tensor(out) and name != "__setitem__":
            return out  # a Python value (bool, dtype, .item()): frozen at its traced value
        node = self._record(func, name, args, kwargs)
        self.bind_result(out, node)
        return out

    def _record(self, func, name, args, kwargs) -> fx.Node:
        a, k = self.arg(args), self.arg(kwargs)
        if name in ("__getitem__", "__setitem__"):
            node = self.graph.call_function(operator.getitem if name == "__getitem__" else operator.setitem, a, k)
        elif _is_tensor_method(func, name) and args and isinstance(args[0], torch.Tensor):
            node = self.graph.call_method(name, a, k)
        else:
            node = self.graph.call_function(func, a, k)
        return self._meta(node)

    # -- modules ------------------------------------------------------------------------------
    def pre_hook(self, module, args):
        if self.depth:
            self.depth += 1
            return
        name = self.names.get(id(module))
        if name is None or module is self.model:
            return
        if self.is_leaf(module, name):
            self.depth = 1
        else:
            self.stack[name] = (name, type(module))

    def post_hook(self, module, args, kwargs, out):
        if self.depth:
            self.depth -= 1
            if self.depth == 0:
                name = self.names[id(module)]
                self.root[name] = module
                node = self._meta(self.graph.call_module(name, self.arg(args), self.arg(kwargs)))
                self.bind_result(out, node)
            return
        name = self.names.get(id(module))
        if name is not None:
            self.stack.pop(name, None)

    def run(self, example: torch.Tensor) -> fx.GraphModule:
        x = self.graph.placeholder("x")
        self.bind(example, x)
        hooks = [nn.modules.module.register_module_forward_pre_hook(self.pre_hook),
                 nn.modules.module.register_module_forward_hook(self.post_hook, with_kwargs=True)]
        try:
            with self:
                out = self.model(example)
            self.graph.output(self.arg(out))
        finally:
            for h in hooks:
                h.remove()
        return fx.GraphModule(self.root, self.graph, type(self.model).__name__)


def _has_tensor(v) -> bool:
    if isinstance(v, torch.Tensor):
        return True
    if isinstance(v, (list, tuple)):
        return any(_has_tensor(x) for x in v)
    return False


def _is_tensor_method(func, name: str) -> bool:
    return getattr(torch.Tensor, name, None) is func or getattr(torch._C.TensorBase, name, None) is func


def concrete_trace(model: nn.Module, example_input: torch.Tensor, is_leaf) -> fx.GraphModule:
    """An fx graph of `model(example_input)` as it ran, with `is_leaf(module, qualname)` modules
    recorded as calls; see the module docstring for what it cannot promise.

    Example:
        >>> gm = concrete_trace(timm.create_model("vgg11_bn"), torch.randn(1, 3, 64, 64), lambda m, n: False)
    """
    with torch.no_grad():
        return _ConcreteTracer(model, is_leaf).run(example_input)

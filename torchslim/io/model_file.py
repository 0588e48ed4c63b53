"""A saved model is one `.safetensors` file: tensors, plus a JSON manifest in the header metadata.

The manifest names the constructor the model came from (`resnet56`, `torchvision:mobilenet_v2`, `timm:mixnet_s`) and
describes every module that differs from what that constructor builds (pruned convs, decomposed
chains, quantized layers) as `{"type", "args", "children"}`. Loading rebuilds the base model,
swaps those modules in, and loads the weights strictly. Only classes from torch.nn, torchvision,
torchslim and timm (or registered by the user) can be named, and nothing in the file is ever executed.
"""
from __future__ import annotations

import importlib
import inspect
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchslim.errors import FileFormatError, InvalidInputError

FORMAT, VERSION = "torchslim-model", 1
ARCH_ATTR = "_torchslim_arch"
_ALLOWED_PREFIXES = ("torch.nn.", "torchvision.", "torchslim.", "timm.")
_REGISTERED: dict[str, type] = {}


def register_module(cls: type) -> type:
    """Allow a user's own module class in model files (its init args must be readable attributes)."""
    _REGISTERED[_qualname(cls)] = cls
    return cls


def set_arch(model: nn.Module, name: str, kwargs: dict | None = None, input_size=None) -> nn.Module:
    """Record which constructor built `model` (done by `torchslim.models.create_model`)."""
    object.__setattr__(model, ARCH_ATTR, {"name": name, "kwargs": dict(kwargs or {}),
                                          "input_size": list(input_size) if input_size else None})
    return model


def constructor_of(model: nn.Module) -> dict | None:
    """The recorded constructor {"name", "kwargs", "input_size"} of a model, or None if it has none
    (a model loaded from a file without one records only its input size)."""
    arch = getattr(model, ARCH_ATTR, None)
    return arch if arch and arch.get("name") else None


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _resolve(qualname: str) -> type:
    if qualname in _REGISTERED:
        return _REGISTERED[qualname]
    if not qualname.startswith(_ALLOWED_PREFIXES):
        raise FileFormatError(f"module type {qualname!r} is not allowed in model files "
                              "(torch.nn, torchvision, torchslim, timm or torchslim.io.register_module)")
    module_name, _, attr = qualname.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise FileFormatError(f"module type {qualname!r} does not exist in this installation") from e
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise FileFormatError(f"{qualname!r} is not an nn.Module class")
    return cls


_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def _init_args(m: nn.Module, cls: type | None = None) -> dict[str, Any]:
    """Constructor arguments of `cls` (default: m's own class) recovered from m's same-named attributes
    (the torch.nn convention). Subclasses that swap a layer's weight for something else (masks, shared
    weights) call it with their dense class from `spec_args()`."""
    if cls is None and hasattr(m, "spec_args"):
        return dict(m.spec_args())
    args = {}
    for name, p in inspect.signature((cls or type(m)).__init__).parameters.items():
        if name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or name in ("device", "dtype"):
            continue
        if not hasattr(m, name):
            continue
        v = getattr(m, name)
        if isinstance(v, nn.Parameter) or (v is None and name == "bias"):
            v = v is not None  # e.g. Conv2d(bias=True) stores the tensor
        elif isinstance(v, torch.Tensor):
            v = v.tolist()
        elif isinstance(v, tuple):
            v = list(v)
        if isinstance(v, (nn.Module, type)) or callable(v):
            continue  # rebuilt from children, or a default
        try:
            json.dumps(v)
        except TypeError:
            continue
        args[name] = v
    return args


_MODULE_INTERNALS = frozenset(vars(nn.Module()))  # training, _parameters, hook dicts...


def _state_attrs(m: nn.Module) -> dict[str, Any]:
    """Plain public attributes of a module from outside torch.nn and torchslim (timm's MixedConv2d
    keeps its channel split in `splits`, which pruning rewrites): restored after construction."""
    if type(m).__module__.startswith(("torch.", "torchslim.")):
        return {}
    out = {}
    for k, v in vars(m).items():
        if k in _MODULE_INTERNALS or not (v is None or isinstance(v, (int, float, str, bool, list, tuple))):
            continue
        try:
            json.dumps(v)
        except TypeError:
            continue
        out[k] = v
    return out


def _missing_args(cls: type, args: dict) -> bool:
    """Whether `cls(**args)` lacks a required argument."""
    return any(p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and n != "self"
               and n not in args for n, p in inspect.signature(cls.__init__).parameters.items())


def _torch_base(cls: type) -> type | None:
    """The torch.nn layer a third-party layer subclasses (its init args are recoverable attributes)."""
    return next((c for c in cls.__mro__[1:] if c.__module__.startswith("torch.nn.") and c is not nn.Module), None)


def module_spec(m: nn.Module) -> dict:
    cls = type(m)
    qn = _qualname(cls)
    if not qn.startswith(_ALLOWED_PREFIXES) and qn not in _REGISTERED:
        raise InvalidInputError(f"cannot save module of type {qn}: register it with torchslim.io.register_module")
    spec: dict[str, Any] = {"type": qn, "args": {} if isinstance(m, _CONTAINERS) else _init_args(m)}
    base = None if isinstance(m, _CONTAINERS) or not _missing_args(cls, spec["args"]) else _torch_base(cls)
    if base is not None:  # e.g. timm's LayerNorm2d(num_channels) keeps only nn.LayerNorm's attributes
        spec.update(base=_qualname(base), args=_init_args(m, base))
    elif not isinstance(m, _CONTAINERS) and _missing_args(cls, spec["args"]):
        # a block whose constructor arguments are not attributes (timm's ConvNeXtBlock): rebuilt from its
        # parts (own tensors by shape, children, plain attributes); the weights fill the tensors
        spec.update(args={}, parts=True)
    if not qn.startswith(("torch.", "torchslim.")):  # own tensors a pruning resized (a block's layer scale)
        spec["tensors"] = {"params": {n: list(t.shape) for n, t in m._parameters.items() if t is not None},
                           "buffers": {n: list(t.shape) for n, t in m._buffers.items() if t is not None}}
    attrs = _state_attrs(m)
    if attrs:
        spec["attrs"] = attrs
        tuples = [k for k, v in attrs.items() if isinstance(v, tuple)]
        if tuples:
            spec["tuple_attrs"] = tuples
    children = {n: module_spec(c) for n, c in m.named_children()}
    if children:
        spec["children"] = children
    if not m.training:
        spec["eval"] = True
    return spec


def build_module(spec: dict) -> nn.Module:
    try:
        cls = _resolve(spec["type"])
        args = spec.get("args", {})
        children = spec.get("children", {})
        if issubclass(cls, _CONTAINERS):
            m = _empty_container(cls)
            for name, cs in children.items():
                m.add_module(name, build_module(cs))
        else:
            args = {k: tuple(v) if isinstance(v, list) and k != "index" else v for k, v in args.items()}
            if "base" in spec:  # built as its torch.nn base class, then given its own class
                m = cls.__new__(cls)
                _resolve(spec["base"]).__init__(m, **args)
            elif spec.get("parts"):
                m = cls.__new__(cls)
                nn.Module.__init__(m)
            else:
                m = cls(**args)
            for name, cs in children.items():
                setattr(m, name, build_module(cs))
        tensors = spec.get("tensors", {})
        for n, shape in tensors.get("params", {}).items():
            if n not in m._parameters or m._parameters[n] is None or list(m._parameters[n].shape) != shape:
                m.register_parameter(n, nn.Parameter(torch.empty(shape)))
        for n, shape in tensors.get("buffers", {}).items():
            if n not in m._buffers or m._buffers[n] is None or list(m._buffers[n].shape) != shape:
                m.register_buffer(n, torch.empty(shape))
        for k, v in spec.get("attrs", {}).items():
            setattr(m, k, tuple(v) if k in spec.get("tuple_attrs", ()) else v)
        return m
    except FileFormatError:
        raise
    except Exception as e:
        raise FileFormatError(f"cannot rebuild module {spec.get('type')!r} from {spec.get('args')}: {e}") from e


def _empty_container(cls: type) -> nn.Module:
    """An empty Sequential/ModuleList/ModuleDict of class `cls`; a subclass whose constructor needs
    arguments (timm's MixedConv2d) gets the base container's init and its attributes from "attrs"."""
    try:
        return cls()
    except TypeError:
        m = cls.__new__(cls)
        next(c for c in cls.__mro__ if c in _CONTAINERS).__init__(m)
        return m


def _same(a: nn.Module, b: nn.Module) -> bool:
    """Same type, constructor args and child names (children compared separately)."""
    if type(a) is not type(b):
        return False
    if [n for n, _ in a.named_children()] != [n for n, _ in b.named_children()]:
        return False
    if _state_attrs(a) != _state_attrs(b):
        return False
    if isinstance(a, _CONTAINERS):
        return True
    return _init_args(a) == _init_args(b) and all(
        getattr(a, n).shape == getattr(b, n).shape for n, _ in a.named_parameters(recurse=False))


def _diff(model: nn.Module, base: nn.Module, prefix: str = "") -> dict[str, dict]:
    if not _same(model, base):
        return {prefix: module_spec(model)}
    out: dict[str, dict] = {}
    for name, child in model.named_children():
        out.update(_diff(child, getattr(base, name), f"{prefix}.{name}" if prefix else name))
    return out


def _set_submodule(root: nn.Module, fqn: str, new: nn.Module) -> nn.Module:
    if not fqn:
        return new
    parent_name, _, name = fqn.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, name, new)
    return root


def save_model(model: nn.Module, path: str | os.PathLike, *, arch: dict | None = None,
               input_size=None, metadata: dict | None = None) -> Path:
    """Write `model` to `path` (.safetensors) atomically.

    Args:
        arch: {"name", "kwargs"} of the constructor (default: what create_model recorded on the model).
        input_size: (C, H, W), stored so commands can rebuild an example input.
        metadata: any JSON-able dict kept in the manifest (e.g. accuracy, the recipe).
    """
    from safetensors.torch import save_file

    from torchslim.models import create_model

    path = Path(path)
    input_size = input_size or (getattr(model, ARCH_ATTR, None) or {}).get("input_size")
    arch = arch or constructor_of(model)
    if arch:
        base = create_model(arch["name"], **arch.get("kwargs", {}))
        replaced = _diff(model, base)
    else:
        replaced = {"": module_spec(model)}
    manifest = {"format": FORMAT, "version": VERSION, "arch": arch, "replaced": replaced,
                "input_size": list(input_size) if input_size else (arch or {}).get("input_size"),
                "metadata": metadata or {}}
    tensors = {k: v.detach().contiguous().cpu().clone() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"torchslim": json.dumps(manifest)})
    os.replace(tmp, path)
    return path


def _read_manifest(path: Path) -> dict:
    from safetensors import safe_open

    if not path.is_file():
        raise FileNotFoundError(f"model file {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:
        raise FileFormatError(f"{path}: not a safetensors model file ({e})") from e
    if "torchslim" not in meta:
        raise FileFormatError(f"{path}: a safetensors file without a torchslim manifest; "
                              "load it as weights into a named model (--weights)")
    manifest = json.loads(meta["torchslim"])
    if manifest.get("format") != FORMAT:
        raise FileFormatError(f"{path}: unknown format {manifest.get('format')!r}")
    if manifest.get("version", 0) > VERSION:
        raise FileFormatError(f"{path}: model file version {manifest['version']} is newer than this "
                              f"torchslim reads ({VERSION}); upgrade torchslim")
    return manifest


def model_info(path: str | os.PathLike) -> dict:
    """The manifest of a saved model (arch, replaced modules, input size, metadata)."""
    return _read_manifest(Path(path))


def load_model(path: str | os.PathLike) -> nn.Module:
    """Rebuild a model saved by `save_model`; outputs equal the saved model's."""
    from safetensors.torch import load_file

    from torchslim.models import create_model

    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    manifest = _read_manifest(path)
    arch = manifest.get("arch")
    model = create_model(arch["name"], **arch.get("kwargs", {})) if arch else nn.Identity()
    # Outer modules first, so a replaced container's children are replaced inside it.
    for fqn in sorted(manifest["replaced"], key=lambda k: (k.count("."), k) if k else (-1, "")):
        model = _set_submodule(model, fqn, build_module(manifest["replaced"][fqn]))
    state = load_file(str(path))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise FileFormatError(f"{path}: weights do not fit the described architecture: {e}") from e
    if arch or manifest.get("input_size"):  # keep the input size even for a model without a constructor
        set_arch(model, (arch or {}).get("name"), (arch or {}).get("kwargs"), manifest.get("input_size"))
    model.eval()
    return model

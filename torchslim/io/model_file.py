"""A saved model is one `.safetensors` file: tensors, plus a JSON manifest in the header metadata.

The manifest names the constructor the model came from (`resnet56`, `torchvision:mobilenet_v2`, `timm:mixnet_s`) and
describes every module that differs from what that constructor builds (pruned convs, decomposed
chains, quantized layers) as `{"type", "args", "children"}`. A module whose constructor cannot be
called again from its attributes (torchvision's `ResNet(block, layers)`, `CNBlock`) is described by
its instance state instead, `{"type", "state", "params", "buffers", "children"}`: what pickle would
store, limited to JSON values and allowed classes. Loading rebuilds the base model, swaps those
modules in, and loads the weights strictly. Only classes from torch.nn, torchvision, torchslim and
timm (or registered by the user) can be named, and nothing in the file is ever executed.
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchslim.errors import FileFormatError, InvalidInputError
from torchslim.io.packed_bits import pack_bools, unpack_bools
from torchslim.models.arch import ARCH_ATTR, constructor_of, set_arch
from torchslim.module_swap import replace_modules

FORMAT, VERSION = "torchslim-model", 1
_ALLOWED_PREFIXES = ("torch.nn.", "torchvision.", "torchslim.", "timm.")
_REGISTERED: dict[str, type] = {}


def register_module(cls: type) -> type:
    """Allow a user's own module class in model files (its init args must be readable attributes)."""
    _REGISTERED[_qualname(cls)] = cls
    return cls


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


def init_args(m: nn.Module, cls: type | None = None) -> dict[str, Any]:
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


_MODULE_INTERNALS = frozenset(nn.Module().__dict__) - {"training"}


class _Unsaveable(Exception):
    """A value in a module's state that the manifest cannot hold."""


def _encode(v):
    """JSON form of a module attribute: plain values, tuples, str-keyed dicts, allowed module classes
    and partials of them (torchvision's `norm_layer`); anything else is `_Unsaveable`."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, list):
        return [_encode(x) for x in v]
    if isinstance(v, tuple):
        return {"__tuple__": [_encode(x) for x in v]}
    if isinstance(v, dict) and all(isinstance(k, str) for k in v):
        return {"__dict__": {k: _encode(x) for k, x in v.items()}}
    if isinstance(v, type) and issubclass(v, nn.Module) and _allowed(v):
        return {"__type__": _qualname(v)}
    if isinstance(v, functools.partial) and isinstance(v.func, type) and issubclass(v.func, nn.Module) \
            and _allowed(v.func):
        return {"__partial__": _qualname(v.func), "args": _encode(list(v.args)), "kwargs": _encode(v.keywords)}
    raise _Unsaveable(f"a {type(v).__name__} ({v!r:.60})")


def _decode(v):
    if isinstance(v, list):
        return [_decode(x) for x in v]
    if not isinstance(v, dict):
        return v
    if "__tuple__" in v:
        return tuple(_decode(x) for x in v["__tuple__"])
    if "__dict__" in v:
        return {k: _decode(x) for k, x in v["__dict__"].items()}
    if "__type__" in v:
        return _resolve(v["__type__"])
    if "__partial__" in v:
        return functools.partial(_resolve(v["__partial__"]), *_decode(v["args"]), **_decode(v["kwargs"]))
    raise FileFormatError(f"unknown value {v!r:.60} in a module's state")


def _allowed(cls: type) -> bool:
    try:
        return _resolve(_qualname(cls)) is cls
    except FileFormatError:
        return False


def _attributes(m: nn.Module) -> dict:
    """m's own attributes: not parameters, buffers, children, hooks, or torchslim's notes (`_torchslim_*`)."""
    return {k: v for k, v in m.__dict__.items()
            if k not in _MODULE_INTERNALS and k != "training" and not k.startswith("_torchslim")}


def _state(m: nn.Module) -> dict:
    out = {}
    for k, v in _attributes(m).items():
        try:
            out[k] = _encode(v)
        except _Unsaveable as e:
            raise _Unsaveable(f"attribute {k!r} holds {e}") from None
    return out


def _same_attributes(m: nn.Module, ref: nn.Module) -> bool:
    """Whether m holds every attribute of `ref` with an equal value. Attributes added to m later
    (reports) and values no file can hold (callables, runtime sessions) are not compared."""
    own = _attributes(m)
    for k, v in _attributes(ref).items():
        if k not in own:
            return False
        try:
            if _encode(own[k]) != _encode(v):
                return False
        except _Unsaveable:
            pass
    return True


def _tensor_slots(m: nn.Module) -> tuple[dict, dict]:
    """Own parameters and buffers: name -> [shape, dtype, requires_grad | persistent], or None."""
    params = {n: None if p is None else [list(p.shape), str(p.dtype).removeprefix("torch."), p.requires_grad]
              for n, p in m._parameters.items()}
    buffers = {n: None if b is None else [list(b.shape), str(b.dtype).removeprefix("torch."),
                                          n not in m._non_persistent_buffers_set]
               for n, b in m._buffers.items()}
    return params, buffers


def _rebuilds_from_args(m: nn.Module, args: dict) -> bool:
    """Whether `type(m)(**args)` gives the same attributes, parameter shapes and child names as m
    (built on the meta device: no memory, no initialisation)."""
    try:
        with torch.device("meta"):
            b = type(m)(**_args_for_call(args))
    except Exception:
        return False
    return (_same_attributes(m, b) and _tensor_slots(m) == _tensor_slots(b)
            and {n: c is None for n, c in m._modules.items()} == {n: c is None for n, c in b._modules.items()})


def _args_for_call(args: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) and k != "index" else v for k, v in args.items()}


def module_spec(m: nn.Module, where: str = "") -> dict:
    cls = type(m)
    qn = _qualname(cls)
    what = f"module {where or '(the model)'} of type {qn}"
    if not qn.startswith(_ALLOWED_PREFIXES) and qn not in _REGISTERED:
        raise InvalidInputError(f"cannot save {what}: register it with torchslim.io.register_module")
    if not _allowed(cls):
        raise InvalidInputError(f"cannot save {what}: the class cannot be found again by that name "
                                "(a class made at run time, e.g. by torch.nn.utils.parametrize?)")
    if m._forward_hooks or m._forward_pre_hooks:
        raise InvalidInputError(f"cannot save {what}: it has forward hooks, which a file cannot hold "
                                "(torch.nn.utils.prune? call prune.remove first)")
    spec: dict[str, Any] = {"type": qn}
    if type(m) in _CONTAINERS:
        spec["args"] = {}
    else:
        args = init_args(m)
        # torchslim's own (and registered) classes keep their init args as attributes by design
        if qn.startswith("torchslim.") or qn in _REGISTERED or _rebuilds_from_args(m, args):
            spec["args"] = args
        else:
            try:
                spec["state"] = _state(m)
            except _Unsaveable as e:
                raise InvalidInputError(f"cannot save {what}: its {e}, which a model file cannot describe; "
                                        "register a class whose init args are attributes") from None
            spec["params"], spec["buffers"] = _tensor_slots(m)
    children = {n: None if c is None else module_spec(c, f"{where}.{n}" if where else n)
                for n, c in m._modules.items() if c is not None or "state" in spec}
    if children:
        spec["children"] = children
    if not m.training:
        spec["eval"] = True
    return spec


def _from_state(cls: type, spec: dict) -> nn.Module:
    """Rebuild a module from its saved instance state, as unpickling would, without running its __init__."""
    m = cls.__new__(cls)
    nn.Module.__init__(m)
    m.__dict__.update({k: _decode(v) for k, v in spec["state"].items()})
    for n, slot in spec.get("params", {}).items():
        m.register_parameter(n, None if slot is None else nn.Parameter(
            torch.empty(slot[0], dtype=_dtype(slot[1])), requires_grad=slot[2]))
    for n, slot in spec.get("buffers", {}).items():
        m.register_buffer(n, None if slot is None else torch.empty(slot[0], dtype=_dtype(slot[1])),
                          persistent=True if slot is None else slot[2])
    return m


def _dtype(name: str) -> torch.dtype:
    dt = getattr(torch, name, None)
    if not isinstance(dt, torch.dtype):
        raise FileFormatError(f"unknown dtype {name!r}")
    return dt


def build_module(spec: dict) -> nn.Module:
    try:
        cls = _resolve(spec["type"])
        args = spec.get("args", {})
        children = spec.get("children", {})
        if "state" not in spec and (cls in (nn.Sequential, nn.ModuleList) or issubclass(cls, _CONTAINERS)):
            m = cls()
            for name, cs in children.items():
                m.add_module(name, build_module(cs))
            return m
        if "state" in spec:
            m = _from_state(cls, spec)
            for name, cs in children.items():
                m._modules[name] = None if cs is None else build_module(cs)
        else:
            m = cls(**_args_for_call(args))
            for name, cs in children.items():
                setattr(m, name, build_module(cs))
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
    if type(a) in _CONTAINERS:
        return True
    return init_args(a) == init_args(b) and _same_attributes(a, b) and _tensor_slots(a) == _tensor_slots(b)


def module_diff(model: nn.Module, base: nn.Module, prefix: str = "") -> dict[str, dict]:
    """{fqn: module_spec} of the outermost modules of `model` that differ from `base`'s (the constructor's)."""
    if not _same(model, base):
        return {prefix: module_spec(model, prefix)}
    out: dict[str, dict] = {}
    for name, child in model.named_children():
        out.update(module_diff(child, getattr(base, name), f"{prefix}.{name}" if prefix else name))
    return out


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
        arch = {k: v for k, v in arch.items() if k not in ("classes", "preprocess")}
        base = create_model(arch["name"], **arch.get("kwargs", {}))
        replaced = module_diff(model, base)
    else:
        replaced = {"": module_spec(model)}
    manifest = {"format": FORMAT, "version": VERSION, "arch": arch, "replaced": replaced,
                "input_size": list(input_size) if input_size else (arch or {}).get("input_size"),
                "metadata": metadata or {}}
    recorded = getattr(model, ARCH_ATTR, None) or {}
    for key in ("classes", "preprocess"):  # set by a run on image data (torchslim.data.folder)
        if recorded.get(key):
            manifest[key] = recorded[key]
    tensors = {k: v.detach().contiguous().cpu().clone() for k, v in model.state_dict().items()}
    tensors, manifest["packed_bits"] = pack_bools(tensors)
    manifest["sha256"] = tensor_digest(tensors)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"torchslim": json.dumps(manifest)})
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # the user's usual permissions, not the temporary file's 0600
    os.replace(tmp, path)
    return path


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for k in sorted(tensors):
        v = tensors[k].detach().cpu().contiguous()
        h.update(json.dumps([k, str(v.dtype), list(v.shape)]).encode())
        h.update(v.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


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


def load_model(path: str | os.PathLike, *, code: str | None = None) -> nn.Module:
    """Rebuild a model saved by `save_model`; outputs equal the saved model's.

    Args:
        code: for a network from the user's own code (`file.py:factory`), that code named again; a file
            alone never makes torchslim import anything (code named earlier in this process counts).
    """
    from safetensors.torch import load_file

    from torchslim.models import create_model
    from torchslim.models.user import constructor_to_build

    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    manifest = _read_manifest(path)
    arch = manifest.get("arch")
    if arch:
        arch = dict(arch, name=constructor_to_build(arch.get("name"), code, path))
    model = create_model(arch["name"], **arch.get("kwargs", {})) if arch else nn.Identity()
    # Outer modules first, so a replaced container's children are replaced inside it.
    for fqn in sorted(manifest["replaced"], key=lambda k: (k.count("."), k) if k else (-1, "")):
        model = replace_modules(model, {fqn: build_module(manifest["replaced"][fqn])})
    raw = load_file(str(path))
    if "sha256" in manifest and tensor_digest(raw) != manifest["sha256"]:  # older files have no digest
        raise FileFormatError(f"{path}: the tensor data does not match the file's sha256 digest "
                              "(the file is damaged; copy it again)")
    state = OrderedDict(unpack_bools(raw, manifest.get("packed_bits", {})))
    # The file was written from these classes: tell their _load_from_state_dict so (MNASNet needs it).
    state._metadata = {n: {"version": m._version} for n, m in model.named_modules()
                       if getattr(m, "_version", None) is not None}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise FileFormatError(f"{path}: weights do not fit the described architecture: {e}") from e
    if arch or manifest.get("input_size"):  # keep the input size even for a model without a constructor
        set_arch(model, (arch or {}).get("name"), (arch or {}).get("kwargs"), manifest.get("input_size"))
        for key in ("classes", "preprocess"):
            if manifest.get(key):
                getattr(model, ARCH_ATTR)[key] = manifest[key]
    model.eval()
    return model

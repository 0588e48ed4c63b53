"""A network from the user's own code: `path/to/file.py:factory` or `package.module:factory`.

    create_model("my_net.py:build", width=32)     # imports my_net.py, calls build(width=32)

A saved model records the spec, but loading it never imports anything on the file's word alone: the
user names the code again (`load(path, code="my_net.py:build")`, `--code` on the CLI), as
`trust_remote_code` works in transformers. Code named in this process (by `create_model` or `trust_code`)
counts as named, so torchslim's own stage files written in the same run load back.
"""
from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from pathlib import Path
from typing import Callable

from torch import nn

from torchslim.errors import InvalidInputError

_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")  # package.module, or function / Class.method
_LIBRARY_PREFIXES = ("torchvision", "timm")
_TRUSTED: set[str] = set()


def is_factory_spec(name: str) -> bool:
    """`file.py:factory` or `package.module:factory` (not `torchvision:<name>` / `timm:<name>`)."""
    if not isinstance(name, str) or name.count(":") < 1:
        return False
    where, _, func = name.rpartition(":")
    if where in _LIBRARY_PREFIXES or not _DOTTED.match(func):
        return False
    return where.endswith(".py") or bool(_DOTTED.match(where))


def trust_code(spec: str) -> None:
    """Allow model files whose constructor is `spec` to load in this process (it was named by the user)."""
    _TRUSTED.add(spec)


def is_trusted(spec: str) -> bool:
    return spec in _TRUSTED


def _import_file(path: Path):
    key = "torchslim_user_code." + re.sub(r"\W", "_", str(path.resolve()))
    if key in sys.modules:  # one module object per file: its classes stay the same across loads
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    sys.path.insert(0, str(path.resolve().parent))  # so the file can import its neighbours
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[key]
        raise
    finally:
        sys.path.remove(str(path.resolve().parent))
    return module


def resolve_factory(spec: str) -> Callable[..., nn.Module]:
    """The callable named by `spec`; a missing file, module or function is one clear error."""
    where, _, func = spec.rpartition(":")
    if where.endswith(".py"):
        path = Path(where).expanduser()
        if not path.is_file():
            raise InvalidInputError(f"model code {spec!r}: file {where!r} does not exist")
        module = _import_file(path)
    else:
        try:
            module = importlib.import_module(where)
        except ModuleNotFoundError as e:
            raise InvalidInputError(f"model code {spec!r}: module {where!r} cannot be imported ({e}); "
                                    "install it or add its folder to PYTHONPATH") from None
    obj = module
    for part in func.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise InvalidInputError(f"model code {spec!r}: {where} has no {func!r}")
    if not callable(obj):
        raise InvalidInputError(f"model code {spec!r}: {func!r} is not callable")
    return obj


def build_from_factory(spec: str, **kwargs) -> nn.Module:
    model = resolve_factory(spec)(**kwargs)
    if not isinstance(model, nn.Module):
        raise InvalidInputError(f"model code {spec!r} returned {type(model).__name__}, not a torch.nn.Module")
    trust_code(spec)
    return model


def constructor_to_build(name: str | None, code: str | None, where) -> str | None:
    """The constructor to rebuild a saved model with: its recorded `name`, unless that is user code the
    user has not named in this process; `code` (what they name now) replaces the recorded spec."""
    if not name or not is_factory_spec(name):
        return name
    if code:
        trust_code(code)
        return code
    if is_trusted(name):
        return name
    raise InvalidInputError(f"{where} holds a network built by user code {name!r}; torchslim never imports code "
                            f"because a file names it: name it yourself with --code {name} "
                            "(Python: torchslim.load(path, code=...))")

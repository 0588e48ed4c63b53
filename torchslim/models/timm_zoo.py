"""`timm:<name>`: the models of timm (PyTorch Image Models), an optional dependency.

Random initialisation only (never downloads); pass `weights=<file>` for a checkpoint.
"""
from __future__ import annotations

import fnmatch

from torch import nn

from torchslim.errors import InvalidInputError, MissingDependencyError, UnknownNameError

PREFIX = "timm:"


def _timm():
    try:
        import timm
    except ImportError:
        raise MissingDependencyError("timm models need the timm package: pip install 'torchslim[timm]'") from None
    return timm


def available() -> bool:
    try:
        import timm  # noqa: F401
    except ImportError:
        return False
    return True


def list_timm(pattern: str = "*") -> list[str]:
    """`timm:<name>` for every model timm registers that matches `pattern` (none without timm)."""
    if not available():
        return []
    return [PREFIX + n for n in _timm().list_models() if fnmatch.fnmatch(PREFIX + n, pattern)]


def input_size(name: str) -> tuple[int, int, int]:
    """(C, H, W) of the model's default pretrained configuration (224x224 RGB if it has none)."""
    from timm.models import get_pretrained_cfg

    _check(name)
    cfg = get_pretrained_cfg(name.removeprefix(PREFIX))
    return tuple(cfg.input_size) if cfg is not None and cfg.input_size else (3, 224, 224)


def _check(name: str) -> str:
    short = name.removeprefix(PREFIX)
    if not _timm().is_model(short):
        raise UnknownNameError(f"unknown timm model {short!r}; see `torchslim models 'timm:*'`")
    return short


def build(name: str, *, num_classes: int | None = None, pretrained: bool = False, **kwargs) -> nn.Module:
    """A timm model with random weights (`timm.create_model(name, pretrained=False)`)."""
    short = _check(name)
    if pretrained:
        raise InvalidInputError(f"{name}: torchslim never downloads weights; pass weights=<file> with a local checkpoint")
    if num_classes:
        kwargs["num_classes"] = num_classes
    return _timm().create_model(short, pretrained=False, **kwargs)

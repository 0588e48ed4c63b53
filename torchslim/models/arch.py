"""The constructor a model was built by, recorded on the model itself so that a model file
(`torchslim.io`) can name it and rebuild the model from it."""
from __future__ import annotations

from torch import nn

ARCH_ATTR = "_torchslim_arch"


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

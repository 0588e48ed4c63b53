"""torchslim: make trained PyTorch CNNs smaller and faster, and measure what was gained and lost.

Public verbs take a model and a config and return a model:
`analyze`, `prune`, `sparsify`, `decompose`, `quantize`, `distill`, `load`, `save`, `export`.
They are imported on first use, so `import torchslim` stays fast.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# verb -> "module:attribute"; each method's package owns its verb.
_VERBS = {
    "analyze": "torchslim.analysis:profile",
    "load": "torchslim.api:load",
    "save": "torchslim.api:save",
    "export": "torchslim.api:export",
}

__all__ = ["__version__", *_VERBS]


def __getattr__(name: str):
    if name in _VERBS:
        module, attr = _VERBS[name].split(":")
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'torchslim' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_VERBS))

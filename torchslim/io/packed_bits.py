"""Bool tensors (pruning masks) stored 8 to a byte in torchslim's model files: a masked model's file then
costs 1/32 more than the dense one instead of 1/4. The manifest's `packed_bits` ({name: shape}) says
which tensors were packed; every reader of the file unpacks them here (`load_model`, `read_state_dict`).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch


def pack_bools(tensors: dict) -> tuple[dict, dict]:
    """The tensors with each bool tensor packed, and {name: shape} of those packed."""
    shapes = {k: list(v.shape) for k, v in tensors.items() if v.dtype == torch.bool}
    for k in shapes:
        tensors[k] = torch.from_numpy(np.packbits(tensors[k].numpy().ravel()))
    return tensors, shapes


def unpack_bools(state: dict, shapes: dict) -> dict:
    for k, shape in shapes.items():
        n = math.prod(shape)
        state[k] = torch.from_numpy(np.unpackbits(state[k].numpy(), count=n).astype(bool)).reshape(shape)
    return state


def packed_shapes(path: str | Path) -> dict:
    """{name: shape} of the packed bool tensors of a torchslim model file ({} for any other safetensors)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    try:
        return dict(json.loads(meta["torchslim"]).get("packed_bits") or {})
    except (KeyError, ValueError, AttributeError):
        return {}

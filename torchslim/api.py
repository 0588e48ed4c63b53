"""`torchslim.load`, `save` and `export`: one entry point for every kind of model file."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from torchslim.errors import InvalidInputError


def save(model: nn.Module, path: str | os.PathLike, **kwargs) -> Path:
    """Save a model: `.slim` is the coded (quantized, Huffman) format, anything else pickle-free safetensors."""
    path = Path(path)
    if path.suffix == ".slim":
        from torchslim import encode

        return encode.save(model, path, **kwargs)
    if path.suffix != ".safetensors":
        path = path / "model.safetensors" if path.is_dir() or not path.suffix else path
    from torchslim.io import save_model

    return save_model(model, path, **kwargs)


def load(path: str | os.PathLike, *, code: str | None = None) -> nn.Module:
    """Load a model saved by torchslim (`.safetensors` with a manifest, or `.slim`); never unpickles.

    `code`: for a network from the user's own code, that code named again (`"my_net.py:build"`); a file
    alone never makes torchslim import anything."""
    path = Path(path)
    if path.suffix == ".slim":
        from torchslim import encode

        return encode.load(path, code=code)
    from torchslim.io import load_model

    return load_model(path, code=code)


def export(model: nn.Module, path: str | os.PathLike, example_input: torch.Tensor | None = None,
           input_size: tuple | None = None, format: str = "onnx") -> Path:
    """Export to ONNX (the format ONNX Runtime runs) or "openvino" (IR: path .xml + .bin); the input
    defaults to the recorded input size."""
    if format not in ("onnx", "openvino"):
        raise InvalidInputError(f"unknown export format {format!r}; torchslim exports 'onnx' and 'openvino'")
    if example_input is None:
        from torchslim.io import ARCH_ATTR

        size = input_size or (getattr(model, ARCH_ATTR, None) or {}).get("input_size")
        if not size:
            raise InvalidInputError("give example_input or input_size (C, H, W) to export this model")
        example_input = torch.randn(1, *size)
    if format == "openvino":
        from torchslim.openvino_export import to_openvino

        return to_openvino(model, example_input, path)
    from torchslim.onnx_export import to_onnx

    return to_onnx(model, example_input, path)

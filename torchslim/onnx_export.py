"""ONNX export that ONNX Runtime runs."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

OPSET = 18


def to_onnx(model: nn.Module, example_input: torch.Tensor, path: str | os.PathLike,
            dynamic_batch: bool = True) -> Path:
    """Export `model` (eval mode) to `path`, batch dimension dynamic; written atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    model = model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (example_input,), str(tmp), input_names=["input"], output_names=["output"],
            opset_version=OPSET, dynamo=False,
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None,
        )
    os.replace(tmp, path)
    return path

"""ONNX export that ONNX Runtime runs (and OpenVINO: `torchslim.openvino_export`)."""
from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from torchslim.module_swap import replace_modules

OPSET = 18


def to_onnx(model: nn.Module, example_input: torch.Tensor, path: str | os.PathLike,
            dynamic_batch: bool = True) -> Path:
    """Export `model` (eval mode) to `path`, batch dimension dynamic; written atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    model = model.eval()
    if hasattr(model, "onnx_bytes"):  # already an ONNX model (int8 through ONNX Runtime): write it as is
        tmp.write_bytes(model.onnx_bytes())
        os.replace(tmp, path)
        return path
    model = decoded(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (example_input,), str(tmp), input_names=["input"], output_names=["output"],
            opset_version=OPSET, dynamo=False,
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None,
        )
    os.replace(tmp, path)
    return path


def decoded(model: nn.Module) -> nn.Module:
    """`model`, or a copy whose coded layers (those with a `dense_module()`: k-means shared weights,
    binary masks) are plain layers holding the decoded weights, so an exported file stores each weight
    once, as a dense float tensor: never larger than the dense model's."""
    if not any(hasattr(m, "dense_module") for m in model.modules()):
        return model
    return replace_modules(copy.deepcopy(model), lambda m, fqn: m.dense_module() if hasattr(m, "dense_module") else None)


def verify_onnx(model: nn.Module, path: str | os.PathLike, example_input: torch.Tensor, *,
                rtol: float = 1e-3, atol: float = 1e-4) -> dict:
    """Run the ONNX file in ONNX Runtime on `example_input` and compare with PyTorch's outputs.

    Raises `InvalidInputError` naming the file and the largest difference when
    |ort - torch| > atol + rtol * |torch| anywhere; returns {"max_abs_diff", "max_rel_diff", "rtol", "atol",
    "batch", "argmax_agreement"} otherwise.

    Example:
        >>> path = to_onnx(model, x[:1], "model.onnx")
        >>> verify_onnx(model, path, x)["max_abs_diff"] < 1e-4
        True
    """
    from torchslim.onnx_runtime import onnx_session

    sess = onnx_session(str(path))
    got = sess.run(None, {sess.get_inputs()[0].name: example_input.cpu().numpy()})[0]
    return compare_outputs(model, example_input, got, path, "ONNX Runtime", rtol=rtol, atol=atol)


def compare_outputs(model: nn.Module, example_input: torch.Tensor, got, path, runtime: str, *,
                    rtol: float = 1e-3, atol: float = 1e-4) -> dict:
    """Compare a runtime's output `got` for `example_input` with the PyTorch model's (see `verify_onnx`)."""
    import numpy as np

    from torchslim.errors import InvalidInputError

    model = model.eval()
    with torch.no_grad():
        ref = model(example_input)
    ref = (ref[0] if isinstance(ref, (tuple, list)) else ref).detach().cpu().numpy()
    if got.shape != ref.shape:
        raise InvalidInputError(f"{path}: {runtime} output shape {got.shape} differs from PyTorch's {ref.shape}")
    diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    bound = atol + rtol * np.abs(ref)
    out = {"max_abs_diff": float(diff.max(initial=0.0)),
           "max_rel_diff": float((diff / np.maximum(np.abs(ref), 1e-12)).max(initial=0.0)),
           "rtol": rtol, "atol": atol, "batch": int(example_input.shape[0])}
    if ref.ndim == 2:
        out["argmax_agreement"] = float((got.argmax(1) == ref.argmax(1)).mean())
    if (diff > bound).any():
        raise InvalidInputError(
            f"{path}: {runtime} outputs differ from PyTorch's: max |diff| {out['max_abs_diff']:.3g} "
            f"exceeds atol {atol} + rtol {rtol} * |output|; pass larger tolerances for quantized models")
    return out

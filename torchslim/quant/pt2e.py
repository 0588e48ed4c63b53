"""int8 the PyTorch 2 way: export-based post-training quantization (PT2E) with torchao's
`X86InductorQuantizer`.

The model is captured with `torch.export` (batch dimension dynamic), annotated by the x86 Inductor
quantizer (uint8 activations, per-channel int8 weights, conv+BN+ReLU patterns), calibrated with
`prepare_pt2e`, and turned into a program of quantize/dequantize ops around float ops by
`convert_pt2e`. The result is an ordinary `torch.fx.GraphModule`: `torch.export.export` takes it
again (save it with `torch.export.save`), and `torch.compile` (Inductor, needs a C++ compiler) fuses
each dq -> conv -> q into an int8 oneDNN kernel. Eager calls run the same graph without that fusion
(reference numerics, not int8 speed). ONNX Runtime (`int8-ptq`) stays the deployment runtime;
benchmarks/bench_quant_pt2e.py compares the two.

PT2E left torch.ao for torchao (torch 2.14 ships no `quantize_pt2e`): `pip install torchao`
(the `pt2e` extra).
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from torchslim.errors import InvalidInputError, UnsupportedModelError
from torchslim.quant.int8_ptq import calibration_batches


@dataclass
class PT2EConfig:
    """calib_images: calibration images taken from `calib` (weights: per-channel int8, the quantizer's default)."""

    calib_images: int = 256


def _torchao():
    try:
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq
    except ImportError:
        raise InvalidInputError("method 'int8-pt2e' needs torchao: pip install 'torchslim[pt2e]' "
                                "(or pip install torchao)") from None
    return prepare_pt2e, convert_pt2e, xiq


def export_program(model: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    """`torch.export` with a dynamic batch dimension (traced at batch 2: batch 1 would be specialised)."""
    x = example[:1].expand(2, *example.shape[1:]).contiguous()
    try:
        return torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    except Exception as e:
        raise UnsupportedModelError(f"{type(model).__name__} cannot be captured by torch.export: "
                                    f"{type(e).__name__}: {str(e).splitlines()[0]}") from None


def quantize_pt2e(model: nn.Module, calib, config: PT2EConfig | None = None) -> torch.fx.GraphModule:
    """int8 program of `model`: export, annotate (x86 Inductor quantizer), calibrate, convert.

    Args:
        model: a float model (eval mode is used; input NCHW float). BN is folded by the conversion.
        calib: calibration data (DataBundle, DataLoader of (x, y), or tensors).

    Returns a GraphModule with quantize/dequantize ops; `torch.export.export(q, (x,))` and
    `torch.compile(q)` both accept it.

    Example:
        >>> q = quantize_pt2e(model, data.train)
        >>> torch.export.save(torch.export.export(q, (x,)), "model.pt2")
        >>> fast = torch.compile(q)  # int8 oneDNN kernels
    """
    cfg = config or PT2EConfig()
    prepare_pt2e, convert_pt2e, xiq = _torchao()
    batches = calibration_batches(calib, cfg.calib_images)
    model = copy.deepcopy(model).eval()
    quantizer = xiq.X86InductorQuantizer()
    quantizer.set_global(xiq.get_default_x86_inductor_quantization_config())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchao's deprecation notices about its own internals
        prepared = prepare_pt2e(export_program(model, batches[0]).module(), quantizer)
        with torch.no_grad():
            for x in batches:
                prepared(x)
        q = convert_pt2e(prepared)
    from torchao.quantization.pt2e import allow_exported_model_train_eval

    return allow_exported_model_train_eval(q)  # .eval() works (our evaluate calls it); the program is eval-only

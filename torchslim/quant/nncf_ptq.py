"""The `ov-nncf` int8 path: NNCF's post-training quantization (its MinMax placement of quantizers and
Fast Bias Correction) applied to torchslim's BN-folded fp32 ONNX model with torchslim's calibration
images, run by OpenVINO.

NNCF is the quantizer OpenVINO's own tools use, and it knows which tensors OpenVINO's int8 kernels want
quantized (both inputs of a residual Add, for instance); this path lets a torchslim-compressed model
(pruned, decomposed) be quantized exactly as a user of NNCF + OpenVINO would, inside torchslim's
measurement (`torchslim.quant.int8_ptq.quantize_int8` times it against the other paths). The result
is a QDQ ONNX model, saved and loaded like the other ONNX-backed paths. NNCF is optional
(`pip install nncf`, the `bench` extra).
"""
from __future__ import annotations

import torch

from torchslim.errors import InvalidInputError


def nncf_available() -> bool:
    try:
        import nncf  # noqa: F401
    except ImportError:
        return False
    return True


def nncf_qdq_onnx(onnx_path: str, batches: list[torch.Tensor], *, fast_bias_correction: bool = True) -> bytes:
    """NNCF-quantized QDQ ONNX bytes of the float model at `onnx_path`, calibrated on `batches`."""
    if not nncf_available():
        raise InvalidInputError("the int8 path 'ov-nncf' needs NNCF: pip install nncf (or torchslim[bench])")
    import logging

    import nncf
    import onnx

    logging.getLogger("nncf").setLevel(logging.ERROR)  # its progress bars and notes are not ours to print
    model = onnx.load(onnx_path)
    name = model.graph.input[0].name
    items = [{name: b[i:i + 1].numpy()} for b in batches for i in range(len(b))]  # one image a sample
    q = nncf.quantize(model, nncf.Dataset(items), subset_size=len(items),
                      preset=nncf.QuantizationPreset.PERFORMANCE, fast_bias_correction=fast_bias_correction)
    return q.SerializeToString()

"""OpenVINO: compile models for this CPU (fp32, bf16, int8 from QDQ graphs), export IR files, run them.

A model reaches OpenVINO through torchslim's own ONNX export (`torchslim.onnx_export.to_onnx`), so
everything that exports to ONNX, int8 QDQ models included, runs here too: OpenVINO turns each
QuantizeLinear/DequantizeLinear pair into a FakeQuantize and executes the convolutions around it in
int8 (its low-precision transformations), the way it runs models quantized by NNCF.
"""
from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from torchslim.machine import check_runtime, resolve_precision
from torchslim.onnx_runtime import OnnxRuntimeModule

_OV_PRECISION = {"fp32": "f32", "bf16": "bf16"}


@functools.lru_cache(maxsize=None)
def openvino_core():
    check_runtime("openvino")
    import openvino as ov

    return ov.Core()


def openvino_config(threads: int | None = None, precision: str = "fp32") -> dict:
    """CPU plugin settings for one latency-bound stream: `threads` threads, `precision` as asked.

    The precision is set explicitly: OpenVINO's default on CPUs with AMX is bf16, so "fp32" must say so.
    CPU pinning is off: pinned to a core that other processes also use, a ResNet-56 int8 call took 4-5x
    longer (5.5 vs 1.3 ms, measured interleaved on a shared 2-core machine); unpinned, it runs where the
    OS finds room, as ONNX Runtime's and PyTorch's threads do.
    """
    cfg = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": _OV_PRECISION[precision],
           "ENABLE_CPU_PINNING": False}
    if threads:
        cfg["INFERENCE_NUM_THREADS"] = int(threads)
    return cfg


def compile_openvino(source, *, threads: int | None = None, precision: str = "fp32", input_shape=None):
    """An OpenVINO CPU compiled model from an .xml/.onnx path or ONNX bytes; `precision` falls back to fp32
    where the CPU has no bf16 units (`torchslim.runtimes.resolve_precision`). `input_shape` fixes the
    shape (static shapes compile to faster kernels than the exported dynamic batch)."""
    core = openvino_core()
    model = core.read_model(source if isinstance(source, bytes) else str(source))
    if input_shape is not None:
        model.reshape(list(input_shape))
    precision, _ = resolve_precision(precision, "openvino")
    return core.compile_model(model, "CPU", openvino_config(threads, precision))


def run_openvino(compiled, x: np.ndarray) -> np.ndarray:
    """The first output of `compiled` on `x` (a copy: the request's buffer is reused by the next call)."""
    return compiled.create_infer_request().infer({0: x})[compiled.outputs[0]].copy()


def to_openvino(model: nn.Module, example_input: torch.Tensor, path: str | os.PathLike,
                dynamic_batch: bool = True) -> Path:
    """Export `model` to OpenVINO IR: `path` (.xml, the graph) and the .bin beside it (fp32 weights, or int8
    ones for a QDQ model); via torchslim's ONNX export; both files written atomically."""
    import openvino as ov

    from torchslim.onnx_export import to_onnx

    check_runtime("openvino")
    path = Path(path)
    if path.suffix != ".xml":
        path = path.with_suffix(".xml")
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        onnx_path = to_onnx(model, example_input, Path(tmp) / "model.onnx", dynamic_batch=dynamic_batch)
        ov.save_model(ov.convert_model(onnx_path), Path(tmp) / "model.xml", compress_to_fp16=False)
        os.replace(Path(tmp) / "model.bin", path.with_suffix(".bin"))  # weights first: the .xml names them
        os.replace(Path(tmp) / "model.xml", path)
    return path


def verify_openvino(model: nn.Module, path: str | os.PathLike, example_input: torch.Tensor, *,
                    rtol: float = 1e-3, atol: float = 1e-4) -> dict:
    """Run the IR (or ONNX) file in OpenVINO (fp32) on `example_input` and compare with PyTorch's outputs,
    as `torchslim.onnx_export.verify_onnx` does for ONNX Runtime; raises `InvalidInputError` when they differ."""
    from torchslim.onnx_export import compare_outputs

    compiled = compile_openvino(path, input_shape=tuple(example_input.shape))
    return compare_outputs(model, example_input, run_openvino(compiled, example_input.cpu().numpy()), path, "OpenVINO",
                           rtol=rtol, atol=atol)


class OpenVinoModule(OnnxRuntimeModule):
    """An nn.Module that runs a (quantized) ONNX model in OpenVINO on the CPU, compiled per input shape.

    The same ONNX bytes as `OnnxRuntimeModule` (saved and loaded the same way); `precision` "bf16" runs
    the float parts in bf16 where the CPU has bf16 units.
    """

    def __init__(self, nbytes: int, threads: int = 0, path_name: str = "ov", macs: int = 0, params: int = 0,
                 precision: str = "fp32"):
        super().__init__(nbytes, threads, path_name, macs, params)
        self.precision = precision
        self._compiled: dict = {}

    @classmethod
    def from_bytes(cls, data: bytes, threads: int = 0, path_name: str = "ov", macs: int = 0, params: int = 0,
                   precision: str = "fp32") -> "OpenVinoModule":
        m = cls(len(data), threads, path_name, macs, params, precision)
        m.onnx_model.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
        return m.eval()

    def _load_from_state_dict(self, *args, **kwargs):
        self._compiled = {}
        return super()._load_from_state_dict(*args, **kwargs)

    def request(self, shape: tuple):
        """The infer request of the model compiled for `shape` (compiled on first use, then kept)."""
        key = (self.onnx_model.data_ptr(), tuple(shape))
        if key not in self._compiled:
            self._compiled = {k: v for k, v in self._compiled.items() if k[0] == key[0]}
            self._compiled[key] = compile_openvino(self.onnx_bytes(), threads=self.threads or None,
                                                   precision=self.precision, input_shape=shape).create_infer_request()
        return self._compiled[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach().cpu().float().contiguous().numpy()
        return torch.from_numpy(self.request(x.shape).infer({0: x})[0].copy())

    def __getstate__(self):
        d = super().__getstate__()
        d["_compiled"] = {}
        return d


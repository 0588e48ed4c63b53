"""Running ONNX models in ONNX Runtime: a CPU session (`onnx_session`), and `OnnxRuntimeModule`, an
nn.Module that runs ONNX bytes it carries (int8 models quantized through ONNX Runtime).

At the bottom of the runtime modules: latency measurement, ONNX / OpenVINO export and int8 all use it.
"""
from __future__ import annotations

import torch
from torch import nn


def onnx_session(model: str | bytes, threads: int | None = None):
    """An ONNX Runtime CPU session for an .onnx path or ONNX bytes, with all graph optimisations and
    `threads` intra-op threads (default: ONNX Runtime's choice)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), so, providers=["CPUExecutionProvider"])


class OnnxRuntimeModule(nn.Module):
    """An nn.Module that runs a (quantized) ONNX model with ONNX Runtime's CPU execution provider.

    The model bytes live in a uint8 buffer, so `torchslim.io.save_model` / `.slim` files carry it.
    `reference` (fake-quant torch model) and `fp32` (BN-folded float model) are attached by
    `quantize_int8` (not saved).
    """

    def __init__(self, nbytes: int, threads: int = 0, path_name: str = "ort", macs: int = 0, params: int = 0):
        super().__init__()
        self.nbytes, self.threads, self.path_name = int(nbytes), int(threads), path_name
        # the float model's figures: the analysis cannot look inside an ONNX graph
        self.macs, self.params = int(macs), int(params)
        self.register_buffer("onnx_model", torch.zeros(self.nbytes, dtype=torch.uint8))
        self._session = None
        self._session_key = None

    @classmethod
    def from_bytes(cls, data: bytes, threads: int = 0, path_name: str = "ort", macs: int = 0,
                   params: int = 0) -> "OnnxRuntimeModule":
        m = cls(len(data), threads, path_name, macs, params)
        m.onnx_model.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
        return m.eval()

    def profile_macs(self, inp, out) -> int:  # torchslim.analysis.profile: MACs per image
        return self.macs

    def profile_params(self) -> tuple[int, int]:
        return self.params, self.params

    def onnx_bytes(self) -> bytes:
        """The ONNX model this module runs: exporting it is writing these bytes (torchslim.onnx_export)."""
        return self.onnx_model.numpy().tobytes()

    def _load_from_state_dict(self, *args, **kwargs):
        self._session = None  # new bytes: a new session on the next call
        return super()._load_from_state_dict(*args, **kwargs)

    def session(self):
        key = self.onnx_model.data_ptr()
        if self._session is None or key != self._session_key:
            self._session = onnx_session(self.onnx_bytes(), self.threads or None)
            self._session_key = key
        return self._session

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sess = self.session()
        out = sess.run(None, {sess.get_inputs()[0].name: x.detach().cpu().float().contiguous().numpy()})[0]
        return torch.from_numpy(out)

    def __getstate__(self):  # deepcopy / pickling: sessions are rebuilt from the bytes
        d = self.__dict__.copy()
        d["_session"] = None
        return d

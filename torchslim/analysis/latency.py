"""Latency measurement: warm-up, repeats, median and spread, on PyTorch eager, ONNX Runtime or OpenVINO,
in fp32 or (where the CPU has bf16 units) bf16.

Machines are shared and noisy: compare medians measured side by side in one run, never across runs.
Every result carries the machine's description and this machine's measured peak GEMM rate, so a
model's achieved MAC/s can be read as a fraction of the physical limit, and the CPU flags that decide
int8 and bf16 speed (`torchslim.runtimes.cpu_features`).
"""
from __future__ import annotations

import copy
import functools
import os
import platform
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from torchslim.errors import InvalidInputError
from torchslim.machine import RUNTIMES, check_runtime, cpu_features, resolve_precision  # noqa: F401 (re-export)
from torchslim.onnx_runtime import onnx_session


@dataclass
class LatencyResult:
    runtime: str
    batch_size: int
    threads: int
    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    repeats: int
    macs_per_image: int | None = None
    machine: dict = field(default_factory=dict)
    precision: str = "fp32"  # what ran: a bf16 request falls back to fp32 where it cannot run (see note)
    note: str | None = None

    @property
    def spread_ms(self) -> float:
        return self.p90_ms - self.p10_ms

    @property
    def achieved_gmacs(self) -> float | None:
        if not self.macs_per_image:
            return None
        return self.macs_per_image * self.batch_size / (self.median_ms / 1e3) / 1e9

    @property
    def fraction_of_peak(self) -> float | None:
        """Achieved FLOP/s over the GEMM peak, at most 1: a model timed above the GEMM's median caught
        a faster moment of a shared machine, it did not beat the hardware (a MAC is two FLOPs)."""
        peak = self.machine.get("peak_gemm_gflops")
        g = self.achieved_gmacs
        return None if g is None or not peak else min(2 * g / peak, 1.0)

    def to_dict(self) -> dict:
        return asdict(self) | {"spread_ms": self.spread_ms, "achieved_gmacs": self.achieved_gmacs,
                               "fraction_of_peak": self.fraction_of_peak}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=None)
def peak_gemm_flops(threads: int | None = None, n: int = 1024, repeats: int = 20, min_time_s: float = 0.3) -> float:
    """The fp32 GEMM rate (FLOP/s) of torch.mm on n x n matrices with `threads` threads: the ceiling.

    The median of at least `repeats` warm timings spanning at least `min_time_s`: the best single
    timing of a short run moved by 40 % from process to process on a shared machine.
    """
    with torch_threads(threads):
        a, b = torch.randn(n, n), torch.randn(n, n)
        for _ in range(3):  # warm-up: caches, thread pool, clocks
            torch.mm(a, b)
        times: list[float] = []
        while len(times) < repeats or sum(times) < min_time_s:
            t = time.perf_counter()
            torch.mm(a, b)
            times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times)


def machine_info(threads: int | None = None, with_peak: bool = True) -> dict:
    info = {
        "cpu": _cpu_model(), "cores": os.cpu_count(), "threads": threads or torch.get_num_threads(),
        "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
    }
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    try:
        import openvino

        info["openvino"] = openvino.__version__
    except ImportError:
        pass
    info["cpu_flags"] = [f for f, present in cpu_features().items() if present]
    if with_peak:
        info["peak_gemm_gflops"] = round(peak_gemm_flops(threads) / 1e9, 2)
    return info


class torch_threads:
    """`with torch_threads(n):` runs the block with n intra-op threads (None: unchanged), then restores them."""

    def __init__(self, n: int | None):
        self.n = n

    def __enter__(self):
        self.old = torch.get_num_threads()
        if self.n:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        torch.set_num_threads(self.old)


def time_calls(fn, warmup: int, repeats: int, min_time_s: float) -> list[float]:
    """Milliseconds of each timed call of `fn()` after `warmup` untimed ones: at least `repeats` calls
    and `min_time_s` seconds (at most 10 x repeats calls)."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats or (time.perf_counter() - start < min_time_s and len(times) < 10 * repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return times


def measure_latency(
    model: nn.Module | str,
    example_input: torch.Tensor | None = None,
    *,
    input_size: tuple | None = None,
    batch_size: int = 1,
    runtime: str = "torch",
    precision: str = "fp32",
    threads: int | None = None,
    warmup: int = 5,
    repeats: int = 30,
    min_time_s: float = 0.5,
    with_peak: bool = True,
) -> LatencyResult:
    """Median latency of one forward pass.

    Args:
        model: a module, or (runtime "onnxruntime" / "openvino") a path to an .onnx (or OpenVINO .xml) file.
        example_input: a batch; or `input_size` (C, H, W) with `batch_size`.
        runtime: "torch" (eager, no grad, eval mode), "onnxruntime" or "openvino" (the model is exported
            to ONNX first; OpenVINO compiles it for this input shape).
        precision: "fp32" or "bf16"; bf16 falls back to fp32 where the runtime or the CPU cannot run it
            (`torchslim.runtimes.resolve_precision`): the result's `precision` and `note` say what ran.
        threads: intra-op threads (default: torch's current setting).
        warmup / repeats / min_time_s: at least `repeats` timed runs and at least `min_time_s` seconds.
    """
    check_runtime(runtime)
    precision, note = resolve_precision(precision, runtime)
    if example_input is None:
        if input_size is None:
            raise InvalidInputError("give example_input or input_size")
        example_input = torch.randn(batch_size, *input_size)
    batch_size = example_input.shape[0]
    threads = threads or torch.get_num_threads()
    macs = None
    if isinstance(model, nn.Module):
        from torchslim.analysis.profile import profile

        macs = profile(model, example_input=example_input[:1]).macs
    if runtime == "torch":
        if not isinstance(model, nn.Module):
            raise InvalidInputError("runtime 'torch' needs an nn.Module")
        model.eval()
        x = example_input
        if precision == "bf16":  # oneDNN's bf16 kernels; non-float buffers (int8 bytes) stay as they are
            model, x = copy.deepcopy(model).to(torch.bfloat16), x.to(torch.bfloat16)
            if x.ndim == 4:  # the layout oneDNN's bf16 convolutions run in
                model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
        with torch_threads(threads), torch.inference_mode():
            times = time_calls(lambda: model(x), warmup, repeats, min_time_s)
    elif runtime == "openvino":
        from torchslim.openvino_export import compile_openvino

        with tempfile.TemporaryDirectory() as tmp:
            path = model
            if isinstance(model, nn.Module):
                from torchslim.onnx_export import to_onnx

                path = to_onnx(model, example_input, os.path.join(tmp, "model.onnx"))
            request = compile_openvino(path, threads=threads, precision=precision,
                                       input_shape=tuple(example_input.shape)).create_infer_request()
            feed = {0: example_input.numpy()}
            times = time_calls(lambda: request.infer(feed, share_inputs=True), warmup, repeats, min_time_s)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            path = model
            if isinstance(model, nn.Module):
                from torchslim.onnx_export import to_onnx

                path = to_onnx(model, example_input, os.path.join(tmp, "model.onnx"))
            sess = onnx_session(str(path), threads)
            name = sess.get_inputs()[0].name
            feed = {name: example_input.numpy()}
            times = time_calls(lambda: sess.run(None, feed), warmup, repeats, min_time_s)
    q = statistics.quantiles(times, n=10)
    return LatencyResult(runtime, batch_size, threads, statistics.median(times), q[0], q[-1],
                         statistics.fmean(times), len(times), macs, machine_info(threads, with_peak), precision, note)

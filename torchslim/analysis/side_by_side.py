"""Latency of several models measured side by side: calls alternate between the models in short blocks,
so every model sees the same machine load. On a shared machine this is the only fair way to quote a
speedup: two separate runs minutes apart can differ by more than the effect being measured."""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from torchslim.errors import InvalidInputError


def runner(model: nn.Module, x: torch.Tensor, runtime: str, threads: int, tmp: Path, name: str,
            precision: str = "fp32"):
    if runtime == "torch":
        model = model.eval()

        def run():
            with torch.inference_mode():
                model(x)
        return run
    if runtime == "onnxruntime":
        from torchslim.onnx_runtime import onnx_session
        from torchslim.onnx_export import to_onnx

        sess = onnx_session(str(to_onnx(model, x[:1], tmp / f"{name}.onnx")), threads)
        feed = {sess.get_inputs()[0].name: x.numpy()}
        return lambda: sess.run(None, feed)
    if runtime == "openvino":
        # the same ONNX file compiled by OpenVINO's CPU plugin; an int8 (QDQ) model runs its int8 kernels
        from torchslim.onnx_export import to_onnx
        from torchslim.openvino_export import compile_openvino

        compiled = compile_openvino(str(to_onnx(model, x[:1], tmp / f"{name}.onnx")), threads=threads,
                                    precision=precision, input_shape=tuple(x.shape))
        request, feed = compiled.create_infer_request(), x.numpy()
        return lambda: request.infer({0: feed})
    raise InvalidInputError(f"unknown runtime {runtime!r}; use torch, onnxruntime or openvino")


def alternate(runs: dict, *, rounds: int, calls: int, warmup: int = 0, min_time_s: float = 0.0) -> dict[str, list[float]]:
    """Milliseconds per call of each `runs` callable, timed in alternating blocks of `calls` calls: at least
    `rounds` blocks each, more until the whole takes `min_time_s` per callable. One sample per block."""
    for run in runs.values():
        for _ in range(warmup):
            run()
    samples: dict[str, list[float]] = {n: [] for n in runs}
    deadline = time.perf_counter() + min_time_s * len(runs)
    while runs and (min(len(v) for v in samples.values()) < rounds or time.perf_counter() < deadline):
        for n, run in runs.items():
            t = time.perf_counter()
            for _ in range(calls):
                run()
            samples[n].append((time.perf_counter() - t) * 1e3 / calls)
    return samples


def latency_side_by_side(models: dict[str, nn.Module], example_input: torch.Tensor, *, runtime: str = "onnxruntime",
                         threads: int = 1, rounds: int = 7, calls: int = 10, warmup: int = 3,
                         precision: str = "fp32") -> dict[str, dict]:
    """Median milliseconds per call of each model, the models alternating in blocks of `calls` calls.

    Args:
        models: name -> model (all take `example_input`).
        example_input: the batch every call runs (its batch size is the one measured).
        runtime: "onnxruntime" or "openvino" (each model exported to ONNX once) or "torch" (eager).
        precision: OpenVINO's inference precision for float layers ("fp32" or "bf16", which falls back
            to fp32 on a CPU without bf16 units); int8 layers of a quantized model run int8 either way.
        threads: intra-op threads for every model.
        rounds: blocks per model; each block's mean per call is one sample, the median is reported.

    Returns name -> {"ms": median, "p10": ..., "p90": ..., "samples": rounds}; use ratios of "ms".

    Example:
        >>> t = latency_side_by_side({"original": model, "pruned": small}, torch.randn(1, 3, 32, 32))
        >>> t["original"]["ms"] / t["pruned"]["ms"]   # measured speedup
    """
    if not models:
        raise InvalidInputError("latency_side_by_side needs at least one model")
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            runs = {n: runner(m, example_input, runtime, threads, Path(tmp), f"m{i}", precision)
                    for i, (n, m) in enumerate(models.items())}
            samples = alternate(runs, rounds=rounds, calls=calls, warmup=warmup)
    finally:
        torch.set_num_threads(old)
    out = {}
    for n, s in samples.items():
        q = statistics.quantiles(s, n=10) if len(s) > 1 else [s[0]] * 9
        out[n] = {"ms": statistics.median(s), "p10": q[0], "p90": q[-1], "samples": len(s)}
    return out

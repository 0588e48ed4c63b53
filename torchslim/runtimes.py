"""The runtimes a model is measured and deployed on (PyTorch eager, ONNX Runtime, OpenVINO), the CPU
features that decide their speed, and bf16 inference where the CPU has bf16 units.

    installed_runtimes()                     # ("torch", "onnxruntime", "openvino") where all are installed
    fastest_runtime(model, x)                # measured side by side on this machine: ("openvino", {...})
    resolve_precision("bf16", "openvino")    # ("fp32", "...no bf16 units...") on a CPU without them

What this machine can run (the runtime names, installed runtimes, CPU features, precisions) lives in
`torchslim.machine`, below everything that runs a model; this module adds the choice between them.
"""
from __future__ import annotations

from torchslim.errors import InvalidInputError
from torchslim.machine import (  # noqa: F401 (the public names of runtimes, kept importable from here)
    CPU_FLAGS, PRECISIONS, RUNTIMES, check_runtime, cpu_features, has_bf16, installed_runtimes, resolve_precision,
)

# The order `fastest_runtime` falls back to when it measures nothing: OpenVINO compiles int8 and bf16
# graphs for the CPU it runs on, ONNX Runtime runs the same ONNX files generically, eager PyTorch last.
PREFERENCE = ("openvino", "onnxruntime", "torch")


def fastest_runtime(model=None, example_input=None, *, threads: int | None = 1, precision: str = "fp32",
                    repeats: int = 10, min_time_s: float = 0.2) -> tuple[str, dict[str, float]]:
    """The installed runtime that runs `model` fastest here, and each one's median ms.

    Every installed runtime is timed on `example_input` in one run; without a model, the first installed
    runtime of `PREFERENCE` is returned unmeasured. A runtime that fails on the model is skipped.
    """
    installed = installed_runtimes()
    if model is None:
        return next(r for r in PREFERENCE if r in installed), {}
    from torchslim.analysis.latency import measure_latency

    medians: dict[str, float] = {}
    for runtime in installed:
        try:
            medians[runtime] = measure_latency(model, example_input, runtime=runtime, threads=threads,
                                               precision=precision, repeats=repeats, min_time_s=min_time_s,
                                               with_peak=False).median_ms
        except Exception:  # noqa: BLE001 - a runtime that cannot run this model is not the fastest
            continue
    if not medians:
        raise InvalidInputError("no installed runtime could run the model")
    return min(medians, key=medians.get), medians

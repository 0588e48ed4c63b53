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


# Runtimes within this fraction of the fastest count as tied: on a shared machine a few percent is noise,
# and the tie goes to the earlier runtime of PREFERENCE (OpenVINO's int8 and bf16 kernels are why).
TIE = 0.05


def fastest_runtime(model=None, example_input=None, *, threads: int | None = 1, precision: str = "fp32",
                    repeats: int = 10, min_time_s: float = 0.2) -> tuple[str, dict[str, float]]:
    """The installed runtime that runs `model` fastest here, and each one's median ms.

    Every installed runtime is timed on `example_input` in one run; runtimes within `TIE` (5 %) of the
    fastest are tied and the first of them in `PREFERENCE` wins. Without a model, the first installed
    runtime of `PREFERENCE` is returned unmeasured. A runtime that fails on the model is skipped.
    """
    installed = installed_runtimes()
    if model is None:
        return next(r for r in PREFERENCE if r in installed), {}
    medians = runtime_medians(model, example_input, installed, threads=threads, precision=precision,
                              repeats=repeats, min_time_s=min_time_s)
    if not medians:
        raise InvalidInputError("no installed runtime could run the model")
    best = min(medians.values())
    tied = [r for r in medians if medians[r] <= best * (1 + TIE)]
    return min(tied, key=lambda r: PREFERENCE.index(r) if r in PREFERENCE else len(PREFERENCE)), medians


def runtime_medians(model, example_input, runtimes, *, threads: int | None = 1, precision: str = "fp32",
                    repeats: int = 10, min_time_s: float = 0.2) -> dict[str, float]:
    """Median ms per call of `model` in each of `runtimes` that can run it, timed in alternating blocks."""
    import statistics
    import tempfile
    from pathlib import Path

    from torchslim.analysis.latency import torch_threads
    from torchslim.analysis.side_by_side import alternate, runner

    # Each runtime is built once, then timed in alternating blocks (as `latency_side_by_side`): timed one
    # after the other, a shared machine's load drift decides which runtime "wins".
    with tempfile.TemporaryDirectory() as tmp, torch_threads(threads or 1):
        runs = {}
        for i, runtime in enumerate(runtimes):
            try:
                run = runner(model, example_input, runtime, threads or 1, Path(tmp), f"r{i}", precision)
                run()
                runs[runtime] = run
            except Exception:  # noqa: BLE001 - a runtime that cannot run this model is not the fastest
                continue
        samples = alternate(runs, rounds=max(repeats // 2, 3), calls=2, min_time_s=min_time_s)
    return {r: statistics.median(v) for r, v in samples.items()}

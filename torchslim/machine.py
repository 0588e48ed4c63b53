"""What this machine can run: the runtimes installed (PyTorch eager, ONNX Runtime, OpenVINO), the CPU
features that decide their speed, and the precision each runtime really runs here.

bf16 runs as real bf16 only where the CPU has bf16 instructions (AVX512_BF16 or AMX-BF16): elsewhere
every runtime falls back to fp32 and says so, instead of emulating bf16 more slowly.

Everything that runs a model on a runtime (latency, ONNX and OpenVINO export, int8) imports this;
choosing the fastest runtime by measuring them is `torchslim.runtimes.fastest_runtime`.
"""
from __future__ import annotations

import functools
import importlib.util

from torchslim.errors import InvalidInputError

RUNTIMES = ("torch", "onnxruntime", "openvino")
PRECISIONS = ("fp32", "bf16")
# CPU flags (Linux /proc/cpuinfo names) that decide int8 and bf16 speed; reported in every benchmark.
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")
_MODULES = {"torch": "torch", "onnxruntime": "onnxruntime", "openvino": "openvino"}


def installed_runtimes() -> tuple[str, ...]:
    """The runtimes of `RUNTIMES` whose Python package can be imported here."""
    return tuple(r for r in RUNTIMES if importlib.util.find_spec(_MODULES[r]) is not None)


def check_runtime(runtime: str) -> str:
    if runtime not in RUNTIMES:
        raise InvalidInputError(f"unknown runtime {runtime!r}; use one of {', '.join(RUNTIMES)}")
    if runtime not in installed_runtimes():
        raise InvalidInputError(f"runtime {runtime!r} is not installed: pip install {_MODULES[runtime]}")
    return runtime


@functools.lru_cache(maxsize=None)
def _cpuinfo_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_features() -> dict[str, bool]:
    """Which of `CPU_FLAGS` this CPU has (all False where /proc/cpuinfo cannot be read)."""
    flags = _cpuinfo_flags()
    return {f: f in flags for f in CPU_FLAGS}


def has_bf16() -> bool:
    """Whether the CPU has bf16 arithmetic units (AVX512_BF16 or AMX-BF16)."""
    f = cpu_features()
    return f["avx512_bf16"] or f["amx_bf16"]


def resolve_precision(precision: str, runtime: str) -> tuple[str, str | None]:
    """The precision `runtime` will really run for the `precision` asked, and why it differs if it does."""
    if precision not in PRECISIONS:
        raise InvalidInputError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return "fp32", None
    if runtime == "onnxruntime":
        return "fp32", "ONNX Runtime's CPU provider has no bf16 convolution kernels: measured in fp32"
    if not has_bf16():
        return "fp32", "this CPU has no bf16 units (avx512_bf16 / amx_bf16): measured in fp32"
    return "bf16", None

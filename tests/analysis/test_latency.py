import pytest
import torch
from torch import nn

from torchslim import machine
from torchslim.analysis import measure_latency, saved_size_bytes
from torchslim.errors import InvalidInputError
from torchslim.runtimes import CPU_FLAGS


def small():
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime", "openvino"])
def test_latency_result_is_consistent(runtime):
    r = measure_latency(small(), input_size=(3, 16, 16), batch_size=2, runtime=runtime, repeats=5,
                        min_time_s=0.0, warmup=1)
    assert r.runtime == runtime and r.batch_size == 2 and r.repeats >= 5
    assert 0 < r.p10_ms <= r.median_ms <= r.p90_ms
    assert r.macs_per_image == 8 * 14 * 14 * 27 + 8 * 4
    assert r.machine["peak_gemm_gflops"] > 0 and 0 < r.fraction_of_peak < 1.5
    assert set(r.to_dict()) >= {"median_ms", "spread_ms", "achieved_gmacs", "machine"}
    assert r.precision == "fp32" and r.note is None
    assert set(r.machine["cpu_flags"]) <= set(CPU_FLAGS)


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime", "openvino"])
@pytest.mark.parametrize("bf16_units", [False, True])
def test_bf16_runs_where_the_cpu_has_bf16_units_and_says_when_it_falls_back(runtime, bf16_units, monkeypatch):
    # the CPU's flags are replaced, so neither outcome depends on the machine running the test
    flags = frozenset({"avx512_bf16"} if bf16_units else set())
    monkeypatch.setattr(machine, "_cpuinfo_flags", lambda: flags)
    r = measure_latency(small(), input_size=(3, 16, 16), runtime=runtime, precision="bf16", repeats=2,
                        min_time_s=0.0, warmup=1, with_peak=False)
    runs_bf16 = bf16_units and runtime != "onnxruntime"
    assert r.precision == ("bf16" if runs_bf16 else "fp32") and r.median_ms > 0
    assert (r.note is None) == runs_bf16
    if not bf16_units:
        assert "no bf16 units" in r.note or "ONNX Runtime" in r.note


def test_unknown_runtime():
    with pytest.raises(InvalidInputError, match="tensorrt"):
        measure_latency(small(), input_size=(3, 8, 8), runtime="tensorrt")
    with pytest.raises(InvalidInputError, match="precision 'fp8'"):
        measure_latency(small(), input_size=(3, 8, 8), precision="fp8")


def test_saved_size_counts_weights():
    m = small()
    n_bytes = sum(t.numel() * 4 for t in m.state_dict().values())
    assert n_bytes <= saved_size_bytes(m) < n_bytes + 4096


def test_gemm_peak_is_a_warm_median_and_no_fraction_exceeds_it(monkeypatch):
    from torchslim.analysis import latency

    clock = [0.0]
    durations = iter([1.0, 0.01, 0.01] + [0.01, 0.001] + [0.01] * 1000)  # cold, warm, one lucky timing
    monkeypatch.setattr(latency.torch, "mm", lambda a, b: clock.__setitem__(0, clock[0] + next(durations)))
    monkeypatch.setattr(latency.time, "perf_counter", lambda: clock[0])
    latency.peak_gemm_flops.cache_clear()
    try:
        assert latency.peak_gemm_flops(1, n=64) == pytest.approx(2 * 64**3 / 0.01)
    finally:
        latency.peak_gemm_flops.cache_clear()
    r = latency.LatencyResult("torch", 1, 1, 1.0, 1.0, 1.0, 1.0, 1, macs_per_image=10**9,
                              machine={"peak_gemm_gflops": 1.5})  # 2 GFLOP/s achieved: a noisy peak
    assert r.fraction_of_peak == 1.0

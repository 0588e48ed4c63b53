import pytest
import torch
from torch import nn

from torchslim.analysis import measure_latency, saved_size_bytes
from torchslim.errors import InvalidInputError


def small():
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_latency_result_is_consistent(runtime):
    r = measure_latency(small(), input_size=(3, 16, 16), batch_size=2, runtime=runtime, repeats=5,
                        min_time_s=0.0, warmup=1)
    assert r.runtime == runtime and r.batch_size == 2 and r.repeats >= 5
    assert 0 < r.p10_ms <= r.median_ms <= r.p90_ms
    assert r.macs_per_image == 8 * 14 * 14 * 27 + 8 * 4
    assert r.machine["peak_gemm_gflops"] > 0 and 0 < r.fraction_of_peak < 1.5
    assert set(r.to_dict()) >= {"median_ms", "spread_ms", "achieved_gmacs", "machine"}


def test_unknown_runtime():
    with pytest.raises(InvalidInputError, match="tensorrt"):
        measure_latency(small(), input_size=(3, 8, 8), runtime="tensorrt")


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

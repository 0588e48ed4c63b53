"""Which runtimes are installed, which one is fastest, and what precision each really runs."""
import pytest
from torch import nn

from torchslim import machine, runtimes
from torchslim.errors import InvalidInputError


def small():
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


def test_installed_runtimes_are_known_and_include_torch():
    assert "torch" in runtimes.installed_runtimes()
    assert set(runtimes.installed_runtimes()) <= set(runtimes.RUNTIMES)


def test_without_a_model_the_preferred_installed_runtime_is_chosen(monkeypatch):
    monkeypatch.setattr(runtimes, "installed_runtimes", lambda: ("torch", "onnxruntime", "openvino"))
    assert runtimes.fastest_runtime()[0] == "openvino"
    monkeypatch.setattr(runtimes, "installed_runtimes", lambda: ("torch", "onnxruntime"))
    assert runtimes.fastest_runtime()[0] == "onnxruntime"
    monkeypatch.setattr(runtimes, "installed_runtimes", lambda: ("torch",))
    assert runtimes.fastest_runtime()[0] == "torch"


def test_fastest_runtime_is_the_least_measured_median(monkeypatch):
    fake_ms = {"torch": 3.0, "onnxruntime": 2.0, "openvino": 1.0}

    def medians(model, x, installed, **kw):  # a runtime that fails on the model is left out
        return {r: fake_ms[r] for r in installed if not (r == "openvino" and "broken" in fake_ms)}

    monkeypatch.setattr(runtimes, "installed_runtimes", lambda: ("torch", "onnxruntime", "openvino"))
    monkeypatch.setattr(runtimes, "runtime_medians", medians)
    assert runtimes.fastest_runtime(small(), None) == ("openvino", fake_ms)
    fake_ms.update(broken=True, openvino=0.5)  # a runtime that fails on the model is skipped
    assert runtimes.fastest_runtime(small(), None) == ("onnxruntime", {"torch": 3.0, "onnxruntime": 2.0})
    del fake_ms["broken"]
    fake_ms.update(onnxruntime=1.0, openvino=1.04)  # within 5 %: a tie, and OpenVINO comes first in PREFERENCE
    assert runtimes.fastest_runtime(small(), None)[0] == "openvino"
    fake_ms.update(openvino=1.06)  # beyond it: measured slower
    assert runtimes.fastest_runtime(small(), None)[0] == "onnxruntime"


def test_fastest_runtime_measures_every_installed_runtime():
    import torch

    name, medians = runtimes.fastest_runtime(small(), torch.randn(1, 3, 16, 16), repeats=2, min_time_s=0.0)
    assert set(medians) == set(runtimes.installed_runtimes()) and medians[name] <= min(medians.values()) * (1 + runtimes.TIE)


def test_a_runtime_that_is_not_installed_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(machine, "installed_runtimes", lambda: ("torch",))
    with pytest.raises(InvalidInputError, match="pip install openvino"):
        runtimes.check_runtime("openvino")


def test_cpu_features_are_read_from_the_flags(monkeypatch):
    monkeypatch.setattr(machine, "_cpuinfo_flags", lambda: frozenset({"avx2", "amx_bf16", "amx_int8", "sse"}))
    f = runtimes.cpu_features()
    assert set(f) == set(runtimes.CPU_FLAGS) and f["amx_bf16"] and f["amx_int8"] and not f["avx512_vnni"]
    assert runtimes.has_bf16() and runtimes.resolve_precision("bf16", "openvino") == ("bf16", None)
    monkeypatch.setattr(machine, "_cpuinfo_flags", lambda: frozenset())
    assert not runtimes.has_bf16() and runtimes.resolve_precision("bf16", "torch")[0] == "fp32"


def test_openvino_config_asks_for_the_precision_explicitly():
    from torchslim.openvino_export import openvino_config

    assert openvino_config(1, "fp32") == {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
                                        "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1,
                                        "ENABLE_CPU_PINNING": False}
    assert openvino_config(None, "bf16")["INFERENCE_PRECISION_HINT"] == "bf16"

import pytest
import torch
from torch import nn

from torchslim.analysis import latency_side_by_side
from torchslim.errors import InvalidInputError
from torchslim.runtimes import installed_runtimes


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime",
                                     pytest.param("openvino", marks=pytest.mark.skipif(
                                         "openvino" not in installed_runtimes(), reason="OpenVINO not installed"))])
def test_side_by_side_medians_rank_a_model_that_does_far_more_work_as_slower(runtime):
    x = torch.randn(1, 16, 32, 32)
    small = nn.Conv2d(16, 4, 1)
    big = nn.Sequential(*[nn.Conv2d(16, 16, 3, padding=1) for _ in range(8)])  # ~300x the MACs
    t = latency_side_by_side({"small": small, "big": big}, x, runtime=runtime, rounds=3, calls=3)
    assert set(t) == {"small", "big"} and all(v["samples"] == 3 for v in t.values())
    assert t["big"]["ms"] > 3 * t["small"]["ms"]


def test_side_by_side_refuses_nothing_to_measure_and_unknown_runtimes():
    with pytest.raises(InvalidInputError, match="at least one"):
        latency_side_by_side({}, torch.randn(1, 3))
    with pytest.raises(InvalidInputError, match="tensorrt"):
        latency_side_by_side({"a": nn.Linear(3, 3)}, torch.randn(1, 3), runtime="tensorrt")

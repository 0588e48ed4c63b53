import pytest
import torch
from torch import nn

from torchslim.train import evaluate, resolve_device


def test_auto_device_follows_torchslim_device(monkeypatch):
    monkeypatch.setenv("TORCHSLIM_DEVICE", "cpu")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.delenv("TORCHSLIM_DEVICE")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_evaluate_runs_where_the_model_is_unless_told(monkeypatch):
    # a CPU model is evaluated on the CPU even where a GPU exists (the batches follow the model)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    model = nn.Linear(4, 3)
    loader = [(torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]))]
    assert evaluate(model, loader)["n"] == 5
    with pytest.raises(Exception):
        evaluate(model, loader, device="meta")  # an explicit device moves the model there
    assert next(model.parameters()).device.type == "meta"


def test_benchmarks_take_a_device_flag():
    import argparse

    from benchmarks.common import add_device_arg

    ap = argparse.ArgumentParser()
    add_device_arg(ap)
    with pytest.raises(SystemExit):
        ap.parse_args(["--device", "tpu"])
    assert ap.parse_args(["--device", "cpu"]).device == "cpu"

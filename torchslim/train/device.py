"""Where a model runs: one rule for fine-tuning, evaluation and distillation."""
from __future__ import annotations

import os

import torch
from torch import nn


def resolve_device(device, model: nn.Module | None = None) -> torch.device:
    """`device`, or for None / "auto": $TORCHSLIM_DEVICE if set (benchmarks' --device), else where the
    model's parameters are if not the CPU, else CUDA when available, else the CPU."""
    if device in (None, "auto") and os.environ.get("TORCHSLIM_DEVICE"):
        return torch.device(os.environ["TORCHSLIM_DEVICE"])
    if device in (None, "auto"):
        if model is not None:
            p = next(model.parameters(), None)
            if p is not None and p.device.type != "cpu":
                return p.device
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)

import pytest
import torch
from torch import nn


@pytest.fixture(scope="session")
def digits():
    from torchslim.data import get_data

    return get_data("digits", batch_size=64)


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 10))


@pytest.fixture(scope="session")
def trained_mlp(digits):
    """A digits MLP trained for a few epochs (about 95 % val accuracy), shared by the tests."""
    from torchslim.train import FitConfig, fit

    torch.manual_seed(0)
    m = mlp()
    fit(m, digits.train, config=FitConfig(epochs=8, lr=0.1, weight_decay=0, progress=False))
    return m.eval()

import pytest
import torch

from torchslim.data import get_data
from torchslim.models import create_model
from torchslim.train import FitConfig, fit


@pytest.fixture(scope="session")
def digits():
    return get_data("digits", batch_size=64)


@pytest.fixture(scope="session")
def digits_teacher(digits):
    """A digits_cnn trained for a few steps: good enough to be imitated."""
    torch.manual_seed(0)  # one thread: the autouse session fixture _one_thread is set up before this one
    t = create_model("digits_cnn", width=16)
    fit(t, digits.train, config=FitConfig(epochs=3, lr=0.05, progress=False, eval_every=0))
    return t.eval()

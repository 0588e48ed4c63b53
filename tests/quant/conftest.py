import pytest
import torch


@pytest.fixture(scope="session")
def digits():
    from torchslim.data import get_data

    return get_data("digits", batch_size=64)


@pytest.fixture(scope="session")
def trained_cnn(digits):
    """A small digits CNN (conv+BN+ReLU) trained for 3 epochs, shared by the tests."""
    from torchslim.models import create_model
    from torchslim.train import FitConfig, fit

    torch.manual_seed(0)
    m = create_model("digits_cnn", width=8)
    fit(m, digits.train, config=FitConfig(epochs=2, lr=0.05, progress=False))
    return m.eval()

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """The shared 2-core machine: small float64 solves are 10-100x slower with 2 contending threads."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)

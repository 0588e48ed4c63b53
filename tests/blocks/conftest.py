import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """These tests run tiny models: one intra-op thread is faster than two on a shared, loaded machine
    (oversubscribed threads spin), and is restored afterwards so other tests keep the default."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # 2 shared cores: two intra-op threads per process oversubscribe them and run ~4x slower.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)

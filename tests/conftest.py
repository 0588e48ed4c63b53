import os

import pytest
import torch

os.environ.setdefault("TORCHSLIM_NO_DOWNLOAD", "1")  # tests never download
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def shared_data_available(relative: str) -> bool:
    from torchslim.paths import find_data_file

    return find_data_file(relative) is not None


needs_cifar = pytest.mark.skipif(not shared_data_available("cifar10/test.npz"),
                                 reason="../shared/data/cifar10 not present")
needs_mnist = pytest.mark.skipif(not shared_data_available("mnist/test.npz"),
                                 reason="../shared/data/mnist not present")


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # Tests use tiny models on 2 shared cores: a second intra-op thread only adds contention.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

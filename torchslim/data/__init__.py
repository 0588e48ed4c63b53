"""Data sets by name, with deterministic train / val / test splits, as DataLoaders.

    data = get_data("cifar10", batch_size=128)     # ../shared/data/cifar10/*.npz
    for x, y in data.train: ...

Built in: `digits` (scikit-learn's 8x8 digits, never downloads), `mnist`, `cifar10`. Any
`torch.utils.data.Dataset` works through `from_datasets`.
"""
from torchslim.data.core import DATASETS, DataBundle, from_datasets, get_data

__all__ = ["DATASETS", "DataBundle", "from_datasets", "get_data"]

"""Data sets by name or by path, with deterministic train / val / test splits, as DataLoaders.

    data = get_data("cifar10", batch_size=128)     # ../shared/data/cifar10/*.npz
    data = get_data("photos/", preprocess="torchvision:resnet18")   # class folders, the model's preprocessing
    for x, y in data.train: ...

Validation protocols (`PROTOCOLS`): cifar10's `val` is a class-balanced half of its test set and
`heldout` the other half, because the shipped checkpoints were trained on all of train.npz; mnist's
`val` is carved from train.npz (its models are trained here).

Built in: `digits` (scikit-learn's 8x8 digits, never downloads), `mnist`, `cifar10`; folders of images
and `torchvision:<DataSet>` over a local root (`torchslim.data.folder`). Any `torch.utils.data.Dataset`
works through `from_datasets`.
"""
from torchslim.data.api import as_loaders, from_datasets, get_data
from torchslim.data.core import DATASETS, PROTOCOLS, SPLITS, DataBundle, as_batches
from torchslim.data.preprocess import Preprocess, preprocess_for

__all__ = ["DATASETS", "PROTOCOLS", "SPLITS", "DataBundle", "Preprocess", "as_batches", "as_loaders", "from_datasets",
           "get_data", "preprocess_for"]

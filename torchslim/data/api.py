"""The entry points of torchslim.data: a data set by name or by path (`get_data`), or a user's own
datasets (`from_datasets`), as a `DataBundle` of loaders; and `as_loaders`, which turns whatever a
verb's `data=` may be into the loaders it trains on."""
from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from torchslim.data.core import DATASETS, PROTOCOLS, DataBundle
from torchslim.errors import InvalidInputError, UnknownNameError


def _loaders(train, val, test, batch_size, eval_batch_size, num_workers, seed, *more_eval):
    g = torch.Generator().manual_seed(seed)
    kw = dict(num_workers=num_workers, persistent_workers=num_workers > 0)
    return (
        DataLoader(train, batch_size=batch_size, shuffle=True, generator=g, drop_last=False, **kw),
        DataLoader(val, batch_size=eval_batch_size, shuffle=False, **kw),
        DataLoader(test, batch_size=eval_batch_size, shuffle=False, **kw),
        *(DataLoader(d, batch_size=eval_batch_size, shuffle=False, **kw) for d in more_eval),
    )


def _limit(ds: Dataset, n: int | None) -> Dataset:
    """A fixed random subset of n items: the npz files are grouped by class, so a prefix would not do."""
    if n is None or n >= len(ds):
        return ds
    idx = np.sort(np.random.default_rng(12345).permutation(len(ds))[:n])
    return Subset(ds, idx.tolist())


def get_data(
    name: str | os.PathLike,
    *,
    data_dir: str | os.PathLike | None = None,
    batch_size: int = 128,
    eval_batch_size: int = 512,
    num_workers: int | None = None,
    seed: int = 0,
    augment: bool = True,
    download: bool = True,
    limit_train: int | None = None,
    limit_eval: int | None = None,
    protocol: str | None = None,
    preprocess=None,
    cache: bool = False,
    skip_bad_images: bool = False,
) -> DataBundle:
    """Loaders for a named data set (`DATASETS.names()`), a folder of images, or `torchvision:<Class>`.

    Args:
        name: `digits`, `mnist` or `cifar10`; a folder path (train/ + val/ or test/ of class folders, or
            class folders split here; see `torchslim.data.folder`); `torchvision:<Class>` over `data_dir`.
        num_workers: DataLoader workers (default: 0 for in-memory arrays, the cores for image files).
        preprocess: for image files: a `Preprocess`, a model, or a model name whose preprocessing to use
            (default: ImageNet statistics at 224 px).
        cache: image folders: decode and resize once into one memory-mapped uint8 file.
        skip_bad_images: skip (and count) corrupt or non-image files instead of failing.
        data_dir: directory with `<name>/{train,test}.npz`; else $TORCHSLIM_DATA, else ../shared/data.
        batch_size / eval_batch_size: for the train loader / the val and test loaders.
        seed: seeds the train loader's shuffling (the fine-tuning loop reseeds it per epoch).
        augment: standard augmentation on the train split (CIFAR: random crop 4 + flip).
        download: fall back to torchvision's downloader when files are missing (never in tests).
        limit_train / limit_eval: use a fixed random subset of N images (quick runs).
        protocol: how `val` is chosen (`PROTOCOLS`): cifar10 defaults to "test-half" (val is half of the
            test set, because the shipped checkpoints were trained on all of train.npz; `heldout` is
            the other half), mnist and digits to "train-split".
    """
    if name not in DATASETS and (str(name).startswith("torchvision:") or os.sep in str(name)
                                 or "/" in str(name) or os.path.exists(name)):
        from torchslim.data.folder import get_path_data

        return get_path_data(str(name), data_dir=data_dir, batch_size=batch_size, eval_batch_size=eval_batch_size,
                             num_workers=num_workers, seed=seed, augment=augment, limit_train=limit_train,
                             limit_eval=limit_eval, preprocess=preprocess, cache=cache,
                             skip_bad_images=skip_bad_images, loaders=_loaders)
    num_workers = num_workers or 0
    if name not in DATASETS:
        raise UnknownNameError(f"unknown dataset {name!r} and no such folder; known: {', '.join(DATASETS.names())}, "
                               "a folder of images (a path), or torchvision:<DataSet> with data_dir")
    spec = DATASETS.get(name)
    protocol = protocol or spec.protocol
    if protocol not in PROTOCOLS:
        raise InvalidInputError(f"unknown validation protocol {protocol!r}; use {' or '.join(PROTOCOLS)}")
    train, val, heldout, test = spec.load(data_dir=data_dir, augment=augment, download=download,
                                          protocol=protocol)
    train, val, test = _limit(train, limit_train), _limit(val, limit_eval), _limit(test, limit_eval)
    heldout = _limit(heldout, limit_eval)
    tr, va, te, ho = _loaders(train, val, test, batch_size, eval_batch_size, num_workers, seed, heldout)
    return DataBundle(name, tr, va, te, spec.num_classes, spec.input_size, spec.mean, spec.std,
                      heldout=ho, protocol=protocol, protocol_note=PROTOCOLS[protocol])


def from_datasets(train: Dataset, val: Dataset, test: Dataset | None = None, *, num_classes: int,
                  name: str = "custom", batch_size: int = 128, eval_batch_size: int = 512,
                  num_workers: int = 0, seed: int = 0) -> DataBundle:
    """Wrap a user's own datasets (items `(image_tensor, label)`) into the same API."""
    test = test if test is not None else val
    sample = train[0][0]
    if not isinstance(sample, torch.Tensor) or sample.ndim != 3:
        raise InvalidInputError(f"{name}: dataset items must be (C, H, W) tensors with a label, got {type(sample)}")
    loaders = _loaders(train, val, test, batch_size, eval_batch_size, num_workers, seed)
    return DataBundle(name, *loaders, num_classes, tuple(sample.shape))


def as_loaders(data) -> tuple:
    """(train, val) loaders from what a verb's `data=` may be: a DataBundle, a (train, val) pair, one
    loader (val None), or a data set name or path (`get_data`); None gives (None, None).
    (For the first N images as batches, see `torchslim.data.as_batches`.)"""
    if data is None:
        return None, None
    if isinstance(data, (str, os.PathLike)):
        data = get_data(data)
    if isinstance(data, DataBundle) or (hasattr(data, "train") and hasattr(data, "val")):
        return data.train, data.val
    if isinstance(data, (tuple, list)) and len(data) == 2 and not isinstance(data[0], torch.Tensor):
        return data[0], data[1]
    if not hasattr(data, "__iter__"):
        raise InvalidInputError(f"data must be a DataBundle, a DataLoader, (train, val) loaders or a data set "
                                f"name; got {type(data).__name__}")
    return data, None

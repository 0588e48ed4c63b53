"""What a data set is here (`DataBundle`: its loaders, `SPLITS` and validation `PROTOCOLS`) and the
built-in named data sets (`DATASETS`: digits, mnist, cifar10), read from npz arrays."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from torchslim.errors import DataNotFoundError, InvalidInputError
from torchslim.registry import Registry


class ArrayDataset(Dataset):
    """uint8 images (N, H, W) or (N, H, W, C) and labels, normalised on the fly, optional CIFAR augmentation.

    Augmentation (random crop after zero padding, horizontal flip) draws from torch's global RNG, so a
    seeded epoch is reproducible (the fine-tuning loop seeds each epoch).
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, mean, std, scale: float = 255.0,
                 crop_padding: int = 0, flip: bool = False):
        x = torch.as_tensor(x)
        if x.ndim == 3:
            x = x[:, None]
        else:
            x = x.permute(0, 3, 1, 2)
        self.x = x.contiguous()
        self.y = torch.as_tensor(y, dtype=torch.long)
        c = self.x.shape[1]
        self.mean = torch.tensor(mean, dtype=torch.float32).view(c, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(c, 1, 1)
        self.scale, self.crop_padding, self.flip = scale, crop_padding, flip

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        img = (self.x[i].float() / self.scale - self.mean) / self.std
        if self.crop_padding:
            p = self.crop_padding
            h, w = img.shape[1:]
            padded = torch.nn.functional.pad(img, (p, p, p, p))
            dy, dx = torch.randint(0, 2 * p + 1, (2,)).tolist()
            img = padded[:, dy:dy + h, dx:dx + w]
        if self.flip and torch.rand(()) < 0.5:
            img = img.flip(-1)
        return img, self.y[i]


@dataclass
class DataBundle:
    """Train / val / test loaders of one data set, with what a model needs to know about it."""

    name: str
    train: DataLoader
    val: DataLoader
    test: DataLoader
    num_classes: int
    input_size: tuple[int, int, int]
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    extra: dict = field(default_factory=dict)
    # Images no decision has seen: the half of the test set that `val` is not (protocol "test-half"),
    # else the test set itself. Headline figures are given on it and on the full test set.
    heldout: DataLoader | None = None
    protocol: str = "custom"
    protocol_note: str = ""
    classes: list[str] = field(default_factory=list)  # class names, for data read from folders
    preprocess: "object | None" = None  # torchslim.data.preprocess.Preprocess, for image files
    source: dict = field(default_factory=dict)  # path, layout, split and sizes of data read from a path

    def describe(self) -> dict:
        """What a report says about the data: where it came from, the classes, the split, the preprocessing."""
        out = {"data": self.source.get("path", self.name), "classes": self.num_classes,
               "input_size": list(self.input_size)}
        out.update({k: v for k, v in self.source.items() if k not in ("path", "classes")})
        out["preprocessing"] = (self.preprocess.describe() if self.preprocess is not None else
                                f"{self.name}'s own: mean {list(self.mean)}, std {list(self.std)}")
        if self.protocol_note:
            out["validation"] = f"{self.protocol}: {self.protocol_note}"
        return out

    def split(self, name: str) -> DataLoader:
        if name not in SPLITS:
            raise InvalidInputError(f"unknown split {name!r}; use {', '.join(SPLITS)}")
        if name == "heldout" and self.heldout is None:
            return self.test
        return getattr(self, name)

    def calibration_batches(self, n_images: int = 512, split: str = "train"):
        """First `n_images` of a split, unaugmented order, as a list of input batches (for calibration)."""
        return as_batches(self, n_images, split)


def as_batches(data, n_images: int, split: str = "train") -> list[torch.Tensor]:
    """The first `n_images` input images of `data`, as a list of batches: what calibration,
    reconstruction and BN statistics read. (For loaders to train on, see `torchslim.data.as_loaders`.)

    Args:
        data: a DataBundle (its `split`), a DataLoader or any iterable of (x, y) batches or of input
            tensors, or one input tensor.
    """
    if data is None:
        raise InvalidInputError("no data given: pass a DataBundle (torchslim.data.get_data), a DataLoader or "
                                "input batches")
    if isinstance(data, DataBundle) or (hasattr(data, "train") and hasattr(data, "split")):
        data = data.split(split)
    if isinstance(data, torch.Tensor):
        data = [data]
    out, seen = [], 0
    for batch in data:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        if not isinstance(x, torch.Tensor):
            raise InvalidInputError(f"batches must be input tensors or (x, y) pairs, got {type(x).__name__}")
        out.append(x[: n_images - seen])
        seen += len(out[-1])
        if seen >= n_images:
            break
    if not out:
        raise InvalidInputError("the data holds no images")
    return out


SPLITS = ("train", "val", "heldout", "test")


@dataclass(frozen=True)
class DatasetSpec:
    load: Callable[..., tuple[Dataset, Dataset, Dataset]]
    num_classes: int
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    protocol: str = "train-split"  # the default validation protocol (see PROTOCOLS)


# How `val` is chosen. A validation split must be disjoint from every image the model was trained
# on: the shipped CIFAR-10 checkpoints saw all of train.npz (ResNet-20 scores 99.8 % there), so for
# them decisions are made on half of the test set and the other half is held out.
PROTOCOLS = {
    "test-half": "train: all training images; val: a fixed class-balanced half of the test set (never seen by "
                 "models trained on the training images); heldout: the other half; test: the whole test set",
    "train-split": "train: the training images less a fixed validation split carved from them; val: that split; "
                   "heldout and test: the whole test set",
}


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def _split_indices(n: int, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[val_size:]), np.sort(perm[:val_size])


# ---------------------------------------------------------------- digits (scikit-learn, no download)
DIGITS_MEAN, DIGITS_STD = (0.305,), (0.378,)


def _load_digits(data_dir=None, augment=True, download=True, protocol="train-split"):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.images.astype(np.uint8)  # values 0..16
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(0).permutation(len(y))
    n_test, n_val = 360, 180
    test, val, train = perm[:n_test], perm[n_test:n_test + n_val], perm[n_test + n_val:]
    mk = lambda idx: ArrayDataset(x[idx], y[idx], DIGITS_MEAN, DIGITS_STD, scale=16.0)  # noqa: E731
    if protocol != "train-split":
        raise InvalidInputError(f"digits: protocol {protocol!r} not available; it has its own fixed train-split")
    return mk(train), mk(val), mk(test), mk(test)


DATASETS.register("digits")(DatasetSpec(_load_digits, 10, (1, 8, 8), DIGITS_MEAN, DIGITS_STD))


# ---------------------------------------------------------------- mnist and cifar10 from npz files
def _read_npz(name: str, split: str, data_dir, download: bool) -> tuple[np.ndarray, np.ndarray]:
    from torchslim.paths import cache_dir, data_dir_candidates, find_data_file

    path = find_data_file(f"{name}/{split}.npz", data_dir)
    if path is None:
        cached = cache_dir() / "data" / name / f"{split}.npz"
        if cached.is_file():
            path = cached
        elif download and os.environ.get("TORCHSLIM_NO_DOWNLOAD") != "1":
            path = _download_to_npz(name, split, cached)
    if path is None:
        tried = ", ".join(str(d) for d in data_dir_candidates(data_dir))
        raise DataNotFoundError(
            f"{name} {split} split not found: put {name}/{split}.npz (arrays x uint8, y uint8) in one of "
            f"{tried}, or pass --data-dir / set TORCHSLIM_DATA"
        )
    with np.load(path, allow_pickle=False) as f:
        return f["x"], f["y"]


def _download_to_npz(name: str, split: str, target) -> "os.PathLike | None":
    """torchvision's downloader, for users with internet; converted to the npz layout and cached."""
    import torchvision

    cls = {"mnist": torchvision.datasets.MNIST, "cifar10": torchvision.datasets.CIFAR10}[name]
    try:
        ds = cls(root=str(target.parent / "raw"), train=(split == "train"), download=True)
    except Exception:
        return None
    x = np.asarray(ds.data.numpy() if hasattr(ds.data, "numpy") else ds.data, dtype=np.uint8)
    y = np.asarray(ds.targets, dtype=np.uint8)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp.npz")
    np.savez(tmp, x=x, y=y)
    os.replace(tmp, target)
    return target


MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
# The reference CIFAR ResNet checkpoints were trained with ImageNet statistics: keep them.
CIFAR_MEAN, CIFAR_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def balanced_halves(y: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two fixed halves of a labelled set with the same number of images of each class (sorted indices)."""
    rng = np.random.default_rng(seed)
    first, second = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        first.append(idx[: len(idx) // 2])
        second.append(idx[len(idx) // 2:])
    return np.sort(np.concatenate(first)), np.sort(np.concatenate(second))


def _loader_for(name: str, mean, std, val_size: int, crop: int, flip: bool):
    def load(data_dir=None, augment=True, download=True, protocol="train-split"):
        """(train, val, heldout, test) datasets under `protocol`."""
        x, y = _read_npz(name, "train", data_dir, download)
        xt, yt = _read_npz(name, "test", data_dir, download)
        mk = lambda xs, ys: ArrayDataset(xs, ys, mean, std)  # noqa: E731
        test = mk(xt, yt)
        if protocol == "test-half":
            va, ho = balanced_halves(yt, seed=0)
            tr, val, heldout = np.arange(len(y)), mk(xt[va], yt[va]), mk(xt[ho], yt[ho])
        else:
            tr, va = _split_indices(len(y), val_size, seed=0)
            val, heldout = mk(x[va], y[va]), test
        train = ArrayDataset(x[tr], y[tr], mean, std, crop_padding=crop if augment else 0,
                             flip=flip and augment)
        return train, val, heldout, test

    return load


# LeNets are trained here, from train.npz less its validation split; the CIFAR-10 checkpoints saw all of it.
DATASETS.register("mnist")(DatasetSpec(_loader_for("mnist", MNIST_MEAN, MNIST_STD, 5000, 0, False),
                                       10, (1, 28, 28), MNIST_MEAN, MNIST_STD, protocol="train-split"))
DATASETS.register("cifar10")(DatasetSpec(_loader_for("cifar10", CIFAR_MEAN, CIFAR_STD, 5000, 4, True),
                                         10, (3, 32, 32), CIFAR_MEAN, CIFAR_STD, protocol="test-half"))

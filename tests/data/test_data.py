import numpy as np
import pytest
import torch

from tests.conftest import needs_cifar, needs_mnist
from torchslim.data import from_datasets, get_data
from torchslim.errors import DataNotFoundError, InvalidInputError, UnknownNameError


def test_digits_splits_are_disjoint_and_deterministic():
    a, b = get_data("digits"), get_data("digits")
    sizes = [len(a.train.dataset), len(a.val.dataset), len(a.test.dataset)]
    assert sum(sizes) == 1797 and sizes[2] == 360
    xa, _ = next(iter(a.test))
    xb, _ = next(iter(b.test))
    assert torch.equal(xa, xb) and xa.shape[1:] == (1, 8, 8)
    assert abs(float(xa.mean())) < 0.5  # normalised


@needs_mnist
def test_mnist_shapes_and_sizes():
    d = get_data("mnist", batch_size=32)
    assert (len(d.train.dataset), len(d.val.dataset), len(d.test.dataset)) == (55_000, 5_000, 10_000)
    x, y = next(iter(d.train))
    assert x.shape == (32, 1, 28, 28) and y.dtype == torch.long


@needs_cifar
def test_cifar_augmentation_and_subsets_cover_classes():
    d = get_data("cifar10", limit_train=500, limit_eval=500, batch_size=500)
    _, y = next(iter(d.test))
    assert len(np.unique(y.numpy())) == 10  # the files are grouped by class: subsets must not be
    ds = d.train.dataset.dataset
    assert ds.crop_padding == 4 and ds.flip
    torch.manual_seed(1)
    a = ds[0][0]
    torch.manual_seed(2)
    b = ds[0][0]
    assert a.shape == (3, 32, 32) and not torch.equal(a, b)


def test_missing_files_say_where_to_put_them(tmp_path, monkeypatch):
    import torchslim.paths

    monkeypatch.setattr(torchslim.paths, "data_dir_candidates", lambda explicit=None: [tmp_path])
    monkeypatch.setenv("TORCHSLIM_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataNotFoundError, match=r"mnist/train.npz.*--data-dir"):
        get_data("mnist", download=False)


def test_unknown_dataset_and_custom_datasets():
    with pytest.raises(UnknownNameError, match="digits"):
        get_data("imagenet")
    ds = torch.utils.data.TensorDataset(torch.randn(20, 3, 8, 8), torch.randint(0, 3, (20,)))
    bundle = from_datasets(ds, ds, num_classes=3, batch_size=5)
    assert bundle.input_size == (3, 8, 8) and len(bundle.train) == 4
    with pytest.raises(InvalidInputError, match="tensors"):
        from_datasets(torch.utils.data.TensorDataset(torch.randn(4, 5), torch.zeros(4)), ds, num_classes=3)


@needs_cifar
def test_cifar_validation_never_overlaps_what_the_checkpoints_were_trained_on():
    """The shipped checkpoints saw all of train.npz: val and heldout are the two class-balanced halves of test."""
    d = get_data("cifar10", augment=False)
    assert d.protocol == "test-half" and "half" in d.protocol_note
    pixels = lambda loader: {bytes(img.numpy()) for img in loader.dataset.x}  # noqa: E731
    val, heldout, test = pixels(d.val), pixels(d.heldout), pixels(d.test)
    assert len(d.train.dataset) == 50_000 and len(d.val.dataset) == len(d.heldout.dataset) == 5_000
    assert not val & heldout and val | heldout == test
    for split in (d.val, d.heldout):
        assert np.bincount(split.dataset.y.numpy()).tolist() == [500] * 10
    assert d.split("heldout") is d.heldout and get_data("cifar10").val.dataset.y.tolist() == d.val.dataset.y.tolist()
    own = get_data("cifar10", protocol="train-split", augment=False)
    assert (len(own.train.dataset), len(own.val.dataset)) == (45_000, 5_000) and own.split("heldout") is own.heldout
    with pytest.raises(InvalidInputError, match="protocol 'tests'.*test-half"):
        get_data("cifar10", protocol="tests")


@needs_mnist
def test_mnist_models_are_trained_here_so_val_is_carved_from_train():
    d = get_data("mnist")
    assert d.protocol == "train-split" and len(d.heldout.dataset) == 10_000

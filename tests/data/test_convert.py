"""One conversion of a verb's `data=`: `as_loaders` (to train on) and `as_batches` (the first N images)."""
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from torchslim.data import as_batches, as_loaders, get_data
from torchslim.errors import InvalidInputError


def loader(n=10, batch=4):
    return DataLoader(TensorDataset(torch.randn(n, 1, 4, 4), torch.arange(n) % 2), batch_size=batch)


def test_as_loaders_takes_a_bundle_a_pair_a_loader_or_a_name():
    digits = get_data("digits", batch_size=32)
    assert as_loaders(digits) == (digits.train, digits.val)
    a, b = loader(), loader()
    assert as_loaders((a, b)) == (a, b) and as_loaders(a) == (a, None) and as_loaders(None) == (None, None)
    train, val = as_loaders("digits")
    assert len(train.dataset) == len(digits.train.dataset) and val is not None
    with pytest.raises(InvalidInputError, match="int"):
        as_loaders(3)


def test_as_batches_takes_the_first_images_of_anything_that_holds_them():
    x = torch.randn(10, 1, 4, 4)
    assert [len(b) for b in as_batches(loader(), 6)] == [4, 2]
    assert [len(b) for b in as_batches([x[:3], x[3:]], 5)] == [3, 2]  # input tensors, no labels
    assert torch.equal(torch.cat(as_batches(x, 4)), x[:4])  # one tensor
    digits = get_data("digits", batch_size=32)
    assert torch.equal(torch.cat(as_batches(digits, 40, split="val")), torch.cat(digits.calibration_batches(40, "val")))
    with pytest.raises(InvalidInputError, match="no data"):
        as_batches(None, 4)
    with pytest.raises(InvalidInputError, match="no images"):
        as_batches([], 4)
    with pytest.raises(InvalidInputError, match="str"):
        as_batches([("a", 1)], 4)

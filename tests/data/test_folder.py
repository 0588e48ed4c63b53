"""Data by path: class folders, torchvision data sets over a local root, preprocessing from the model."""
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import needs_cifar, needs_mnist
from tests.data.image_folders import CIFAR_CLASSES, cifar_test_images, write_class_folders
from torchslim.data import get_data
from torchslim.data.preprocess import Preprocess, preprocess_for
from torchslim.errors import DataNotFoundError, InvalidInputError


@pytest.fixture(scope="module")
def cifar_pngs(tmp_path_factory):
    """20 lossless 32 px PNGs per class, one folder per class, with the npz images they came from."""
    if not _cifar():
        pytest.skip("../shared/data/cifar10 not present")
    x, y, idx = cifar_test_images(20)
    root = write_class_folders(tmp_path_factory.mktemp("pngs"), x, y, mixed=False)
    return root, x, y


def _cifar():
    from tests.conftest import shared_data_available

    return shared_data_available("cifar10/test.npz")


def test_single_folder_split_is_stratified_deterministic_and_recorded(cifar_pngs):
    root = cifar_pngs[0]
    a = get_data(root, num_workers=0, preprocess="resnet20")
    b = get_data(root, num_workers=0, preprocess="resnet20", augment=False)
    assert a.classes == list(CIFAR_CLASSES) and a.num_classes == 10
    for split in ("train", "val", "test"):
        assert getattr(a, split).dataset.files == getattr(b, split).dataset.files
        labels = getattr(a, split).dataset.labels
        assert torch.bincount(labels, minlength=10).tolist() == [{"train": 16, "val": 2, "test": 2}[split]] * 10
    files = [set(getattr(a, s).dataset.files) for s in ("train", "val", "test")]
    assert not (files[0] & files[1]) and not (files[0] & files[2]) and not (files[1] & files[2])
    d = a.describe()
    assert d["split"]["seed"] == 0 and d["sizes"] == {"train": 160, "val": 20, "test": 20}
    assert "stratified" in d["layout"] and "centre-crop 32" in d["preprocessing"]


@needs_cifar
def test_pretrained_resnet20_scores_on_pngs_what_it_scores_on_the_npz(cifar_pngs):
    from torchslim.data.core import CIFAR_MEAN, CIFAR_STD, ArrayDataset
    from torchslim.models import create_model

    root, x, y = cifar_pngs
    data = get_data(root, num_workers=0, preprocess="resnet20", augment=False)
    model = create_model("resnet20", pretrained=True).eval()
    files = [f for s in ("train", "val", "test") for f in getattr(data, s).dataset.files]
    order = {int(f.rsplit("/", 1)[1].split(".")[0]): f for f in files}
    from torch.utils.data import ConcatDataset, DataLoader

    folder = ConcatDataset([data.train.dataset, data.val.dataset, data.test.dataset])
    pos = {f: i for i, f in enumerate(files)}
    xs = torch.stack([folder[pos[order[i]]][0] for i in range(len(y))])
    ref = torch.stack([ArrayDataset(x, y, CIFAR_MEAN, CIFAR_STD)[i][0] for i in range(len(y))])
    assert torch.allclose(xs, ref, atol=1e-5)  # lossless PNG, resize 32 -> 32: the same tensors
    with torch.no_grad():
        right_folder = (model(xs).argmax(1) == torch.as_tensor(y)).sum().item()
        right_npz = (model(ref).argmax(1) == torch.as_tensor(y)).sum().item()
    assert right_folder == right_npz and right_npz > 0.8 * len(y)


def test_split_folders_and_classes_from_train(tmp_path):
    for split, cls in (("train", "cat"), ("train", "dog"), ("val", "dog")):
        (tmp_path / split / cls).mkdir(parents=True, exist_ok=True)
        for i in range(2):
            Image.new("RGB", (10 + i, 12), (i * 100, 0, 0)).save(tmp_path / split / cls / f"{i}.png")
    d = get_data(tmp_path, num_workers=0)
    assert d.classes == ["cat", "dog"] and len(d.val.dataset) == 2 and d.val.dataset.files == d.test.dataset.files
    assert d.val.dataset.labels.tolist() == [1, 1]
    assert d.describe()["split"] == {"train": "train/", "val": "val/", "test": "val/"}
    x, _ = next(iter(d.test))
    assert x.shape == (2, 3, 224, 224)  # default: ImageNet preprocessing at 224


def test_any_colour_mode_and_format_becomes_rgb(tmp_path):
    modes = [("L", "jpg"), ("RGBA", "webp"), ("CMYK", "jpg"), ("P", "png"), ("I;16", "png"), ("1", "png")]
    for i, (mode, ext) in enumerate(modes):
        folder = tmp_path / f"c{i % 2}"
        folder.mkdir(exist_ok=True)
        Image.new("RGB", (20 + 5 * i, 30), (200, 50, 10)).convert(mode).save(folder / f"{i}.{ext}")
    p = Preprocess((3, 16, 16), 16, (0.0,) * 3, (1.0,) * 3)
    d = get_data(tmp_path, num_workers=0, preprocess=p, augment=False)
    for ds in (d.train.dataset, d.val.dataset, d.test.dataset):
        for i in range(len(ds)):
            assert ds[i][0].shape == (3, 16, 16)


@needs_cifar
def test_cache_gives_the_same_eval_tensors_and_is_reused(cifar_pngs, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHSLIM_CACHE", str(tmp_path))
    root = cifar_pngs[0]
    plain = get_data(root, num_workers=0, preprocess="torchvision:resnet18", augment=False)
    cached = get_data(root, num_workers=0, preprocess="torchvision:resnet18", augment=False, cache=True)
    path = cached.source["cache"]
    assert np.load(path, mmap_mode="r").shape == (200, 256, 256, 3)
    a, b = plain.test.dataset[3][0], cached.test.dataset[3][0]
    assert a.shape == b.shape == (3, 224, 224) and (a - b).abs().mean() < 0.02  # resize once vs twice
    again = get_data(root, num_workers=0, preprocess="torchvision:resnet18", cache=True)
    assert again.source["cache"] == path and again.train.dataset[0][0].shape == (3, 224, 224)


def test_preprocessing_follows_the_model():
    tv = preprocess_for("torchvision:resnet18")
    assert tv.input_size == (3, 224, 224) and tv.resize == 256 and tv.mean == (0.485, 0.456, 0.406)
    assert "transforms()" in tv.source
    r20 = preprocess_for("resnet20")
    assert r20.input_size == (3, 32, 32) and r20.resize == 32 and r20.train_augment == "pad-crop+flip"
    pytest.importorskip("timm")
    vit = preprocess_for("timm:vit_base_patch16_224")  # timm's pretrained_cfg: crop_pct 0.9, bicubic, 0.5 stats
    assert vit.resize == 248 and vit.interpolation == "bicubic" and vit.mean == (0.5, 0.5, 0.5)
    own = preprocess_for("net.py:build", input_size=(1, 64, 64), mean=(0.5,), std=(0.25,))
    assert own.input_size == (1, 64, 64) and own.mode == "L" and own.std == (0.25,) and own.resize == 73


def _write_idx(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack(">HBB", 0, 8, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes())


@needs_mnist
def test_torchvision_data_set_class_over_a_local_root(tmp_path):
    from torchslim.paths import find_data_file

    with np.load(find_data_file("mnist/test.npz")) as f:
        x, y = f["x"][:200], f["y"][:200].astype(np.uint8)
    raw = tmp_path / "MNIST" / "raw"
    for prefix, (xs, ys) in (("train", (x[:150], y[:150])), ("t10k", (x[150:], y[150:]))):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", xs)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", ys)
    d = get_data("torchvision:MNIST", data_dir=tmp_path, num_workers=0, preprocess="lenet5")
    assert d.num_classes == 10 and d.input_size == (1, 28, 28)
    assert (len(d.train.dataset), len(d.val.dataset), len(d.test.dataset)) == (135, 15, 50)
    xb, yb = next(iter(d.test))
    assert xb.shape == (50, 1, 28, 28) and yb.tolist() == y[150:].tolist()
    with pytest.raises(DataNotFoundError, match="never downloads"):
        get_data("torchvision:CIFAR100", data_dir=tmp_path, num_workers=0)


# ------------------------------------------------------------------------------------ bad input
def _tree(root, layout: dict):
    for rel, content in layout.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            p.mkdir(exist_ok=True)
        elif content == "png":
            Image.new("RGB", (8, 8)).save(p)
        else:
            p.write_bytes(content)
    return root


@pytest.mark.parametrize("layout, needle", [
    ({}, "holds no class folders"),
    ({"a/x.png": "png", "b": None}, "class folder .*b is empty"),
    ({"train/a/x.png": "png", "val/a/x.png": "png", "val/zebra/y.png": "png"}, "class 'zebra' is not in"),
    ({"a/x.png": "png", "a/notes.txt": b"hello"}, "notes.txt: not an image file"),
    ({"a/x.png": "png", "a/broken.jpg": b"\xff\xd8\xff\xe0 truncated"}, "broken.jpg: cannot be decoded"),
    ({"train/a/x.png": "png"}, "no val/ or test/"),
])
def test_bad_folders_fail_in_one_line(tmp_path, layout, needle):
    root = _tree(tmp_path / "data", layout)
    root.mkdir(exist_ok=True)
    with pytest.raises(InvalidInputError, match=needle) as e:
        get_data(root, num_workers=0)
    assert "\n" not in str(e.value)


def test_missing_path_and_skipping_bad_images(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        get_data(tmp_path / "nope", num_workers=0)
    layout = {f"{c}/{i}.png": "png" for c in "ab" for i in range(4)}
    root = _tree(tmp_path / "d", {**layout, "a/bad.png": b"not a png", "b/readme.md": b"# hi"})
    d = get_data(root, num_workers=0, skip_bad_images=True)
    assert d.source["skipped_bad_images"] == 2
    assert sum(len(getattr(d, s).dataset) for s in ("train", "val", "test")) == 8

"""Image data by path: class folders on disk, or torchvision's data set classes over a local root.

Layouts (`get_data(PATH)`, `--data PATH`, recipes' `data: {path: PATH}`):

    photos/train/<class>/*.jpg + photos/val/<class>/... (or test/)   the split is the folders'
    photos/<class>/*.jpg                                             split here: stratified, seeded
    torchvision:CIFAR100 (root = data_dir)                           the class's own train/test

Every image is checked (opened and decoded at reduced size) before anything runs, so a corrupt or
non-image file fails in one line naming it, or is skipped and counted with `skip_bad_images`.
With `cache=True` the decoded, resized images go once into one uint8 `.npy` file, memory-mapped by
every epoch and worker after that.
"""
from __future__ import annotations

import hashlib
import inspect
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from torchslim.data.core import DataBundle
from torchslim.data.preprocess import Preprocess
from torchslim.errors import DataNotFoundError, InvalidInputError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
SPLIT_NAMES = {"train": ("train", "training"), "val": ("val", "valid", "validation"), "test": ("test",)}
SINGLE_FOLDER_FRACTIONS = (0.8, 0.1, 0.1)  # train / val / test of a folder of class folders


def default_workers() -> int:
    """DataLoader workers for image files: the cores, up to 8 (decoding is the bottleneck on a CPU)."""
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def _open_image(path, mode: str, draft: int | None = None):
    from PIL import Image

    with Image.open(path) as im:
        if draft:  # JPEG: decode at 1/2, 1/4, 1/8 scale when that still covers `draft` pixels
            im.draft("RGB" if mode == "RGB" else "L", (draft, draft))
        if im.mode == "I;16" or im.mode == "I":  # 16-bit grayscale: keep the top 8 bits
            im = im.point(lambda v: v / 256).convert("L")
        return im.convert(mode)


class ImageFiles(Dataset):
    """Image files with labels, decoded by PIL (any size and colour mode) into `mode`, then `transform`."""

    def __init__(self, files: list[str], labels: list[int], transform, mode: str = "RGB", draft: int | None = None):
        self.files, self.labels = list(files), torch.as_tensor(labels, dtype=torch.long)
        self.transform, self.mode, self.draft = transform, mode, draft

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i):
        return self.transform(_open_image(self.files[i], self.mode, self.draft)), self.labels[i]


class CachedImages(Dataset):
    """Rows of a memory-mapped uint8 (N, S, S, C) file, transformed as tensors (opened lazily per worker)."""

    def __init__(self, path: Path, rows: list[int], labels: list[int], transform):
        self.path, self.rows = Path(path), list(rows)
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.transform, self._array = transform, None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        img = torch.from_numpy(np.array(self._array[self.rows[i]])).permute(2, 0, 1)
        return self.transform(img), self.labels[i]

    def __getstate__(self):
        return {**self.__dict__, "_array": None}


class _Decode(Dataset):
    def __init__(self, files, mode, transform, draft):
        self.files, self.mode, self.transform, self.draft = files, mode, transform, draft

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        return self.transform(_open_image(self.files[i], self.mode, self.draft)).permute(1, 2, 0).contiguous()


# ------------------------------------------------------------------------------------------ scanning
def _class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _scan(root: Path, classes: list[str]) -> tuple[list[str], list[int]]:
    files, labels = [], []
    for label, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            continue
        found = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
        if not found:
            raise InvalidInputError(f"class folder {folder} is empty: put its images there or remove it")
        files += [str(p) for p in found]
        labels += [label] * len(found)
    return files, labels


def _check_image(path: str, mode: str) -> str | None:
    """None if `path` decodes as an image, else why not."""
    if Path(path).suffix.lower() not in IMAGE_SUFFIXES:
        return f"not an image file (suffix {Path(path).suffix or 'none'!r}; images: JPEG, PNG, WebP, BMP, GIF, TIFF)"
    try:
        _open_image(path, mode, draft=64).load()
    except Exception as e:  # PIL raises many types for broken files
        return f"cannot be decoded as an image ({type(e).__name__}: {e})"
    return None


def check_images(files: list[str], labels: list[int], mode: str, skip_bad: bool, workers: int):
    """Decode every image once (JPEGs at reduced size); fail on the first bad file, or drop bad ones."""
    with ThreadPoolExecutor(max(1, workers)) as pool:  # PIL releases the GIL while decoding
        problems = list(pool.map(lambda f: _check_image(f, mode), files))
    bad = [(f, why) for f, why in zip(files, problems) if why]
    if bad and not skip_bad:
        f, why = bad[0]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise InvalidInputError(f"{f}: {why}{more}; remove it, or pass --skip-bad-images to skip such files")
    keep = [i for i, why in enumerate(problems) if not why]
    return [files[i] for i in keep], [labels[i] for i in keep], len(bad)


def _stratified_split(labels: list[int], fractions, seed: int) -> list[np.ndarray]:
    """Indices of train / val / test: each class split in the same proportions by a seeded permutation."""
    labels = np.asarray(labels)
    parts: list[list[int]] = [[], [], []]
    rng = np.random.default_rng(seed)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n = len(idx)
        # at least one image per class in each held-out split, while the class keeps one for training
        n_val, n_test = ((max(round(n * f), 1 if f > 0 else 0) if n >= 3 else 0) for f in fractions[1:])
        parts[1] += idx[:n_val].tolist()
        parts[2] += idx[n_val:n_val + n_test].tolist()
        parts[0] += idx[n_val + n_test:].tolist()
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def _find_split_dirs(root: Path) -> dict[str, Path]:
    out = {}
    for split, names in SPLIT_NAMES.items():
        for n in names:
            if (root / n).is_dir():
                out[split] = root / n
                break
    return out


def scan_folder(root: str | os.PathLike, *, mode: str = "RGB", seed: int = 0, skip_bad_images: bool = False,
                check: bool = True, workers: int | None = None) -> dict:
    """Files, labels and class names of each split of an image folder, with how it was split.

    Returns {"classes", "train": (files, labels), "val": ..., "test": ..., "info": {...}}.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise DataNotFoundError(f"data folder {str(root)!r} does not exist")
    if not root.is_dir():
        raise InvalidInputError(f"--data {str(root)!r} is a file; give a folder of class folders "
                                "(or train/ and val/ folders of class folders)")
    dirs = _find_split_dirs(root)
    info: dict = {"path": str(root.resolve())}
    if "train" in dirs:
        held_out = [s for s in ("val", "test") if s in dirs]
        if not held_out:
            raise InvalidInputError(f"{root}: has train/ but no val/ or test/ folder next to it")
        classes = [p.name for p in _class_folders(dirs["train"])]
        if not classes:
            raise InvalidInputError(f"{dirs['train']} holds no class folders (one folder per class of images)")
        splits = {"train": _scan(dirs["train"], classes)}
        for s in held_out:
            extra = sorted({p.name for p in _class_folders(dirs[s])} - set(classes))
            if extra:
                raise InvalidInputError(f"{dirs[s] / extra[0]}: class {extra[0]!r} is not in {dirs['train']}")
            splits[s] = _scan(dirs[s], classes)
            if not splits[s][0]:
                raise InvalidInputError(f"{dirs[s]} holds no images in class folders")
        splits["val"] = splits.get("val") or splits["test"]  # one held-out folder serves as both
        splits["test"] = splits.get("test") or splits["val"]
        info["split"] = {s: f"{(dirs.get(s) or dirs.get('val') or dirs['test']).name}/" for s in SPLIT_NAMES}
        info["layout"] = "split folders (" + ", ".join(f"{s} {d}" for s, d in info["split"].items()) + ")"
    else:
        classes = [p.name for p in _class_folders(root)]
        if not classes:
            raise InvalidInputError(f"{root} holds no class folders: put each class's images in its own "
                                    "sub-folder (photos/cat/*.jpg, photos/dog/*.jpg), or use train/ and val/")
        files, labels = _scan(root, classes)
        splits = {"all": (files, labels)}
        info["layout"] = "class folders, split here"
    workers = default_workers() if workers is None else workers
    skipped = 0
    if check:
        checked: dict[int, tuple] = {}  # a held-out folder serving as val and test is checked once
        for s, v in list(splits.items()):
            if id(v) not in checked:
                files, labels, bad = check_images(*v, mode, skip_bad_images, workers)
                skipped += bad
                if not files:
                    raise InvalidInputError(f"{root}: no readable images left in the {s} split")
                checked[id(v)] = (files, labels)
            splits[s] = checked[id(v)]
    if "all" in splits:
        files, labels = splits.pop("all")
        idx = _stratified_split(labels, SINGLE_FOLDER_FRACTIONS, seed)
        for name, ix in zip(("train", "val", "test"), idx):
            if len(ix) == 0:
                raise InvalidInputError(f"{root}: too few images to split off a {name} set "
                                        "(each class needs 3 or more)")
            splits[name] = ([files[i] for i in ix], [labels[i] for i in ix])
        info["split"] = {"how": "stratified by class, seeded", "seed": seed,
                         "fractions": dict(zip(("train", "val", "test"), SINGLE_FOLDER_FRACTIONS))}
        info["layout"] += (" (stratified " + "/".join(f"{f:.0%}" for f in SINGLE_FOLDER_FRACTIONS)
                           + f" train/val/test, seed {seed})")
    info["sizes"] = {s: len(splits[s][0]) for s in ("train", "val", "test")}
    info["classes"] = len(classes)
    if skipped:
        info["skipped_bad_images"] = skipped
    return {"classes": classes, **{s: splits[s] for s in ("train", "val", "test")}, "info": info}


# ------------------------------------------------------------------------------------------ caching
def _cache_file(files: list[str], p: Preprocess) -> Path:
    from torchslim.paths import cache_dir

    h = hashlib.sha256(f"{p.resize}|{p.mode}|{p.interpolation}".encode())
    for f in files:
        st = os.stat(f)
        h.update(f"{f}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    d = cache_dir() / "images"
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{h.hexdigest()[:20]}.npy"


def build_cache(files: list[str], p: Preprocess, workers: int, log=None) -> Path:
    """Decode and resize `files` once into one uint8 (N, S, S, C) .npy file (reused while the files are
    unchanged); returns its path."""
    from torch.utils.data import DataLoader

    path = _cache_file(files, p)
    if path.is_file():
        return path
    if log:
        log(f"caching {len(files)} decoded images at {p.resize}x{p.resize} in {path}")
    s, c = p.resize, p.input_size[0]
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(files), s, s, c))
    loader = DataLoader(_Decode(files, p.mode, p.cache_transform(), p.resize), batch_size=64, num_workers=workers)
    at = 0
    for batch in loader:
        out[at:at + len(batch)] = batch.numpy()
        at += len(batch)
    out.flush()
    del out
    os.replace(tmp, path)
    return path


def _cached_transforms(p: Preprocess, augment: bool):
    """The uncached pipeline minus the resize the cache already did."""
    from torchvision.transforms import v2

    tail = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(p.mean, p.std)]
    crop = p.input_size[1:]
    eval_t = v2.Compose([v2.CenterCrop(crop)] + tail)
    if not augment or p.train_augment == "none":
        return eval_t, eval_t
    if p.train_augment == "pad-crop+flip":
        head = [v2.CenterCrop(crop), v2.RandomCrop(crop, padding=4)]
    else:
        head = [v2.RandomResizedCrop(crop, interpolation=p._interp(), antialias=True)]
    return v2.Compose(head + [v2.RandomHorizontalFlip()] + tail), eval_t


# ------------------------------------------------------------------------------------------ data sets
def _limit_lists(files, labels, n: int | None):
    if n is None or n >= len(files):
        return files, labels
    idx = np.sort(np.random.default_rng(12345).permutation(len(files))[:n])
    return [files[i] for i in idx], [labels[i] for i in idx]


def folder_datasets(root, p: Preprocess, *, augment: bool = True, seed: int = 0, cache: bool = False,
                    skip_bad_images: bool = False, limit_train=None, limit_eval=None, workers: int | None = None,
                    log=None):
    """(train, val, test, classes, info) of an image folder, preprocessed by `p`."""
    scanned = scan_folder(root, mode=p.mode, seed=seed, skip_bad_images=skip_bad_images, workers=workers)
    splits = {"train": _limit_lists(*scanned["train"], limit_train),
              "val": _limit_lists(*scanned["val"], limit_eval), "test": _limit_lists(*scanned["test"], limit_eval)}
    info = scanned["info"]
    used = {s: len(splits[s][0]) for s in splits}
    if used != info["sizes"]:  # --limit: say what was used, and out of how many
        info["sizes"], info["found"] = used, info["sizes"]
    if cache:
        files = sorted({f for fs, _ in splits.values() for f in fs})
        path = build_cache(files, p, default_workers() if workers is None else workers, log)
        row = {f: i for i, f in enumerate(files)}
        train_t, eval_t = _cached_transforms(p, augment)
        out = [CachedImages(path, [row[f] for f in splits[s][0]], splits[s][1], train_t if s == "train" else eval_t)
               for s in ("train", "val", "test")]
        info["cache"] = str(path)
    else:
        draft = p.resize  # JPEG decodes at the smallest scale that still covers the resize
        out = [ImageFiles(*splits[s], (p.train_transform() if augment and s == "train" else p.eval_transform()),
                          p.mode, draft) for s in ("train", "val", "test")]
    return (*out, scanned["classes"], info)


class _TorchvisionImages(Dataset):
    """A torchvision data set's (PIL image, label) items, in `mode`, transformed; indices select a subset."""

    def __init__(self, ds, transform, mode: str, indices=None):
        self.ds, self.transform, self.mode = ds, transform, mode
        self.indices = list(range(len(ds))) if indices is None else list(indices)

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        img, label = self.ds[self.indices[i]]
        return self.transform(img.convert(self.mode)), int(label)


def _tv_labels(ds) -> np.ndarray | None:
    for attr in ("targets", "labels", "_labels", "_samples"):
        v = getattr(ds, attr, None)
        if v is not None:
            if attr == "_samples":
                v = [s[1] for s in v]
            return np.asarray(v.tolist() if hasattr(v, "tolist") else v).astype(np.int64)
    return None


def torchvision_datasets(spec: str, root, p: Preprocess, *, augment: bool = True, seed: int = 0,
                         limit_train=None, limit_eval=None):
    """(train, val, test, classes, info) of `torchvision:<Class>` read from `root`; never downloads."""
    import torchvision

    name = spec.split(":", 1)[1]
    cls = getattr(torchvision.datasets, name, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.utils.data.Dataset)):
        raise InvalidInputError(f"{spec}: torchvision.datasets has no data set class {name!r} "
                                "(e.g. CIFAR100, SVHN, STL10, Flowers102, FashionMNIST)")
    if root is None:
        raise InvalidInputError(f"{spec}: pass the folder that holds its files with --data-dir (data_dir=...)")
    root = Path(root).expanduser()
    params = inspect.signature(cls.__init__).parameters

    def make(split: str):
        kw = {"download": False} if "download" in params else {}
        if "split" in params:
            kw["split"] = split
        elif "train" in params:
            if split == "val":
                raise InvalidInputError("no val split")
            kw["train"] = split == "train"
        try:
            return cls(str(root), **kw)
        except (RuntimeError, FileNotFoundError, ValueError) as e:
            if split == "val":
                raise InvalidInputError("no val split") from e
            raise DataNotFoundError(f"{spec}: its {split} split is not under {root} ({e}); torchslim never "
                                    "downloads data: put the files there (torchvision's layout)") from None

    train_ds, test_ds = make("train"), make("test")
    try:
        val_ds, val_idx, train_idx = make("val"), None, None
    except InvalidInputError:  # no val split of its own: a stratified tenth of train
        val_ds = train_ds
        labels = _tv_labels(train_ds)
        labels = labels if labels is not None else np.zeros(len(train_ds), dtype=np.int64)
        train_idx, val_idx, _ = _stratified_split(labels, (0.9, 0.1, 0.0), seed)
    classes = list(getattr(train_ds, "classes", None) or [])
    labels = _tv_labels(train_ds)
    if not classes:
        classes = [str(i) for i in range(int(labels.max()) + 1)] if labels is not None else []

    def lim(idx, n, ds):  # the same fixed random subset as the folders' limit
        idx = list(range(len(ds))) if idx is None else list(idx)
        return _limit_lists(idx, idx, n)[0]

    train_t = p.train_transform() if augment else p.eval_transform()
    out = (_TorchvisionImages(train_ds, train_t, p.mode, lim(train_idx, limit_train, train_ds)),
           _TorchvisionImages(val_ds, p.eval_transform(), p.mode, lim(val_idx, limit_eval, val_ds)),
           _TorchvisionImages(test_ds, p.eval_transform(), p.mode, lim(None, limit_eval, test_ds)))
    info = {"path": str(root.resolve()), "layout": f"torchvision.datasets.{name}", "classes": len(classes),
            "split": {"val": "its own val split" if val_idx is None else "stratified tenth of train, seeded",
                      "seed": seed},
            "sizes": {"train": len(out[0]), "val": len(out[1]), "test": len(out[2])}}
    return (*out, classes, info)


def resolve_preprocess(preprocess) -> Preprocess:
    """A `Preprocess` from one, from a model instance, or from a model name; default ImageNet 224."""
    from torch import nn

    from torchslim.data.preprocess import default_preprocess, preprocess_for, preprocess_of

    if isinstance(preprocess, Preprocess):
        return preprocess
    if isinstance(preprocess, nn.Module):
        return preprocess_of(preprocess) or default_preprocess()
    if isinstance(preprocess, (str, os.PathLike)):
        return preprocess_for(preprocess)
    return default_preprocess()


def get_path_data(name: str, *, data_dir=None, batch_size=128, eval_batch_size=512, num_workers=None, seed=0,
                  augment=True, limit_train=None, limit_eval=None, preprocess=None, cache=False,
                  skip_bad_images=False, loaders=None, log=None):
    """`torchslim.data.get_data` for a folder path or `torchvision:<Class>`: a DataBundle whose `source`
    records the path, layout, split and sizes, with `classes` and `preprocess` set."""
    p = resolve_preprocess(preprocess)
    workers = default_workers() if num_workers is None else num_workers
    if name.startswith("torchvision:"):
        if cache:
            raise InvalidInputError(f"{name}: the decoded-image cache is for image folders")
        train, val, test, classes, info = torchvision_datasets(name, data_dir, p, augment=augment, seed=seed,
                                                               limit_train=limit_train, limit_eval=limit_eval)
    else:
        train, val, test, classes, info = folder_datasets(
            name, p, augment=augment, seed=seed, cache=cache, skip_bad_images=skip_bad_images,
            limit_train=limit_train, limit_eval=limit_eval, workers=workers, log=log)
    info["workers"] = workers
    built = loaders(train, val, test, batch_size, eval_batch_size, workers, seed)
    return DataBundle(name, *built, len(classes), p.input_size, p.mean, p.std, classes=list(classes),
                      preprocess=p, source=info)


def link_model(model, data, what: str, fix: str) -> None:
    """Image data's classes must match the model's outputs (else an error ending in `fix`); the model then
    records the class names and the preprocessing, which its model file keeps."""
    if not data.classes:
        return
    from torchslim.models.arch import ARCH_ATTR, set_arch
    from torchslim.models.head import output_classes

    try:
        outputs = output_classes(model, data.input_size)
    except Exception:
        return  # a model that does not run on the input size is reported by the caller's own check
    if outputs != data.num_classes:
        raise InvalidInputError(f"{what} gives {outputs} outputs but {data.source.get('path', data.name)} has "
                                f"{data.num_classes} classes; {fix}")
    if getattr(model, ARCH_ATTR, None) is None:
        set_arch(model, None, None, data.input_size)
    getattr(model, ARCH_ATTR).update(classes=list(data.classes), preprocess=data.preprocess.to_dict())

"""Class-folder trees made from CIFAR-10 test images, for the tests of data by path."""
from __future__ import annotations

from pathlib import Path

import numpy as np

CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def cifar_test_images(n_per_class: int, classes: int = 10):
    """The first `n_per_class` test images of each of the first `classes` classes, in class order."""
    from torchslim.paths import find_data_file

    with np.load(find_data_file("cifar10/test.npz"), allow_pickle=False) as f:
        x, y = f["x"], f["y"]
    idx = np.concatenate([np.flatnonzero(y == c)[:n_per_class] for c in range(classes)])
    return x[idx], y[idx].astype(np.int64), idx


def write_class_folders(root: Path, x, y, *, mixed: bool = True, split: dict | None = None) -> Path:
    """One folder per class under `root` (or under root/<split>/ for the indices in `split`). `mixed`:
    cycle through JPEG/PNG/WebP, grayscale/RGBA/CMYK/RGB and sizes 32..64 px; else lossless 32 px PNGs."""
    from PIL import Image

    formats = [("png", "RGB", 32), ("jpg", "L", 48), ("webp", "RGBA", 40), ("jpg", "CMYK", 64), ("png", "P", 32)]
    where = {i: s for s, ids in (split or {}).items() for i in ids}
    for i, (img, label) in enumerate(zip(x, y)):
        folder = root / where.get(i, "") / CIFAR_CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        im = Image.fromarray(img)
        ext, mode, size = formats[i % len(formats)] if mixed else ("png", "RGB", 32)
        if size != 32:
            im = im.resize((size, size + (8 if ext == "webp" else 0)), Image.BILINEAR)
        im = im.convert(mode)
        im.save(folder / f"{i:05d}.{ext}", **({"quality": 90} if ext in ("jpg", "webp") else {}))
    return root

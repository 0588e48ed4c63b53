"""How images become a model's input: resize, crop, mean and std, taken from the model, not guessed.

    p = preprocess_for("torchvision:resnet18")   # its weights' transforms(): resize 256, crop 224, ImageNet stats
    p = preprocess_for("resnet20")               # the reference checkpoint's CIFAR-10 values: 32 px, no resize
    p = preprocess_for("my_net.py:build", input_size=(3, 64, 64))   # user code: ImageNet stats unless told

Evaluation resizes the shorter side to `resize` and centre-crops `input_size`; training augments with
`train_augment` (random-resized-crop + flip by default; the CIFAR reference models' own pad-crop + flip).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from torchslim.errors import InvalidInputError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DEFAULT_CROP_PCT = 0.875  # 256 -> 224, torchvision's and timm's usual ratio
TRAIN_AUGMENTS = ("random-resized-crop+flip", "pad-crop+flip", "none")


@dataclass(frozen=True)
class Preprocess:
    """Resize the shorter side to `resize`, centre-crop `input_size[1:]`, scale to [0, 1], normalise."""

    input_size: tuple[int, int, int]  # (C, H, W) the model takes; C is 1 (grayscale) or 3 (RGB)
    resize: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"
    train_augment: str = "random-resized-crop+flip"
    source: str = "default"  # where these values come from

    def __post_init__(self):
        c = self.input_size[0]
        if c not in (1, 3):
            raise InvalidInputError(f"image data gives 1 (grayscale) or 3 (RGB) channels, not {c}")
        if len(self.mean) != c or len(self.std) != c:
            raise InvalidInputError(f"mean {self.mean} / std {self.std} need {c} values for {c}-channel input")
        if min(self.input_size[1:]) > self.resize:
            raise InvalidInputError(f"resize {self.resize} is smaller than the crop {self.input_size[1:]}")

    @property
    def mode(self) -> str:
        return "L" if self.input_size[0] == 1 else "RGB"

    def describe(self) -> str:
        c, h, w = self.input_size
        size = f"{h}x{w}" if h != w else str(h)
        resize = "" if self.resize == min(h, w) else f"resize {self.resize}, "
        return (f"{resize}centre-crop {size} ({self.mode}), mean {list(self.mean)}, std {list(self.std)}; "
                f"train: {self.train_augment} [{self.source}]")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocess":
        d = dict(d)
        return cls(**{**d, "input_size": tuple(d["input_size"]), "mean": tuple(d["mean"]),
                      "std": tuple(d["std"])})

    def _interp(self):
        from torchvision.transforms import InterpolationMode

        return InterpolationMode(self.interpolation)

    def _tail(self):
        import torch
        from torchvision.transforms import v2

        return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std)]

    def eval_transform(self):
        """PIL image or uint8 tensor -> normalised (C, H, W) float tensor."""
        from torchvision.transforms import v2

        return v2.Compose([v2.Resize(self.resize, self._interp(), antialias=True),
                           v2.CenterCrop(self.input_size[1:])] + self._tail())

    def train_transform(self):
        from torchvision.transforms import v2

        crop = self.input_size[1:]
        if self.train_augment == "random-resized-crop+flip":
            head = [v2.RandomResizedCrop(crop, interpolation=self._interp(), antialias=True),
                    v2.RandomHorizontalFlip()]
        elif self.train_augment == "pad-crop+flip":  # the CIFAR ResNets' augmentation (He et al. 2016, 4.2)
            head = [v2.Resize(self.resize, self._interp(), antialias=True), v2.CenterCrop(crop),
                    v2.RandomCrop(crop, padding=4), v2.RandomHorizontalFlip()]
        else:
            return self.eval_transform()
        return v2.Compose(head + self._tail())

    def cache_transform(self):
        """What the decoded-image cache stores: shorter side `resize`, centre square, uint8 (H, W, C)."""
        from torchvision.transforms import v2

        return v2.Compose([v2.Resize(self.resize, self._interp(), antialias=True), v2.CenterCrop(self.resize),
                           v2.PILToTensor()])

    def with_overrides(self, input_size=None, mean=None, std=None, resize=None) -> "Preprocess":
        """The same with the user's --input-size / --mean / --std; resize keeps its ratio to the crop."""
        out = self
        if input_size is not None:
            c, h, w = input_size
            ratio = self.resize / min(self.input_size[1:])
            mean_, std_ = out.mean, out.std
            if c != len(mean_):  # grayscale <-> RGB: average or repeat the statistics
                mean_ = (sum(mean_) / len(mean_),) * c
                std_ = (sum(std_) / len(std_),) * c
            out = replace(out, input_size=tuple(input_size), resize=round(min(h, w) * ratio), mean=mean_, std=std_,
                          source=out.source + ", --input-size")
        if mean is not None or std is not None:
            out = replace(out, mean=tuple(mean or out.mean), std=tuple(std or out.std),
                          source=out.source + ", --mean/--std")
        if resize is not None:
            out = replace(out, resize=int(resize))
        return out


def default_preprocess(input_size=(3, 224, 224), source: str = "default: ImageNet statistics") -> Preprocess:
    c, h, w = input_size
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if c == 3 else ((0.5,), (0.5,))
    return Preprocess(tuple(input_size), round(min(h, w) / DEFAULT_CROP_PCT), mean, std, source=source)


def preprocess_for(model: str | os.PathLike, *, input_size=None, mean=None, std=None) -> Preprocess:
    """The preprocessing `model` (a name, `torchvision:<name>`, `timm:<name>`, factory spec or saved file)
    was trained with, then the explicit `input_size` / `mean` / `std` on top."""
    return _base(str(model)).with_overrides(tuple(input_size) if input_size else None, mean, std)


def preprocess_of(model) -> Preprocess | None:
    """The preprocessing recorded on a model instance (by `create_model`, `load_model` or a data run)."""
    from torchslim.models.arch import ARCH_ATTR

    arch = getattr(model, ARCH_ATTR, None) or {}
    if arch.get("preprocess"):
        return Preprocess.from_dict(arch["preprocess"])
    if arch.get("name"):
        p = _base(arch["name"])
        size = arch.get("input_size")
        return p.with_overrides(tuple(size)) if size and tuple(size) != p.input_size else p
    return None


def _base(name: str) -> Preprocess:
    from torchslim.models.user import is_factory_spec

    if Path(name).is_file() and not is_factory_spec(name):
        return _from_saved(Path(name))
    if name.startswith("torchvision:"):
        return _from_torchvision(name.split(":", 1)[1])
    if name.startswith("timm:"):
        return _from_timm(name.split(":", 1)[1])
    if is_factory_spec(name):
        return default_preprocess(source="user code: ImageNet statistics unless --mean/--std")
    from torchslim.models import MODELS

    if name in MODELS:
        return _from_registry(name)
    return default_preprocess()


def _from_saved(path: Path) -> Preprocess:
    if path.suffix == ".slim":
        from torchslim.encode.slim_file import read_header

        manifest = read_header(path.read_bytes(), str(path))[0]
    else:
        from torchslim.io import model_info

        manifest = model_info(path)
    recorded = manifest.get("preprocess") or (manifest.get("arch") or {}).get("preprocess")  # .slim: in arch
    if recorded:
        return Preprocess.from_dict(recorded)
    arch, size = manifest.get("arch") or {}, manifest.get("input_size")
    p = _base(arch["name"]) if arch.get("name") else default_preprocess(tuple(size or (3, 224, 224)))
    return p.with_overrides(tuple(size)) if size and tuple(size) != p.input_size else p


def _from_torchvision(name: str) -> Preprocess:
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(name).DEFAULT
    except Exception:  # a model without published weights
        return default_preprocess((3, 299, 299) if name == "inception_v3" else (3, 224, 224))
    t = weights.transforms()
    crop = t.crop_size[0]
    return Preprocess((3, crop, crop), t.resize_size[0], tuple(t.mean), tuple(t.std), t.interpolation.value,
                      source=f"torchvision {weights}.transforms()")


def _from_timm(name: str) -> Preprocess:
    try:
        import timm
    except ImportError:
        return default_preprocess(source="default (timm not installed)")
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        return default_preprocess(source=f"default (timm has no config for {name})")
    c, h, w = cfg.input_size
    return Preprocess((c, h, w), int(min(h, w) / (cfg.crop_pct or DEFAULT_CROP_PCT)), tuple(cfg.mean),
                      tuple(cfg.std), cfg.interpolation or "bilinear", source=f"timm pretrained_cfg of {name}")


def _from_registry(name: str) -> Preprocess:
    from torchslim.data.core import DATASETS
    from torchslim.models import MODELS

    entry = MODELS.get(name)
    if entry.dataset in DATASETS:  # the reference checkpoints' documented preprocessing
        spec = DATASETS.get(entry.dataset)
        c, h, w = spec.input_size
        augment = {"cifar10": "pad-crop+flip"}.get(entry.dataset, "none")
        return Preprocess((c, h, w), min(h, w), tuple(spec.mean), tuple(spec.std), train_augment=augment,
                          source=f"{name}'s {entry.dataset} preprocessing")
    return default_preprocess(entry.input_size, source=f"{name}: ImageNet statistics")

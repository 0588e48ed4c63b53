from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from torchslim.errors import FileFormatError, InvalidInputError, UnknownNameError
from torchslim.models.arch import set_arch
from torchslim.models.user import is_factory_spec
from torchslim.registry import Registry


@dataclass(frozen=True)
class ModelEntry:
    build: Callable[..., nn.Module]
    input_size: tuple[int, int, int]  # (C, H, W) the model expects
    num_classes: int
    dataset: str | None = None  # the data set it is made for
    pretrained: str | None = None  # glob of the checkpoint under <data dir>/weights


MODELS: Registry[ModelEntry] = Registry("model")


def register_model(name: str, input_size, num_classes: int, dataset: str | None = None, pretrained=None):
    def add(fn):
        MODELS.register(name)(ModelEntry(fn, tuple(input_size), num_classes, dataset, pretrained))
        return fn

    return add


def list_models(pattern: str = "*") -> list[str]:
    """Names of the models torchslim builds: its own, `torchvision:<name>` for the zoo, then
    `timm:<name>` if timm is installed."""
    import torchvision

    from torchslim.models import timm_zoo

    own = MODELS.names(pattern)
    tv = [f"torchvision:{n}" for n in torchvision.models.list_models(module=torchvision.models)]
    import fnmatch

    # 'resnet*' finds torchvision:resnet18 too: the prefix says where a model comes from, not what it is
    return own + [n for n in tv if fnmatch.fnmatch(n, pattern) or fnmatch.fnmatch(n.split(":", 1)[1], pattern)] \
        + timm_zoo.list_timm(pattern)


def model_input_size(name: str) -> tuple[int, int, int]:
    """(C, H, W) the named model expects (224x224 RGB for torchvision models)."""
    if name.startswith("torchvision:") or is_factory_spec(name):
        return (3, 299, 299) if name.endswith("inception_v3") else (3, 224, 224)
    if name.startswith("timm:"):
        from torchslim.models import timm_zoo

        return timm_zoo.input_size(name)
    return MODELS.get(name).input_size


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    pretrained: bool = False,
    weights: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    **kwargs,
) -> nn.Module:
    """Build a model by name.

    Args:
        name: a registered name (`list_models()`), `torchvision:<name>` for the torchvision zoo,
            `timm:<name>` for timm's models (needs `pip install 'torchslim[timm]'`), or the user's own
            code, `path/to/file.py:factory` or `package.module:factory` (called with `kwargs`).
        num_classes: output classes (default: the model's own; a factory without a `num_classes`
            parameter, or published weights, get a new last linear layer).
        pretrained: load the reference checkpoint from `<data dir>/weights` (CIFAR ResNets), or a
            torchvision model's published weights from the torch hub cache (downloaded only where allowed;
            timm models: random init only).
        weights: a checkpoint file (.pt/.pth/.th via `torch.load(weights_only=True)`, or .safetensors).
        data_dir: where to look for pretrained checkpoints (see `torchslim.paths`).
    """
    if name.startswith("torchvision:"):
        import torchvision

        tv_name = name.split(":", 1)[1]
        if tv_name not in torchvision.models.list_models(module=torchvision.models):
            raise UnknownNameError(
                f"unknown torchvision model {tv_name!r}; see `torchslim.models.list_models('torchvision:*')`"
            )
        if tv_name in ("inception_v3", "googlenet"):
            kwargs.setdefault("aux_logits", False)
            kwargs.setdefault("init_weights", not (pretrained and weights is None))
        if pretrained and weights is None:  # the published weights, then a new head if asked for
            from torchslim.models.published import torchvision_pretrained

            model = torchvision_pretrained(tv_name, **kwargs)
            if num_classes and num_classes != 1000:
                from torchslim.models.head import replace_head

                replace_head(model, num_classes)
        else:
            model = torchvision.models.get_model(tv_name, weights=None, num_classes=num_classes or 1000, **kwargs)
    elif name.startswith("timm:"):
        from torchslim.models import timm_zoo

        model = timm_zoo.build(name, num_classes=num_classes, pretrained=pretrained, **kwargs)
    elif is_factory_spec(name):
        import inspect

        from torchslim.models.user import build_from_factory, resolve_factory

        if pretrained:
            raise InvalidInputError(f"{name}: user code has no published weights; pass weights=<file>")
        takes_classes = "num_classes" in inspect.signature(resolve_factory(name)).parameters
        model = build_from_factory(name, **kwargs, **({"num_classes": num_classes} if num_classes and takes_classes
                                                      else {}))
        if num_classes and not takes_classes:
            from torchslim.models.head import replace_head

            replace_head(model, num_classes)
    else:
        entry = MODELS.get(name)
        model = entry.build(num_classes=num_classes or entry.num_classes, **kwargs)
        if pretrained:
            weights = weights or _find_pretrained(name, entry, data_dir)
    if weights is not None:
        load_weights(model, weights)
    arch_kwargs = dict(kwargs, **({"num_classes": num_classes} if num_classes else {}))
    return set_arch(model, name, arch_kwargs, model_input_size(name))


def _find_pretrained(name: str, entry: ModelEntry, data_dir) -> Path:
    from torchslim.paths import data_dir_candidates

    if entry.pretrained is None:
        raise InvalidInputError(f"model {name!r} has no reference checkpoint; train it or pass --weights FILE "
                                "(Python: weights=FILE)")
    tried = data_dir_candidates(data_dir)
    for d in tried:
        hits = sorted((d / "weights").glob(entry.pretrained))
        if hits:
            return hits[0]
    raise FileNotFoundError(
        f"no checkpoint {entry.pretrained!r} for {name!r} under weights/ in any of: "
        + ", ".join(map(str, tried))
        + " (set --data-dir or TORCHSLIM_DATA)"
    )


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from a file without unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        from torchslim.io.packed_bits import packed_shapes, unpack_bools

        try:
            state = load_file(str(path))
            shapes = packed_shapes(path)  # a torchslim model file stores masks 8 to a byte
        except Exception as e:  # safetensors raises its own types
            raise FileFormatError(f"{path}: not a readable safetensors file ({e})") from e
        return unpack_bools(state, shapes)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise FileFormatError(
            f"{path}: cannot be read as a weights-only torch checkpoint ({type(e).__name__}: {e})"
        ) from e
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    elif isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise FileFormatError(f"{path}: holds no state dict of tensors")
    # DataParallel checkpoints prefix every key with "module."
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def load_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a checkpoint into `model` strictly; a mismatch names the first offending keys and shapes."""
    sd = read_state_dict(path)
    own = model.state_dict()
    for k in own:  # checkpoints from before PyTorch 0.4.1 lack BN's step counter; it does not matter
        if k.endswith("num_batches_tracked") and k not in sd:
            sd[k] = own[k]
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    wrong = [(k, tuple(sd[k].shape), tuple(own[k].shape)) for k in own if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing[:3]}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:3]}")
        if wrong:
            k, a, b = wrong[0]
            parts.append(f"shape of {k!r} is {a} in the file, {b} in the model")
        raise FileFormatError(f"{path} does not fit {type(model).__name__}: " + "; ".join(parts))
    model.load_state_dict(sd)
    return model

"""Arguments and loaders shared by the commands, so every command reads models and data the same way."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from rich.console import Console

from torchslim.errors import InvalidInputError

import sys

# Piped output (CI logs, files) gets wide tables instead of rich's 80-column default.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 140)


def add_model_args(p: argparse.ArgumentParser, name: str = "model") -> None:
    p.add_argument(name, metavar=name.upper(),
                   help="a model name (`torchslim models`), torchvision:<name>, timm:<name>, or a saved "
                        "torchslim model path")
    p.add_argument("--weights", help="checkpoint file to load into a named model (.pt/.th/.safetensors)")
    p.add_argument("--pretrained", action="store_true", help="load the reference checkpoint from the data dir")
    p.add_argument("--num-classes", type=int, help="classes of the model's output (default: its own)")
    p.add_argument("--input-size", help="C,H,W of one input image (default: the model's or the data's)")


def add_data_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--data", required=required, help="data set: digits, mnist or cifar10")
    p.add_argument("--data-dir", help="directory with <data>/{train,test}.npz (default: $TORCHSLIM_DATA, ../shared/data)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--limit", type=int, help="use only the first N images of each split (quick runs)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")


def parse_input_size(text: str | None) -> tuple[int, int, int] | None:
    if not text:
        return None
    try:
        size = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        size = ()
    if len(size) != 3 or min(size) <= 0:
        raise InvalidInputError(f"--input-size must be C,H,W with positive integers, e.g. 3,224,224; got {text!r}")
    return size  # type: ignore[return-value]


def load_model_from_args(args) -> tuple[torch.nn.Module, tuple[int, int, int]]:
    """The model named by MODEL (a registry name or a saved model) and its input size (C, H, W)."""
    from torchslim.models import create_model, model_input_size

    name = args.model
    size = parse_input_size(getattr(args, "input_size", None))
    if Path(name).exists():
        from torchslim.api import load
        from torchslim.io import ARCH_ATTR

        model = load(name)  # .safetensors with a manifest, or a coded .slim file
        recorded = (getattr(model, ARCH_ATTR, None) or {}).get("input_size")
        return model, size or tuple(recorded or ()) or _need_size(name)
    model = create_model(name, num_classes=args.num_classes, pretrained=args.pretrained, weights=args.weights,
                         data_dir=getattr(args, "data_dir", None))
    return model, size or model_input_size(name)


def _need_size(name: str):
    raise InvalidInputError(f"{name}: the file does not record an input size; pass --input-size C,H,W")


def load_data_from_args(args, *, augment: bool = True):
    from torchslim.data import get_data

    if not args.data:
        raise InvalidInputError("this command needs --data (digits, mnist or cifar10)")
    return get_data(args.data, data_dir=args.data_dir, batch_size=args.batch_size, num_workers=args.workers,
                    augment=augment, limit_train=args.limit, limit_eval=args.limit)


def check_input_fits(model: torch.nn.Module, input_size, what: str) -> None:
    """Fail early, naming the model and the size, if one forward pass on `input_size` breaks."""
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_size))
    except Exception as e:
        raise InvalidInputError(f"{what} does not run on input size {tuple(input_size)}: {e}") from None


def print_json(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))

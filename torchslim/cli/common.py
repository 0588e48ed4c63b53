"""Arguments and loaders shared by the commands, so every command reads models and data the same way."""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import shutil
from pathlib import Path

import torch
from rich.console import Console

from torchslim.errors import InvalidInputError

import sys

# Piped output (CI logs, files) gets wide tables instead of rich's 80-column default.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 140)


# get_data takes a fixed random subset (the npz files are sorted by class, so the first N would not do)
LIMIT_HELP = "use a fixed random subset of N images of each split, the same every run (quick runs)"


class HelpFormatter(argparse.HelpFormatter):
    """Help that shows each option's default (argparse's ArgumentDefaultsHelpFormatter, minus the
    "(default: None)" / "(default: False)" noise of options without one)."""

    @staticmethod
    def _shows_default(action) -> bool:
        d = action.default
        return bool(action.option_strings) and d is not None and d is not False and d != argparse.SUPPRESS \
            and not (isinstance(d, (list, tuple)) and not d)

    def _format_action(self, action):
        if not action.help and self._shows_default(action):  # an option without help still shows its default
            action = copy.copy(action)
            action.help = "(default: %(default)s)"
        return super()._format_action(action)

    def _get_help_string(self, action):
        text = action.help or ""
        if "%(default)" in text or not self._shows_default(action):
            return text
        return (text + " " if text else "") + "(default: %(default)s)"


def add_model_args(p: argparse.ArgumentParser, name: str = "model") -> None:
    p.add_argument(name, metavar=name.upper(),
                   help="a model name (`torchslim models`), torchvision:<name>, or a saved torchslim model path")
    p.add_argument("--weights", help="checkpoint file to load into a named model (.pt/.th/.safetensors)")
    p.add_argument("--pretrained", action="store_true", help="load the reference checkpoint from the data dir")
    p.add_argument("--num-classes", type=int, help="classes of the model's output (default: its own)")
    p.add_argument("--input-size", help="C,H,W of one input image (default: the model's or the data's)")


def add_data_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--data", required=required, help="data set: digits, mnist or cifar10")
    p.add_argument("--data-dir", help="directory with <data>/{train,test}.npz (default: $TORCHSLIM_DATA, ../shared/data)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--limit", type=int, help=LIMIT_HELP)
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--protocol", choices=["test-half", "train-split"],
                   help="how the validation split is chosen (default: the data set's own; cifar10: test-half, "
                        "half of the test set, since the shipped checkpoints saw all of train.npz)")


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
    check_data_dir(args)
    if Path(name).exists():
        from torchslim.api import load
        from torchslim.io import ARCH_ATTR

        model = load(name)  # .safetensors with a manifest, or a coded .slim file
        recorded = (getattr(model, ARCH_ATTR, None) or {}).get("input_size")
        return model, size or tuple(recorded or ()) or _need_size(name)
    if Path(name).suffix in (".safetensors", ".slim", ".pt", ".pth", ".th", ".onnx") or "/" in name:
        raise FileNotFoundError(f"model file {name!r} does not exist")
    if getattr(args, "seed", None) is not None:  # --seed covers the initial weights too
        from torchslim.train.fit import seed_everything

        seed_everything(args.seed)
    model = create_model(name, num_classes=args.num_classes, pretrained=args.pretrained, weights=args.weights,
                         data_dir=getattr(args, "data_dir", None))
    return model, size or model_input_size(name)


def _need_size(name: str):
    raise InvalidInputError(f"{name}: the file does not record an input size; pass --input-size C,H,W")


def load_data_from_args(args, *, augment: bool = True):
    from torchslim.data import get_data

    if not args.data:
        raise InvalidInputError("this command needs --data (digits, mnist or cifar10)")
    check_data_dir(args)
    return get_data(args.data, data_dir=args.data_dir, batch_size=args.batch_size, num_workers=args.workers,
                    augment=augment, limit_train=args.limit, limit_eval=args.limit,
                    protocol=getattr(args, "protocol", None))


def check_data_dir(args) -> None:
    """--data-dir must exist: a mistyped one would silently fall back to the default folders."""
    d = getattr(args, "data_dir", None)
    if d and not Path(d).is_dir():
        raise InvalidInputError(f"--data-dir {d!r} is not a directory")


def check_fraction(value: float | None, flag: str, *, high_included: bool = False) -> None:
    """A fraction flag in [0, 1) (or [0, 1]); the message quotes the value as typed."""
    if value is not None and not (0 <= value < 1 or (high_included and value == 1)):
        raise InvalidInputError(f"{flag} must be a fraction in [0, 1{']' if high_included else ')'}, "
                                f"got {value:g}")


@contextlib.contextmanager
def output_folder(path: str | Path):
    """Create `path` (a folder) for a command's results; if the command fails, remove it again when this
    call created it, so no empty or half-written folder is left behind."""
    path = Path(path)
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    except BaseException:
        if created:
            shutil.rmtree(path, ignore_errors=True)
        raise


def check_input_fits(model: torch.nn.Module, input_size, what: str) -> None:
    """Fail early, naming the model and the size, if one forward pass on `input_size` breaks."""
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_size))
    except Exception as e:
        raise InvalidInputError(f"{what} does not run on input size {tuple(input_size)}: {e}") from None


def print_json(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))

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
err_console = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 400)


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
                   help="a model name (`torchslim models`), torchvision:<name>, timm:<name>, your own code as "
                        "path/to/file.py:factory or package.module:factory, or a saved torchslim model path")
    p.add_argument("--model-kwargs", metavar="JSON", help="keyword arguments for the model's factory, as JSON")
    p.add_argument("--code", metavar="FILE.py:FACTORY",
                   help="for a saved model of your own network: its code, named again (a file alone never "
                        "makes torchslim import code)")
    p.add_argument("--weights", help="checkpoint file to load into a named model (.pt/.th/.safetensors)")
    p.add_argument("--pretrained", action="store_true",
                   help="load the reference checkpoint from the data dir, or torchvision's published weights "
                        "from the torch hub cache")
    p.add_argument("--num-classes", type=int,
                   help="classes of the model's output (default: its own); a model with weights gets a new last "
                        "layer")
    p.add_argument("--input-size", help="C,H,W of one input image (default: the model's or the data's)")
    p.add_argument("--mean", help="per-channel mean for image data, e.g. 0.5,0.5,0.5 (default: the model's)")
    p.add_argument("--std", help="per-channel std for image data (default: the model's)")


def add_data_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--data", required=required,
                   help="a folder of images (train/ and val/ of class folders, or class folders), "
                        "torchvision:<DataSet> over --data-dir, or digits, mnist, cifar10")
    p.add_argument("--data-dir", help="directory with <data>/{train,test}.npz, or a torchvision data set's root "
                                      "(default: $TORCHSLIM_DATA, ../shared/data)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--limit", type=int, help=LIMIT_HELP)
    p.add_argument("--workers", type=int,
                   help="DataLoader worker processes (default: the cores for image files, 0 for npz data)")
    p.add_argument("--cache", action="store_true",
                   help="image folders: decode and resize once into one memory-mapped uint8 file, for many epochs")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="skip corrupt and non-image files (and report how many) instead of failing")
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


def _floats(text: str | None, flag: str):
    if not text:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise InvalidInputError(f"{flag} must be comma-separated numbers, e.g. 0.5,0.5,0.5; got {text!r}") from None


def _model_kwargs(args) -> dict:
    text = getattr(args, "model_kwargs", None)
    if not text:
        return {}
    try:
        kwargs = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidInputError(f"--model-kwargs is not valid JSON ({e}): {text!r}") from None
    if not isinstance(kwargs, dict):
        raise InvalidInputError(f"--model-kwargs must be a JSON object, e.g. '{{\"width\": 32}}'; got {text!r}")
    return kwargs


def load_model_from_args(args) -> tuple[torch.nn.Module, tuple[int, int, int]]:
    """The model named by MODEL (a registry name, user code or a saved model) and its input size (C, H, W)."""
    from torchslim.models import create_model, model_input_size
    from torchslim.models.user import is_factory_spec

    name = args.model
    size = parse_input_size(getattr(args, "input_size", None))
    check_data_dir(args)
    num_classes = getattr(args, "num_classes", None)
    if Path(name).exists() and not is_factory_spec(name):
        from torchslim.api import load
        from torchslim.io import ARCH_ATTR

        model = load(name, code=getattr(args, "code", None))  # .safetensors with a manifest, or a coded .slim file
        recorded = (getattr(model, ARCH_ATTR, None) or {}).get("input_size")
        size = size or tuple(recorded or ()) or _need_size(name)
    else:
        if not is_factory_spec(name) and (Path(name).suffix in (".safetensors", ".slim", ".pt", ".pth", ".th", ".onnx")
                                          or "/" in name):
            raise FileNotFoundError(f"model file {name!r} does not exist")
        if getattr(args, "seed", None) is not None:  # --seed covers the initial weights too
            from torchslim.train.fit import seed_everything

            seed_everything(args.seed)
        has_weights = args.pretrained or args.weights
        kwargs = _model_kwargs(args)
        built_classes = kwargs.pop("num_classes", None) or (None if has_weights else num_classes)
        model = create_model(name, num_classes=built_classes, pretrained=args.pretrained, weights=args.weights,
                             data_dir=getattr(args, "data_dir", None), **kwargs)
        size = size or model_input_size(name)
    if num_classes:
        _rehead(model, num_classes, size, name)
    args._torchslim_model = (model, size)
    _link_model_and_data(args)
    return model, size


def _rehead(model, num_classes: int, size, name: str) -> None:
    from torchslim.models.head import output_classes, replace_head

    try:
        outputs = output_classes(model, size)
    except Exception:
        return  # check_input_fits reports a model that does not run
    if outputs != num_classes:
        err_console.print(f"--num-classes {num_classes}: {name}: {replace_head(model, num_classes)}", markup=False)


def _link_model_and_data(args) -> None:
    """Once both are loaded: one output per class of image data; the model records the classes and the
    preprocessing (see torchslim.data.folder.link_model)."""
    if hasattr(args, "_torchslim_model") and hasattr(args, "_torchslim_data"):
        from torchslim.data.folder import link_model

        data = args._torchslim_data
        link_model(args._torchslim_model[0], data, args.model,
                   f"pass --num-classes {data.num_classes} to give it a new last layer (then train it)")


def _check_model_code(name: str, code: str | None) -> None:
    """Fail on missing user code before the data is read: a factory spec that does not resolve, or a saved
    user network whose code is not named."""
    from torchslim.models.user import constructor_to_build, is_factory_spec, resolve_factory

    if is_factory_spec(name):
        resolve_factory(name)
    elif Path(name).suffix == ".safetensors" and Path(name).is_file():
        from torchslim.io import model_info

        recorded = (model_info(name).get("arch") or {}).get("name")
        spec = constructor_to_build(recorded, code, name)
        if spec and is_factory_spec(spec):
            resolve_factory(spec)


def _need_size(name: str):
    raise InvalidInputError(f"{name}: the file does not record an input size; pass --input-size C,H,W")


def load_data_from_args(args, *, augment: bool = True):
    from torchslim.data import get_data
    from torchslim.data.preprocess import preprocess_for

    if not args.data:
        raise InvalidInputError("this command needs --data (a folder of images, digits, mnist or cifar10)")
    check_data_dir(args)
    model_name = getattr(args, "model", None) or getattr(args, "teacher", None)
    if model_name:
        _check_model_code(model_name, getattr(args, "code", None))
        if model_name.startswith("torchvision:") and getattr(args, "pretrained", False) \
                and not getattr(args, "weights", None):
            from torchslim.models.published import check_published

            check_published(model_name.split(":", 1)[1])  # before reading the data
    preprocess = preprocess_for(model_name, input_size=parse_input_size(getattr(args, "input_size", None)),
                                mean=_floats(getattr(args, "mean", None), "--mean"),
                                std=_floats(getattr(args, "std", None), "--std")) if model_name else None
    data = get_data(args.data, data_dir=args.data_dir, batch_size=args.batch_size, num_workers=args.workers,
                    augment=augment, limit_train=args.limit, limit_eval=args.limit, preprocess=preprocess,
                    cache=getattr(args, "cache", False), skip_bad_images=getattr(args, "skip_bad_images", False),
                    protocol=getattr(args, "protocol", None))
    if data.classes:  # data read from a path: say what was read and how it is preprocessed
        d = data.describe()
        sizes = ", ".join(f"{k} {v}" for k, v in d["sizes"].items())
        skipped = f"; skipped {d['skipped_bad_images']} bad image files" if d.get("skipped_bad_images") else ""
        err_console.print(f"data: {d['data']} ({d['layout']}; {d['classes']} classes; {sizes}{skipped}); "
                          f"preprocessing: {d['preprocessing']}", markup=False)
    args._torchslim_data = data
    _link_model_and_data(args)
    return data


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

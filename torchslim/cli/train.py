"""`torchslim train MODEL --data NAME --epochs N -o DIR`: train or fine-tune; resumable."""
from __future__ import annotations

import json
from pathlib import Path

from torchslim.cli.common import (add_data_args, add_model_args, check_input_fits, console, load_data_from_args,
                                  load_model_from_args)


def _fit_options(names=None):
    """(flag, field, metadata) of FitConfig's fields that the CLI sets (all, or those in `names`)."""
    import dataclasses

    from torchslim.train import FitConfig

    for f in dataclasses.fields(FitConfig):
        flag = f.metadata.get("cli")
        if flag == "" or (names is not None and f.name not in names):
            continue
        yield flag or "--" + f.name.replace("_", "-"), f


def _add(p, flag: str, f, default, kind=None) -> None:
    meta = f.metadata
    if isinstance(f.default, bool):
        p.add_argument(flag, dest=f.name, action="store_true", default=default, help=meta.get("help"))
        return
    kind = kind or {"int": int, "float": float}.get(str(f.type).split(" |")[0], str)
    p.add_argument(flag, dest=f.name, type=kind, default=default, choices=meta.get("choices"),
                   help=meta.get("help"))


# flags of a command that fine-tunes after compressing (prune, decompose): its own --schedule and
# --steps name the compression schedule, so the training ones are spelled for what they budget
FINETUNE_FLAGS = {"epochs": "--finetune-epochs", "schedule": "--lr-schedule"}


def add_fit_args(p, epochs: int = 10, lr: float = 0.05, *, flags: dict | None = None, epochs_type=None,
                 **defaults) -> None:
    """Every FitConfig field as an option (help, choices and defaults from FitConfig; `epochs`, `lr` and
    any field in `defaults` default to the command's own budget; `flags` renames a field's option)."""
    defaults = {"epochs": epochs, "lr": lr, **defaults}
    for flag, f in _fit_options():
        _add(p, (flags or {}).get(f.name, flag), f, defaults.get(f.name, f.default),
             epochs_type if f.name == "epochs" else None)


def add_precision_args(p) -> None:
    """Training speed flags, on every command that fine-tunes (FitConfig.precision / channels_last)."""
    for flag, f in _fit_options(("precision", "channels_last")):
        _add(p, flag, f, f.default)


def fit_config_from_args(args, epochs: int | None = None):
    from torchslim.train import FitConfig

    values = {f.name: getattr(args, f.name) for _, f in _fit_options() if hasattr(args, f.name)}
    if epochs is not None:
        values["epochs"] = epochs
    return FitConfig(**values)


def register(sub) -> None:
    p = sub.add_parser("train", help="train or fine-tune a model; rerun to resume after a kill")
    add_model_args(p)
    add_data_args(p, required=True)
    add_fit_args(p)
    p.add_argument("-o", "--output", required=True, help="run directory (checkpoint, model, metrics)")
    p.set_defaults(func=run)


def run(args) -> int:
    from torchslim.io import save_model
    from torchslim.train import evaluate, fit

    data = load_data_from_args(args)
    model, _ = load_model_from_args(args)
    check_input_fits(model, data.input_size, f"{args.model} on {args.data}")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    run_info = {k: getattr(args, k) for k in ("model", "weights", "pretrained", "num_classes", "data", "limit",
                                              "batch_size")}
    res = fit(model, data.train, val_loader=data.val, config=fit_config_from_args(args), checkpoint_dir=out,
              run_info=run_info)  # says "resuming from epoch E step S" when it picks up a checkpoint
    test = evaluate(model, data.test, progress="test")
    metrics = {"model": args.model, "data": args.data, "history": res.history, "test": test}
    save_model(model, out / "model.safetensors", input_size=data.input_size, metadata={"test": test})
    tmp = out / "metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=2))
    tmp.replace(out / "metrics.json")
    console.print(f"test top-1 {test['top1']:.2f} %  ->  {out / 'model.safetensors'}")
    return 0

"""`torchslim train MODEL --data NAME --epochs N -o DIR`: train or fine-tune; resumable."""
from __future__ import annotations

import json
from pathlib import Path

from torchslim.cli.common import (add_data_args, add_model_args, check_input_fits, console, load_data_from_args,
                                  load_model_from_args)


def add_fit_args(p, epochs: int = 10, lr: float = 0.05) -> None:
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adam", "adamw"])
    p.add_argument("--schedule", default="cosine", choices=["cosine", "step", "constant"])
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--max-steps", type=int, help="at most this many batches per epoch")
    add_precision_args(p)


def add_precision_args(p) -> None:
    """Training speed flags, on every command that fine-tunes (FitConfig.precision / channels_last)."""
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                   help="bf16: autocast mixed precision (fp32 weights), about 2x faster on CPUs with AVX-512 BF16")
    p.add_argument("--channels-last", action="store_true", help="train in NHWC (oneDNN's native conv layout)")


def fit_config_from_args(args, epochs: int | None = None):
    from torchslim.train import FitConfig

    return FitConfig(epochs=args.epochs if epochs is None else epochs, lr=args.lr, optimizer=args.optimizer,
                     schedule=args.schedule, weight_decay=args.weight_decay,
                     label_smoothing=args.label_smoothing, seed=args.seed, device=args.device,
                     max_steps_per_epoch=args.max_steps, precision=args.precision,
                     channels_last=args.channels_last)


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

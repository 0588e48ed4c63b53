"""`torchslim evaluate MODEL --data NAME`: top-1 / top-5 accuracy and loss on a split."""
from __future__ import annotations

from torchslim.cli.common import (add_data_args, add_model_args, check_input_fits, console, load_data_from_args,
                                  load_model_from_args, print_json)


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="accuracy and loss of a model on a data split")
    add_model_args(p)
    add_data_args(p, required=True)
    p.add_argument("--split", default="test", choices=["train", "val", "heldout", "test"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from torchslim.train import evaluate

    data = load_data_from_args(args, augment=False)
    model, _ = load_model_from_args(args)
    check_input_fits(model, data.input_size, f"{args.model} on {args.data}")
    res = evaluate(model, data.split(args.split), progress=True)
    if args.json:
        print_json(res | {"model": args.model, "data": args.data, "split": args.split, "protocol": data.protocol})
    else:
        console.print(f"{args.model} on {args.data}/{args.split} ({res['n']} images): "
                      f"top-1 {res['top1']:.2f} %  top-5 {res['top5']:.2f} %  loss {res['loss']:.4f}")
    return 0

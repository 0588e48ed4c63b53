"""`torchslim prune MODEL --criterion l1 --ratio 0.3 | --target-macs 0.5 [--data D --finetune-epochs N --max-steps S] -o DIR`."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from torchslim.cli.common import (add_data_args, add_model_args, check_fraction, console, load_data_from_args,
                                  load_model_from_args)
from torchslim.cli.train import add_precision_args


def register(sub) -> None:
    p = sub.add_parser("prune", help="remove whole channels (structured pruning) and fine-tune")
    add_model_args(p)
    add_data_args(p)
    from torchslim import methods

    p.add_argument("--criterion", default="l1", choices=methods.names("prune"),
                   help="importance criterion (torchslim methods prune)")
    t = p.add_mutually_exclusive_group(required=True)
    t.add_argument("--ratio", type=float, help="fraction of channels removed from each group")
    t.add_argument("--target-macs", type=float, help="prune until MACs <= this fraction of the original")
    t.add_argument("--target-params", type=float, help="prune until params <= this fraction of the original")
    p.add_argument("--allocation", default="uniform", choices=["uniform", "global", "layers"])
    p.add_argument("--layer-ratios", help="JSON file {group: ratio} (e.g. from `torchslim sensitivity`)")
    p.add_argument("--schedule", default="oneshot", choices=["oneshot", "iterative", "layerwise"])
    p.add_argument("--steps", type=int, default=3, help="iterative: pruning rounds")
    p.add_argument("--finetune-epochs", type=int, default=0, help="final fine-tuning epochs")
    p.add_argument("--max-steps", type=int, help="at most this many batches per fine-tuning epoch")
    p.add_argument("--finetune-steps", type=int, help=argparse.SUPPRESS)  # deprecated spelling of --max-steps
    p.add_argument("--recovery-steps", type=int, default=50, help="iterative/layerwise: batches of recovery per round")
    p.add_argument("--lr", type=float, default=0.01)
    add_precision_args(p)
    p.add_argument("--skip", nargs="*", default=[], help="group-name patterns never pruned")
    p.add_argument("--reconstruct", action="store_true",
                   help="refit layers that lost input channels by least squares to the original outputs "
                        "(He et al. 2017, ThiNet); needs --data")
    p.add_argument("--no-distill", action="store_true",
                   help="fine-tune on the labels alone (default: KD from the unpruned model as well)")
    p.add_argument("--bn-recalibration", type=int, default=0, metavar="IMAGES",
                   help="re-estimate BatchNorm statistics on this many training images after pruning (0: off)")
    p.add_argument("--round-to", type=int, help="keep a multiple of this many channels per group (1: exact "
                   "ratios; default: torchslim.prune's, the fastest in ONNX Runtime in benchmarks/bench_round_to.py)")
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(func=run)


def check_prunable(model, x, name: str, skip) -> None:
    """Before any evaluation: every --skip pattern must name a group, and some group must be left to prune."""
    import fnmatch

    from torchslim.errors import InvalidInputError
    from torchslim.graph import ChannelGraph

    g = ChannelGraph(model, x)
    names = [grp.name for grp in g.groups]
    for pattern in skip:
        if not fnmatch.filter(names, pattern):
            raise InvalidInputError(f"--skip {pattern!r} matches no channel group of {name}; its groups: "
                                    f"{', '.join(names[:8])}{' ...' if len(names) > 8 else ''}")
    if not [n for n in names if not any(fnmatch.fnmatch(n, p) for p in skip)]:
        why = f" ({g.trace.notes[-1]})" if g.trace.notes else ""
        raise InvalidInputError(f"{name} has no channels that can be pruned{' outside --skip' if skip else ''}"
                                f"{why}")


def run(args) -> int:
    import torch
    from rich.table import Table

    from torchslim.analysis import profile
    from torchslim.io import save_model
    from torchslim.prune import prune, prune_report
    from torchslim.train import FitConfig, evaluate

    check_fraction(args.ratio, "--ratio")
    model, size = load_model_from_args(args)
    x = torch.zeros(1, *size)
    check_prunable(model, x, args.model, args.skip)
    data = load_data_from_args(args) if args.data else None
    if args.finetune_steps is not None:
        console.print("note: --finetune-steps is deprecated; use --max-steps (the name every command uses)")
        args.max_steps = args.max_steps if args.max_steps is not None else args.finetune_steps
    speed = dict(precision=args.precision, channels_last=args.channels_last)
    final = FitConfig(epochs=args.finetune_epochs, lr=args.lr, max_steps_per_epoch=args.max_steps, **speed) \
        if args.finetune_epochs else None
    recovery = FitConfig(epochs=1, lr=args.lr, max_steps_per_epoch=args.recovery_steps, **speed) \
        if args.schedule != "oneshot" and data is not None else None
    layer_ratios = json.loads(Path(args.layer_ratios).read_text()) if args.layer_ratios else None
    acc_before = evaluate(model, data.test, progress="test before")["top1"] if data is not None else None
    before = profile(model, size)
    pruned = prune(model, args.criterion, example_input=x, ratio=args.ratio, target_macs=args.target_macs,
                   target_params=args.target_params, data=data, allocation=args.allocation,
                   layer_ratios=layer_ratios, schedule=args.schedule, steps=args.steps, finetune=recovery,
                   final_finetune=final, skip=tuple(args.skip), progress=True, reconstruct=args.reconstruct,
                   bn_recalibration=args.bn_recalibration, distill=not args.no_distill,
                   **({} if args.round_to is None else {"round_to": args.round_to}))
    after = profile(pruned, size)
    rep = prune_report(pruned)
    acc_after = evaluate(pruned, data.test, progress="test after")["top1"] if data is not None else None
    table = Table(title=f"{args.model}: {args.criterion} pruning")
    for c in ("", "before", "after", "ratio"):
        table.add_column(c, justify="right")
    table.add_row("MACs", f"{before.macs / 1e6:.2f} M", f"{after.macs / 1e6:.2f} M", f"{after.macs / before.macs:.3f}")
    table.add_row("params", f"{before.params / 1e3:.1f} k", f"{after.params / 1e3:.1f} k",
                  f"{after.params / before.params:.3f}")
    if acc_before is not None:
        table.add_row("test top-1", f"{acc_before:.2f} %", f"{acc_after:.2f} %", f"{acc_after - acc_before:+.2f}")
    console.print(table)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    figures = {"model": args.model, "criterion": args.criterion, "before": {"macs": before.macs, "params": before.params,
               "top1": acc_before}, "after": {"macs": after.macs, "params": after.params, "top1": acc_after},
               "report": rep}
    save_model(pruned, out / "model.safetensors", input_size=size, metadata={"prune": figures["after"]})
    tmp = out / "prune.json.tmp"
    tmp.write_text(json.dumps(figures, indent=2, default=str))
    os.replace(tmp, out / "prune.json")
    console.print(f"saved {out / 'model.safetensors'}")
    return 0

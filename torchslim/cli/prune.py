"""`torchslim prune MODEL --criterion l1 --ratio 0.3 | --target-macs 0.5 [--data D --finetune-epochs N --max-steps S] -o DIR`.

Its pruning options are PruneConfig's fields and its fine-tuning options FitConfig's, both generated
from the method table (torchslim.methods), so help text and defaults are the library's own."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from torchslim.cli.common import (add_data_args, add_model_args, check_fraction, console, load_data_from_args,
                                  load_model_from_args)
from torchslim.cli.options import add_method_options, method_options
from torchslim.cli.train import FINETUNE_FLAGS, add_fit_args, fit_config_from_args


def register(sub) -> None:
    p = sub.add_parser("prune", help="remove whole channels (structured pruning) and fine-tune",
                       description="Give --ratio, --target-macs or --target-params.")
    add_model_args(p)
    add_data_args(p)
    from torchslim import methods

    p.add_argument("--criterion", default="l1", choices=methods.names("prune"),
                   help="importance criterion (torchslim methods prune)")
    # PruneConfig's fields (torchslim.methods): --ratio / --target-macs / --target-params, --allocation,
    # --schedule, --steps, --skip, --round-to, --reconstruct, --bn-recalibration, --no-distill, ...
    add_method_options(p, "prune", title="pruning options (torchslim.prune.PruneConfig)")
    # the fine-tuning budget (FitConfig): --finetune-epochs, --lr, --max-steps, --precision, ...
    add_fit_args(p, epochs=0, lr=0.01, flags=FINETUNE_FLAGS)
    p.add_argument("--finetune-steps", type=int, help=argparse.SUPPRESS)  # deprecated spelling of --max-steps
    p.add_argument("--recovery-steps", type=int, default=50, help="iterative/layerwise: batches of recovery per round")
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
    import dataclasses

    import torch
    from rich.table import Table

    from torchslim import methods
    from torchslim.analysis import profile
    from torchslim.errors import InvalidInputError
    from torchslim.io import save_model
    from torchslim.prune import prune, prune_report
    from torchslim.train import evaluate

    spec = methods.get("prune", args.criterion)
    opts = method_options(args, spec)
    if sum(opts.get(k) is not None for k in ("ratio", "target_macs", "target_params")) != 1:
        raise InvalidInputError("give one of --ratio, --target-macs, --target-params")
    check_fraction(opts.get("ratio"), "--ratio")
    model, size = load_model_from_args(args)
    x = torch.zeros(1, *size)
    check_prunable(model, x, args.model, opts.get("skip", ()))
    data = load_data_from_args(args) if args.data else None
    if args.finetune_steps is not None:
        console.print("note: --finetune-steps is deprecated; use --max-steps (the name every command uses)")
        args.max_steps_per_epoch = args.max_steps_per_epoch if args.max_steps_per_epoch is not None \
            else args.finetune_steps
    final = fit_config_from_args(args)
    recovery = dataclasses.replace(final, epochs=1, max_steps_per_epoch=args.recovery_steps) \
        if opts.get("schedule", "oneshot") != "oneshot" and data is not None else None
    acc_before = evaluate(model, data.test, progress="test before")["top1"] if data is not None else None
    before = profile(model, size)
    pruned = prune(model, spec.name, example_input=x, data=data, finetune=recovery,
                   final_finetune=final if final.epochs else None, progress=True, **opts)
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

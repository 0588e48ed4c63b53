"""`torchslim prune MODEL --criterion l1 --ratio 0.3 | --target-macs 0.5 [--data D --finetune-epochs N] -o DIR`."""
from __future__ import annotations

import json
import os
from pathlib import Path

from torchslim.cli.common import add_data_args, add_model_args, console, load_data_from_args, load_model_from_args


def register(sub) -> None:
    p = sub.add_parser("prune", help="remove whole channels (structured pruning) and fine-tune")
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--criterion", default="l1", help="l1, l2, bn_scale, random, apoz, entropy, taylor, "
                                                    "random_masks, lda, icc, oracle")
    t = p.add_mutually_exclusive_group(required=True)
    t.add_argument("--ratio", type=float, help="fraction of channels removed from each group")
    t.add_argument("--target-macs", type=float, help="prune until MACs <= this fraction of the original")
    t.add_argument("--target-params", type=float, help="prune until params <= this fraction of the original")
    p.add_argument("--allocation", default="uniform", choices=["uniform", "global", "layers"])
    p.add_argument("--layer-ratios", help="JSON file {group: ratio} (e.g. from `torchslim sensitivity`)")
    p.add_argument("--schedule", default="oneshot", choices=["oneshot", "iterative", "layerwise"])
    p.add_argument("--steps", type=int, default=3, help="iterative: pruning rounds")
    p.add_argument("--finetune-epochs", type=int, default=0, help="final fine-tuning epochs")
    p.add_argument("--finetune-steps", type=int, help="at most this many batches per fine-tuning epoch")
    p.add_argument("--recovery-steps", type=int, default=50, help="iterative/layerwise: batches of recovery per round")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--skip", nargs="*", default=[], help="group-name patterns never pruned")
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(func=run)


def run(args) -> int:
    import torch
    from rich.table import Table

    from torchslim.analysis import profile
    from torchslim.io import save_model
    from torchslim.prune import prune, prune_report
    from torchslim.train import FitConfig, evaluate

    model, size = load_model_from_args(args)
    data = load_data_from_args(args) if args.data else None
    x = torch.zeros(1, *size)
    final = FitConfig(epochs=args.finetune_epochs, lr=args.lr, max_steps_per_epoch=args.finetune_steps) \
        if args.finetune_epochs else None
    recovery = FitConfig(epochs=1, lr=args.lr, max_steps_per_epoch=args.recovery_steps) \
        if args.schedule != "oneshot" and data is not None else None
    layer_ratios = json.loads(Path(args.layer_ratios).read_text()) if args.layer_ratios else None
    acc_before = evaluate(model, data.test)["top1"] if data is not None else None
    before = profile(model, size)
    pruned = prune(model, x, args.criterion, args.ratio, target_macs=args.target_macs,
                   target_params=args.target_params, data=data, allocation=args.allocation,
                   layer_ratios=layer_ratios, schedule=args.schedule, steps=args.steps, finetune=recovery,
                   final_finetune=final, skip=tuple(args.skip), progress=True)
    after = profile(pruned, size)
    rep = prune_report(pruned)
    acc_after = evaluate(pruned, data.test)["top1"] if data is not None else None
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

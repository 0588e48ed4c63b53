"""`torchslim sensitivity MODEL --data D -o DIR`: prune each group alone at 10..90 %, table + PNG."""
from __future__ import annotations

import json
import os
from pathlib import Path

from torchslim.cli.common import add_data_args, add_model_args, console, load_data_from_args, load_model_from_args


def register(sub) -> None:
    p = sub.add_parser("sensitivity", help="accuracy when each layer group alone is pruned at 10..90 %%")
    add_model_args(p)
    add_data_args(p, required=True)
    p.add_argument("--criterion", default="l1")
    p.add_argument("--ratios", default="0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9", help="comma-separated ratios")
    p.add_argument("--max-batches", type=int, default=10, help="validation batches per evaluation")
    p.add_argument("--max-drop", type=float, default=2.0, help="points of top-1 a suggested ratio may lose")
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(func=run)


def run(args) -> int:
    import torch
    from rich.table import Table

    from torchslim.prune.sensitivity import sensitivity
    from torchslim.train import distributed as D

    model, size = load_model_from_args(args)
    data = load_data_from_args(args, augment=False)
    D.init_from_env()  # under torchrun the scan's evaluations are split across the ranks
    main_rank = D.is_main()
    try:
        s = sensitivity(model, torch.zeros(1, *size), data, criterion=args.criterion,
                        ratios=[float(r) for r in args.ratios.split(",")], max_batches=args.max_batches,
                        progress=main_rank)
    finally:
        D.shutdown()
    if not main_rank:
        return 0  # rank 0 writes the results
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    s.plot(out / "sensitivity.png")
    rows = s.rows()
    table = Table(title=f"top-1 (%) with one group pruned; baseline {s.baseline:.2f}")
    for c in rows[0] if rows else ["group"]:
        table.add_column(c, justify="right")
    for r in rows:
        table.add_row(*[str(v) for v in r.values()])
    console.print(table)
    figures = {"baseline": s.baseline, "ratios": s.ratios, "curves": s.curves,
               "layer_ratios": s.layer_ratios(args.max_drop)}
    for name, payload in (("sensitivity.json", figures), ("layer_ratios.json", figures["layer_ratios"])):
        tmp = out / (name + ".tmp")
        tmp.write_text(json.dumps(payload, indent=2))
        os.replace(tmp, out / name)
    console.print(f"wrote {out / 'sensitivity.png'} and {out / 'layer_ratios.json'} (use with prune --allocation layers)")
    return 0

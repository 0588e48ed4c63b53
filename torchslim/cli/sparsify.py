"""`torchslim sparsify MODEL --method dns --data mnist --epochs N -o DIR`: kernel sparsification with retraining.

Prints progress and a per-layer density table; writes DIR/model.safetensors (plain layers with the pruned
weights at zero, or lowered convs for ssl; `--keep-masks` keeps the masked layers, `--sparse-exec` stores CSR layers) and
DIR/sparsify.json with the densities, accuracies and history.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from torchslim.cli.common import (add_data_args, add_model_args, check_fraction, check_input_fits, console,
                                  load_data_from_args, load_model_from_args)
from torchslim.cli.options import PREFIX, add_method_options, method_options
from torchslim.cli.train import add_fit_args, fit_config_from_args


def register(sub) -> None:
    from torchslim import methods

    p = sub.add_parser("sparsify", help=f"make weights sparse ({', '.join(methods.names('sparsify'))})",
                       description=__doc__.splitlines()[0])
    add_model_args(p)
    add_data_args(p, required=True)
    add_fit_args(p, epochs=2, lr=0.01)
    p.add_argument("--method", default="magnitude", choices=methods.names("sparsify"))
    p.add_argument("--sparsity", type=float, default=0.9, help="target fraction of zero weights (default 0.9)")
    p.add_argument("--layer-sparsity", help='per-layer targets as JSON, e.g. \'{"1": 0.98, "3": 0.9}\'')
    # every other option of every method, from its config (torchslim.methods); --epochs sets the method's
    # training epochs (its config's EPOCHS_FIELD)
    add_method_options(p, "sparsify", exclude=("sparsity", "epochs"))
    p.add_argument("--prune-schedule", dest=PREFIX + "schedule", help=argparse.SUPPRESS)  # old spelling of --method-schedule
    p.add_argument("--force-type", dest=PREFIX + "force", help=argparse.SUPPRESS)  # old spelling of --force
    p.add_argument("--keep-masks", action="store_true",
                   help="save the masked layers (to fine-tune further with the masks; stored as bits) instead "
                        "of plain layers with the pruned weights at zero, which are no larger than the input")
    p.add_argument("--bake", action="store_true", help=argparse.SUPPRESS)  # the default now; kept for old scripts
    p.add_argument("--sparse-exec", type=float, metavar="S",
                   help="store layers at least S sparse in CSR and run them sparse")
    p.add_argument("-o", "--output", required=True, help="output directory")
    p.set_defaults(func=run)


def _method_options(args, fit_cfg) -> dict:
    from torchslim import methods
    from torchslim.errors import InvalidInputError
    from torchslim.sparsity.api import epochs_field

    spec = methods.get("sparsify", args.method)
    opts: dict = {"fit": fit_cfg, epochs_field(spec.name): args.epochs}
    if args.layer_sparsity:
        try:
            opts["sparsity"] = {str(k): float(v) for k, v in json.loads(args.layer_sparsity).items()}
        except (ValueError, AttributeError, TypeError) as e:
            raise InvalidInputError(f"--layer-sparsity must be a JSON object of layer: fraction, got "
                                    f"{args.layer_sparsity!r} ({e})") from None
        for layer, v in opts["sparsity"].items():
            check_fraction(v, f"--layer-sparsity {layer!r}")
    elif "sparsity" in spec.option_names():
        opts["sparsity"] = args.sparsity
    opts.update(method_options(args, spec))
    if opts.get("quality") is not None:  # Han's q instead of a target
        opts["sparsity"] = None
    return opts


def density_table(rows: list[dict], title: str):
    from rich.table import Table

    from torchslim.report.format import human

    t = Table(title=title, header_style="bold")
    for col, just in [("layer", "left"), ("type", "left"), ("shape", "left"), ("weights", "right"),
                      ("nonzero", "right"), ("density", "right")]:
        t.add_column(col, justify=just)
    for r in rows:
        t.add_row(r["layer"], r["type"], "x".join(map(str, r["shape"])), human(r["params"]), human(r["nonzero"]),
                  f"{r['density']:.2%}")
    total, nnz = sum(r["params"] for r in rows), sum(r["nonzero"] for r in rows)
    t.add_row("[bold]total", "", "", human(total), human(nnz),
              f"{nnz / total:.2%} ({total / max(nnz, 1):.1f}x)" if total else "")
    return t


def run(args) -> int:
    import torchslim
    from torchslim import methods
    from torchslim.io import save_model
    from torchslim.sparsity import density_summary, remove_masks, to_sparse
    from torchslim.train import evaluate

    check_fraction(args.sparsity, "--sparsity")
    _method_options(args, None)  # checks --layer-sparsity before any work
    data = load_data_from_args(args)
    model, input_size = load_model_from_args(args)
    check_input_fits(model, data.input_size, f"{args.model} on {args.data}")
    out = Path(args.output)  # made by save_model, once there is something to save
    fit_cfg = replace(fit_config_from_args(args), progress=True)
    before = evaluate(model, data.test, progress="test before")
    console.print(f"{args.model}: test top-1 {before['top1']:.2f} % before; method {args.method}")
    sparse, info = torchslim.sparsify(model, methods.get("sparsify", args.method).name, data=data, inplace=True, return_info=True,
                                      **_method_options(args, fit_cfg))
    if not args.keep_masks or args.sparse_exec is not None:
        remove_masks(sparse)
    converted = to_sparse(sparse, min_sparsity=args.sparse_exec) if args.sparse_exec is not None else []
    after = evaluate(sparse, data.test, progress="test after")
    summary = density_summary(sparse)
    console.print(density_table(summary["layers"], f"{args.model} after {args.method}"))
    console.print(f"test top-1 {before['top1']:.2f} % -> {after['top1']:.2f} %; weights kept "
                  f"{summary['nonzero']:,} / {summary['weights']:,} ({summary['compression']:.1f}x)")
    result = {"model": args.model, "data": args.data, "method": args.method, "test_before": before,
              "test_after": after, "density": summary, "sparse_layers": converted,
              **{k: v for k, v in info.items() if k not in ("density", "method")}}
    save_model(sparse, out / "model.safetensors", input_size=input_size,
               metadata={"sparsify": {"method": args.method, "test_top1": after["top1"],
                                      "density": summary["density"]}})
    tmp = out / "sparsify.json.tmp"
    tmp.write_text(json.dumps(result, indent=2, default=str))
    tmp.replace(out / "sparsify.json")
    console.print(f"saved {out / 'model.safetensors'} and {out / 'sparsify.json'}")
    return 0

"""`torchslim demo`: the built-in default job on `digits` (see torchslim/demo.py)."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("demo", help="the whole pipeline on the built-in digits data, in about a minute")
    p.add_argument("-o", "--output", default="runs/demo", help="run directory (default runs/demo)")
    p.add_argument("--epochs", type=int, default=15)
    p.set_defaults(func=run)


def run(args) -> int:
    import shutil
    from pathlib import Path

    from torchslim.cli.common import console
    from torchslim.demo import run_demo

    # A fresh run each time: the demo is a show, not a job to resume.
    shutil.rmtree(Path(args.output) / "train", ignore_errors=True)
    run_demo(args.output, epochs=args.epochs, console=console)
    return 0

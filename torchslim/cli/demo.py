"""`torchslim demo`: the built-in default job on `digits` (see torchslim/demo.py)."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("demo", help="the whole pipeline on the built-in digits data, in a few minutes")
    p.add_argument("-o", "--output", default="runs/demo", help="run directory (default runs/demo)")
    p.add_argument("--recipe", help="another recipe to show (default recipes/demo_digits_full.yaml)")
    p.set_defaults(func=run)


def run(args) -> int:
    from torchslim.cli.common import console
    from torchslim.demo import RECIPE, run_demo

    run_demo(args.output, console=console, recipe=args.recipe or RECIPE)
    return 0

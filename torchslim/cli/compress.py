"""`torchslim compress RECIPE -o RUN_DIR`: run a YAML recipe, resumably; `--check` only validates it."""
from __future__ import annotations

from torchslim.cli.common import console


def register(sub) -> None:
    p = sub.add_parser("compress", help="run a compression recipe (YAML) into a run folder; rerun to resume",
                       description="Run the stages of RECIPE in order into RUN_DIR. Every stage and every "
                                   "fine-tuning epoch is checkpointed; rerunning the same command after an "
                                   "interruption resumes where it stopped. Under torchrun, fine-tuning uses DDP.")
    p.add_argument("recipe", metavar="RECIPE", help="recipe file, or the name of a shipped one (e.g. demo_digits; "
                                                    "see recipes/ and docs/recipes.md)")
    p.add_argument("-o", "--output", metavar="RUN_DIR", help="run folder (default: runs/<recipe name>)")
    p.add_argument("--check", action="store_true", help="validate the recipe and exit")
    p.add_argument("--smoke", action="store_true",
                   help="smoke run: the same stages on a few hundred images and at most one epoch per budget, to "
                        "check that the recipe runs before the real budget (its figures are not the results)")
    p.add_argument("--smoke-images", type=int, default=256, metavar="N",
                   help="with --smoke: train images and images per eval split (default 256)")
    p.add_argument("--restart", action="store_true", help="discard finished stages in RUN_DIR and start over")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from torchslim.recipe import load_recipe, run_recipe, smoke
    from torchslim.train import distributed as D

    recipe = load_recipe(args.recipe)
    if args.smoke:
        recipe = smoke(recipe, images=args.smoke_images)
    if args.check:
        console.print(f"{args.recipe}: valid; stages: {', '.join(recipe.stage_names())}")
        return 0
    out = args.output or f"runs/{recipe.name}"
    D.init_from_env()
    try:
        summary = run_recipe(recipe, out, restart=args.restart, progress=not args.no_progress,
                             log=lambda msg: console.print(msg, markup=False))
    finally:
        D.shutdown()
    if summary and D.is_main():
        from torchslim.report.build import HEADER, stage_rows
        from rich.table import Table

        table = Table(title=f"{recipe.name}: {out}")
        for h in HEADER:
            table.add_column(h, justify="left" if h in ("stage", "method") else "right")
        for row in stage_rows(summary):
            table.add_row(*row)
        console.print(table)
    return 0

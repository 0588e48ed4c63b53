"""The built-in default job: the one place a newcomer sees the whole pipeline on `digits`.

It runs `recipes/demo_digits_full.yaml` with `torchslim.compress`: train a small CNN on scikit-learn's
8x8 digits, prune half its filters (L1) and fine-tune, quantize to int8 (real int8 execution), code
the weights into a `.slim` file, export to ONNX checked in ONNX Runtime, and write the run's report
(report.md, a single-file report.html with plots, report.json). Every figure is measured in the run.
"""
from __future__ import annotations

from pathlib import Path

from torchslim.errors import DataNotFoundError
from torchslim.paths import RECIPES_DIR

RECIPE = RECIPES_DIR / "demo_digits_full.yaml"


def run_demo(output: str | Path = "runs/demo", console=None, recipe: str | Path = RECIPE) -> dict:
    from rich.console import Console

    from torchslim.recipe import run_recipe

    console = console or Console()
    recipe = Path(recipe)
    if not recipe.is_file():
        raise DataNotFoundError(f"the demo recipe {recipe} is missing (reinstall torchslim, or pass --recipe FILE)")
    console.rule(f"[bold]torchslim demo: {recipe.name}")
    summary = run_recipe(recipe, output, restart=True, log=console.print)
    report = Path(output) / "report.html"
    # compare the trained model with the end of the pipeline (stage 00 is the untrained input)
    first, last = summary["stages"][min(1, len(summary["stages"]) - 1)], summary["stages"][-1]
    console.print(f"\n[bold]{first['stage']} -> {last['stage']}[/]: top-1 {first['accuracy']['top1']:.2f} % -> "
                  f"{last['accuracy']['top1']:.2f} %, MACs {first['macs']:,} -> {last['macs']:,}")
    console.print(f"[bold]report:[/] {report.resolve()}")
    return summary

"""`torchslim compare RUN_DIR RUN_DIR ...`: the final figures of several runs side by side."""
from __future__ import annotations

from torchslim.cli.common import console


def register(sub) -> None:
    p = sub.add_parser("compare", help="put the results of several runs side by side",
                       description="A table of the final stage of each run (accuracy, params, MACs, size, latency); "
                                   "with -o also compare.md / compare.html with accuracy-vs-cost plots of all runs.")
    p.add_argument("run_dirs", metavar="RUN_DIR", nargs="+")
    p.add_argument("-o", "--output", metavar="DIR", help="write compare.md, compare.html and plots here")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from rich.table import Table

    from torchslim.cli.common import print_json
    from torchslim.report import compare_runs

    result = compare_runs(args.run_dirs, args.output)
    if args.json:
        print_json([dict(zip(result["header"], r)) for r in result["rows"]])
        return 0
    table = Table(title="runs compared")
    for h in result["header"]:
        table.add_column(h, justify="left" if h in ("run", "final stage") else "right")
    for r in result["rows"]:
        table.add_row(*r)
    console.print(table)
    for f in result.get("files", []):
        console.print(f, markup=False)
    return 0

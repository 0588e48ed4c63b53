"""`torchslim report RUN_DIR`: (re)generate report.md, report.html and report.json of a run."""
from __future__ import annotations

from torchslim.cli.common import console


def register(sub) -> None:
    p = sub.add_parser("report", help="regenerate the report of a run folder",
                       description="Rebuild RUN_DIR/report.{md,html,json} from the measurements in RUN_DIR/stages.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from torchslim.report import write_report

    summary = write_report(args.run_dir)
    d = Path(args.run_dir)
    console.print(f"{d / 'report.html'}\n{d / 'report.md'}\n{d / 'report.json'}  ({len(summary['stages'])} stages"
                  + (f", unfinished: {', '.join(summary['pending'])})" if summary["pending"] else ")"), markup=False)
    return 0

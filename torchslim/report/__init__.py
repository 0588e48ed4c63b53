"""Tables, plots and run reports (report.md, single-file report.html, report.json)."""
from torchslim.report.build import compare_runs, load_run, write_report

__all__ = ["compare_runs", "load_run", "write_report"]

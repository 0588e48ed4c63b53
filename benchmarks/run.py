"""`make bench`: run every benchmarks/bench_*.py, then assemble BENCHMARKS.md from results/*.md.

    python -m benchmarks.run               # all benchmarks, full settings (hours on 2 cores)
    python -m benchmarks.run --quick       # each benchmark's quick mode
    python -m benchmarks.run --only baselines analysis
    python -m benchmarks.run --assemble    # only rebuild BENCHMARKS.md from existing results
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.common import RESULTS

ROOT = Path(__file__).resolve().parent.parent
HEADER = """# Benchmarks

Every figure below was computed by the script named in its section, on this project's CI-class
machine (2 CPU cores, no GPU) unless the section says otherwise; rerun it to reproduce. Timings are
medians of repeated runs measured side by side in one run: the machines are shared and noisy, so
compare ratios within a section, not absolute times across sections.

CIFAR-10 figures are measured on the original, lossless data of ../shared/data from the shipped
checkpoints as they are; every figure measured on the earlier JPEG copy (and its "adapted" baselines)
was removed with it, and the sections it filled are rerun benchmark by benchmark.
"""


def bench_modules() -> list[str]:
    return sorted(p.stem for p in Path(__file__).parent.glob("bench_*.py"))


def assemble() -> Path:
    parts = [HEADER]
    first = ["headline"]  # the headline table opens the page; the other sections follow by name
    for md in sorted(RESULTS.glob("*.md"), key=lambda p: (p.stem not in first, p.stem)):
        if md.stem.endswith("-quick"):
            continue  # smoke runs are not reference figures
        parts.append(md.read_text().strip() + "\n")
    out = ROOT / "BENCHMARKS.md"
    tmp = out.with_suffix(".md.tmp")
    tmp.write_text("\n".join(parts))
    os.replace(tmp, out)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", nargs="*", help="topics, e.g. baselines (runs bench_baselines.py)")
    ap.add_argument("--assemble", action="store_true")
    args = ap.parse_args(argv)
    failed = []
    if not args.assemble:
        names = bench_modules()
        if args.only:
            names = [n for n in names if n.removeprefix("bench_") in args.only or n in args.only]
        for name in names:
            cmd = [sys.executable, "-m", f"benchmarks.{name}"] + (["--quick"] if args.quick else [])
            print("==>", " ".join(cmd), flush=True)
            if subprocess.call(cmd, cwd=ROOT) != 0:
                failed.append(name)
    print("wrote", assemble())
    if failed:
        print("failed:", ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

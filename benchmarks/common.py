"""What every benchmark shares: where results go, how a fragment of BENCHMARKS.md is written."""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def command_line() -> str:
    """The command that reproduces this run, as a user would type it."""
    module = Path(sys.argv[0]).stem
    return "python -m benchmarks." + " ".join([module] + [shlex.quote(a) for a in sys.argv[1:]])


def _device(value: str) -> str:
    # Every fine-tuning in the run follows: FitConfig(device="auto") resolves through $TORCHSLIM_DEVICE.
    if value not in ("cpu", "cuda") and not value.startswith("cuda:"):
        raise argparse.ArgumentTypeError(f"--device {value!r}: use cpu, cuda or cuda:N")
    os.environ["TORCHSLIM_DEVICE"] = value
    return value


def add_device_arg(ap: "argparse.ArgumentParser") -> None:
    """`--device cpu|cuda`: where the benchmark's fine-tuning runs (latency is always measured on the CPU)."""
    ap.add_argument("--device", type=_device, default=os.environ.get("TORCHSLIM_DEVICE", "cpu"),
                    help="where fine-tuning runs: cpu (default) or cuda; latency stays on the CPU")


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_result(topic: str, data: dict, markdown: str) -> Path:
    """Write results/<topic>.json and results/<topic>.md atomically; run.py assembles BENCHMARKS.md."""
    for suffix, text in ((".json", json.dumps(data, indent=2, default=str)), (".md", markdown)):
        write_text_atomic(RESULTS / f"{topic}{suffix}", text)
    return RESULTS / f"{topic}.md"


def md_table(header: list[str], rows: list[list]) -> str:
    def cell(v):
        if isinstance(v, float):
            return f"{v:.2f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)

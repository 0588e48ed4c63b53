"""Pruning's `round_to` against ONNX Runtime latency: do fewer MACs give a faster model?

    python -m benchmarks.bench_round_to [--quick]

Pretrained CIFAR ResNet-56 pruned by L1 (uniform allocation) to 0.72x (the `filter_pruning_resnet56`
recipe's target), 0.66x and 0.5x of its MACs, with kept channel counts rounded to a multiple of 1, 4, 8
or 16. Every model is exported to ONNX and timed in ONNX Runtime on one thread at batch 1: all sessions
in one process, called in turn (round-robin, so load changes on the shared machine hit them alike),
median per model. Test top-1 right after pruning (no fine-tuning; first 1,000 test images) shows what
the coarser widths cost before recovery. The default `round_to` of `torchslim.prune` is the one whose
pruned models are fastest here.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import RESULTS, command_line, md_table, write_result
from torchslim.analysis.latency import machine_info, onnx_session
from torchslim.data import get_data
from torchslim.errors import InvalidInputError
from torchslim.models import create_model
from torchslim.onnx_export import to_onnx
from torchslim.prune import prune, prune_report
from torchslim.train import evaluate

TARGETS = (0.72, 0.66, 0.5)
ROUND_TO = (1, 4, 8, 16)


def widths(model) -> list[int]:
    """Distinct output widths of the convolutions, in order of first appearance."""
    seen = []
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d) and m.out_channels not in seen:
            seen.append(m.out_channels)
    return seen


def time_round_robin(paths: dict[str, Path], rounds: int) -> dict[str, float]:
    sessions = {k: onnx_session(str(p), threads=1) for k, p in paths.items()}
    feed = {"input": torch.randn(1, 3, 32, 32).numpy()}
    for s in sessions.values():
        for _ in range(10):
            s.run(None, feed)
    wall, cpu = {k: [] for k in sessions}, {k: [] for k in sessions}
    for _ in range(rounds):
        for k, s in sessions.items():
            c, t = time.thread_time(), time.perf_counter()
            s.run(None, feed)
            wall[k].append((time.perf_counter() - t) * 1e3)
            cpu[k].append((time.thread_time() - c) * 1e3)
    return {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in sessions}


def render(d: dict) -> str:
    rows, images = d["rows"], d["test_images"]
    table = md_table(["model", "conv widths", "MACs ratio", "ORT ms (1 thread, batch 1)", "latency ratio",
                      "ORT CPU ms", "CPU time ratio", f"top-1 before fine-tuning ({images} images)"],
                     [[k, "/".join(map(str, v["widths"][:8])) + ("..." if len(v["widths"]) > 8 else ""),
                       v["macs_ratio"], v["ort_ms"], v["latency_ratio"], v["ort_cpu_ms"], v["cpu_ratio"], v["top1"]]
                      for k, v in rows.items()])
    best = []
    for t in dict.fromkeys(v["target"] for v in rows.values() if v["target"] is not None):
        mine = {v["round_to"]: v["cpu_ratio"] for v in rows.values() if v["target"] == t}
        fastest = min(mine, key=mine.get)
        best.append(f"{t}x: round_to 1 -> {mine.get(1)}, fastest round_to {fastest} -> {mine[fastest]}")
    return f"""## Pruning: kept channels rounded (`round_to`) vs ONNX Runtime latency

`{d['command']}` — pretrained CIFAR ResNet-56, L1 filter pruning (uniform allocation) to a MACs target,
kept channel counts rounded up to a multiple of `round_to` and topped up towards the target; ONNX Runtime
{d['machine'].get('onnxruntime')}, one thread, batch 1, {len(rows)} sessions timed in turn for {d['rounds']} rounds,
medians of wall time and of the calling thread's CPU time (a one-thread ORT session runs on the caller's
thread; CPU time leaves out the time other processes hold the core, so it is the steadier figure on this
shared 2-core machine, load average {d['load_average']} at the end); CPU: {d['machine']['cpu']}.
Budget: no training, {d['wall_s']:.0f} s wall time in all.

{table}
{"".join(f"{chr(10)}- {k}: not reachable ({v})" for k, v in d["unreachable"].items())}

CPU time vs the original, per target: {"; ".join(best)}. In this run the unrounded widths (13/26/51...)
at 0.66-0.72x of the MACs ran no faster than the original in ONNX Runtime; rounded widths turn the MAC
savings into latency.
`torchslim.prune` defaults to `round_to=8`: 16 is a little faster where it applies, but a ResNet-56 stage
of 16 channels cannot shrink with it, so 0.5x is out of reach; 8 reaches every target (`round_to=1`
turns rounding off).
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="0.66x only, 100 rounds, 500 test images")
    ap.add_argument("--render", action="store_true", help="rewrite results/round_to.md from its .json")
    args = ap.parse_args(argv)
    if args.render:
        d = json.loads((RESULTS / "round_to.json").read_text())
        write_result("round_to", d, render(d))
        return 0
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    targets = (0.66,) if args.quick else TARGETS
    rounds, images = (100, 500) if args.quick else (400, 1000)
    data = get_data("cifar10", batch_size=250, limit_eval=images, augment=False)
    original = create_model("resnet56", pretrained=True).eval()
    x = torch.zeros(1, 3, 32, 32)
    rows = {"original": {"target": None, "round_to": None, "macs": prune_report(
        prune(original, "l1", example_input=x, ratio=0.0, round_to=1))["before"]["macs"], "widths": widths(original),
        "top1": evaluate(original, data.test)["top1"], "model": original}}
    unreachable = {}
    for target in targets:
        for r in ROUND_TO:
            try:
                m = prune(original, "l1", example_input=x, target_macs=target, round_to=r).eval()
            except InvalidInputError as e:  # e.g. 0.5x with round_to 16: the 16-wide groups cannot shrink
                unreachable[f"{target}x / round_to {r}"] = str(e)
                continue
            rows[f"{target}x / round_to {r}"] = {"target": target, "round_to": r, "macs": prune_report(m)["after"]["macs"],
                                                 "widths": widths(m), "top1": evaluate(m, data.test)["top1"], "model": m}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {k: to_onnx(v.pop("model"), x, Path(tmp) / f"{i}.onnx") for i, (k, v) in enumerate(rows.items())}
        ms = time_round_robin(paths, rounds)
    base = rows["original"]
    for k, v in rows.items():
        v.update(ort_ms=round(ms[k][0], 3), latency_ratio=round(ms[k][0] / ms["original"][0], 3),
                 ort_cpu_ms=round(ms[k][1], 3), cpu_ratio=round(ms[k][1] / ms["original"][1], 3),
                 macs_ratio=round(v["macs"] / base["macs"], 3))
    wall = time.perf_counter() - t_start
    data_out = {"command": command_line(), "machine": machine_info(1, with_peak=False), "rounds": rounds,
                "test_images": images, "wall_s": round(wall, 1), "load_average": round(os.getloadavg()[0], 1),
                "rows": rows, "unreachable": unreachable}
    md = render(data_out)
    write_result("round_to-quick" if args.quick else "round_to", data_out, md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

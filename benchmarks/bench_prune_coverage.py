"""Coverage: prune every torchvision classification model at 30 % channels (L1), forward, check MACs fell.

    python -m benchmarks.bench_prune_coverage [--quick] [--models a,b] [--size 64]

Random initialisation (no downloads). Inputs are small (64x64 by default; 224 where a model needs it,
e.g. ViT, MaxViT) because the machine has 2 shared CPU cores: channel arithmetic does not depend on it.
Rows are written as they finish, so a partial run still leaves a table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
import torchvision

from torchslim.analysis import profile
from torchslim.prune import prune, prune_report

RESULTS = Path(__file__).parent / "results"
QUICK = ["resnet18", "mobilenet_v2", "shufflenet_v2_x0_5", "googlenet", "efficientnet_b0", "regnet_x_400mf",
         "densenet121", "mnasnet0_5", "squeezenet1_0", "convnext_tiny"]


def _build(name):
    kw = {"aux_logits": False, "init_weights": False} if name in ("googlenet", "inception_v3") else {}
    return torchvision.models.get_model(name, weights=None, **kw).eval()


def run_one(name: str, size: int) -> dict:
    torch.manual_seed(0)
    row = {"model": name}
    try:
        m = _build(name)
        for s in (size, 224, 299):
            try:
                with torch.no_grad():
                    m(torch.randn(1, 3, s, s))
                break
            except Exception:
                continue
        row["input"] = s
        x = torch.randn(1, 3, s, s)
        before = profile(m, (3, s, s))
        t0 = time.perf_counter()
        p = prune(m, x, "l1", 0.3, inplace=True)
        row["time_s"] = round(time.perf_counter() - t0, 2)
        with torch.no_grad():
            y = p(x)
        after = profile(p, (3, s, s))
        row.update(macs_before=before.macs, macs_after=after.macs, params_before=before.params,
                   params_after=after.params, macs_ratio=round(after.macs / before.macs, 3))
        ok = y.shape == (1, 1000) and after.macs < before.macs
        row["status"] = "ok" if ok else ("no MAC reduction" if y.shape == (1, 1000) else f"output {tuple(y.shape)}")
        if prune_report(p)["pinned"]:
            row["pinned"] = prune_report(p)["pinned"][:5]
    except Exception as e:
        row["status"] = f"error: {type(e).__name__}: {str(e)[:160]}"
    return row


def write(rows, args):
    RESULTS.mkdir(exist_ok=True)
    payload = {"command": args.command, "size": args.size, "rows": rows, "machine": platform.processor() or platform.machine(),
               "torch": torch.__version__, "torchvision": torchvision.__version__}
    for name, text in (("prune_coverage.json", json.dumps(payload, indent=2)), ("prune_coverage.md", _md(rows, args))):
        tmp = RESULTS / (name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, RESULTS / name)
    doc = Path(__file__).parent.parent / "docs" / "prune_coverage.md"
    tmp = doc.with_suffix(".tmp")
    tmp.write_text("# Structured pruning coverage of the torchvision zoo\n\n" + _md(rows, args, heading=False))
    os.replace(tmp, doc)


def _md(rows, args, heading=True):
    ok = sum(r["status"] == "ok" for r in rows)
    lines = ["## Pruning coverage (torchvision zoo, L1, 30 % channels)\n"] if heading else []
    lines += [f"Command: `{args.command}`. Random init, input {args.size}x{args.size} (224 or 299 where the model "
              "requires it), batch 1. MACs = conv + linear multiply-accumulates (torchslim.analysis). "
              f"**{ok} / {len(rows)} models pruned, run and lost MACs.**\n",
              "| model | input | MACs before | MACs after | ratio | params before | params after | status | prune time (s) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        f = lambda k, d=1e6: f"{r[k] / d:.1f}M" if k in r else "-"
        lines.append(f"| {r['model']} | {r.get('input', '-')} | {f('macs_before')} | {f('macs_after')} | "
                     f"{r.get('macs_ratio', '-')} | {f('params_before')} | {f('params_after')} | {r['status']} | "
                     f"{r.get('time_s', '-')} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="10 representative models")
    ap.add_argument("--models", help="comma-separated names")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--skip", default="", help="comma-separated names to leave out (too big for this machine)")
    args = ap.parse_args(argv)
    args.command = "python -m benchmarks.bench_prune_coverage " + " ".join(argv if argv is not None else __import__("sys").argv[1:])
    names = args.models.split(",") if args.models else QUICK if args.quick else \
        torchvision.models.list_models(module=torchvision.models)
    names = [n for n in names if n not in set(args.skip.split(","))]
    rows = []
    for n in names:
        rows.append(run_one(n, args.size))
        print(json.dumps(rows[-1]), flush=True)
        write(rows, args)


if __name__ == "__main__":
    main()

"""Coverage: prune every torchvision classification model at 30 % channels (L1), forward, check MACs fell.

    python -m benchmarks.bench_prune_coverage [--quick] [--models a,b] [--size 64] [--timeout 300] [--fresh]

Random initialisation (no downloads). Inputs are small (64x64 by default, or the model's smallest accepted
size if larger; 224 where a model needs a fixed size, e.g. ViT, Swin, MaxViT) because the machine has 2
shared CPU cores: channel arithmetic does not depend on the input size.

Each model runs in its own forked process (a memory limit, a time limit, a crash cannot take the run down) and
writes its row to results/prune_coverage/<model>.json, so a killed run continues where it stopped (rows
already there are kept unless --fresh). Models are ordered so every family is covered first (its cheapest
member), then the rest by cost. Status: `pruned`, `error: UnsupportedModelError: ...` (a clear refusal
naming the module and op), `BUG: ...` (any other exception: a shape error deep in a forward pass is a bug
of torchslim), or `skipped: ...` with the reason (time or memory limit).
"""
from __future__ import annotations

from benchmarks.common import add_device_arg, write_text_atomic
import argparse
import json
import multiprocessing
import os
import platform
import re
import resource
import sys
import time
from pathlib import Path

import torch
import torchvision

RESULTS = Path(__file__).parent / "results"
ROWS = RESULTS / "prune_coverage"
DOC = Path(__file__).parent.parent / "docs" / "prune_coverage.md"
QUICK = ["resnet18", "mobilenet_v2", "shufflenet_v2_x0_5", "googlenet", "efficientnet_b0", "regnet_x_400mf",
         "densenet121", "mnasnet0_5", "squeezenet1_0", "convnext_tiny"]
TRANSFORMERS = ("vit", "swin", "maxvit")  # covered after the CNN families


def _meta(name: str) -> dict:
    """torchvision's offline metadata of the model's weights (GFLOPs at 224, params, smallest input)."""
    try:
        return torchvision.models.get_model_weights(name).DEFAULT.meta
    except Exception:
        return {}


def family(name: str) -> str:
    return re.match(r"[a-z]+(_v\d)?", name).group(0).rstrip("_")


def ordered(names: list[str]) -> list[str]:
    """Cheapest member of every CNN family, then of every transformer family, then the rest by GFLOPs."""
    cost = {n: _meta(n).get("_ops", 1e9) for n in names}
    by_cost = sorted(names, key=cost.get)
    first, seen = [], set()
    for n in by_cost:
        if family(n) not in seen:
            seen.add(family(n))
            first.append(n)
    first.sort(key=lambda n: (family(n).startswith(TRANSFORMERS), cost[n]))
    return first + [n for n in by_cost if n not in first]


def build_torchvision(name):
    kw = {"aux_logits": False, "init_weights": False} if name in ("googlenet", "inception_v3") else {}
    return torchvision.models.get_model(name, weights=None, **kw).eval()


def run_one(name: str, size: int) -> dict:
    """Prune one model in this process; every exception becomes the row's status."""
    from torchslim.analysis import profile
    from torchslim.errors import TorchslimError
    from torchslim.prune import prune, prune_report

    torch.manual_seed(0)
    row = {"model": name}
    try:
        m = build_torchvision(name)
        min_size = max(_meta(name).get("min_size", (1, 1)))
        for s in dict.fromkeys((max(size, min_size), 224, 299)):
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
        p = prune(m, "l1", example_input=x, ratio=0.3, inplace=True, round_to=1)  # exact ratios: the graph is measured, not rounding
        row["time_s"] = round(time.perf_counter() - t0, 2)
        with torch.no_grad():
            y = p(x)
        after = profile(p, (3, s, s))
        row.update(macs_before=before.macs, macs_after=after.macs, params_before=before.params,
                   params_after=after.params, macs_ratio=round(after.macs / before.macs, 3))
        ok = y.shape == (1, 1000) and after.macs < before.macs
        pinned = prune_report(p)["pinned"]
        if pinned:
            row["pinned"] = pinned[:5]
        why = f" ({pinned[-1][:160]})" if pinned else ""
        row["status"] = "pruned" if ok else (f"no MAC reduction{why}" if y.shape == (1, 1000)
                                             else f"BUG: output {tuple(y.shape)}")
    except MemoryError:
        row["status"] = "skipped: out of memory"
    except TorchslimError as e:
        row["status"] = f"error: {type(e).__name__}: {str(e)[:200]}"
    except Exception as e:
        oom = isinstance(e, RuntimeError) and ("alloc" in str(e) or "memory" in str(e))
        row["status"] = "skipped: out of memory" if oom else f"BUG: {type(e).__name__}: {str(e)[:200]}"
    return row


def _child(name: str, size: int, mem_gb: float, fn, rows: Path):
    limit = int(mem_gb * 2 ** 30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    write_text_atomic(rows / f"{name}.json", json.dumps(fn(name, size), indent=1))


def run_isolated(name: str, size: int, timeout: float, mem_gb: float, fn=None, rows: Path = ROWS) -> dict:
    """`fn` (default `run_one`) in a forked child (torch already imported: no 20 s start-up per model) with a
    time and an address-space limit; returns its row, also written to `rows`/<name>.json."""
    out = rows / f"{name}.json"
    out.unlink(missing_ok=True)
    proc = multiprocessing.get_context("fork").Process(target=_child, args=(name, size, mem_gb, fn or run_one, rows))
    t0 = time.perf_counter()
    proc.start()
    proc.join(timeout)
    if proc.is_alive():
        proc.kill()
        proc.join()
        rc = None
    else:
        rc = proc.exitcode
    wall = round(time.perf_counter() - t0, 1)
    if rc == 0 and out.exists():
        row = json.loads(out.read_text())
    elif rc is None:
        row = {"model": name, "status": f"skipped: over the {timeout:.0f} s time limit on one core"}
    elif rc < 0:
        row = {"model": name, "status": f"skipped: killed by signal {-rc} (memory?)"}
    else:
        row = {"model": name, "status": f"BUG: child exited with {rc} (see its stderr)"}
    row["wall_s"] = wall
    write_text_atomic(out, json.dumps(row, indent=1))
    return row


def write(rows, args):
    payload = {"command": args.command, "size": args.size, "timeout_s": args.timeout, "mem_gb": args.mem_gb,
               "rows": rows, "machine": platform.processor() or platform.machine(),
               "torch": torch.__version__, "torchvision": torchvision.__version__}
    write_text_atomic(RESULTS / "prune_coverage.json", json.dumps(payload, indent=2))
    write_text_atomic(RESULTS / "prune_coverage.md", _md(rows, args))
    write_doc_section("torchvision", "## The torchvision zoo\n\n" + DOC_INTRO + _md(rows, args, heading=False))


DOC_TITLE = "# Structured pruning coverage: the torchvision zoo and timm\n"


def write_doc_section(key: str, text: str) -> None:
    """Replace the section `key` of docs/prune_coverage.md (between HTML comment markers), keeping the
    sections other benchmarks write (torchvision here, timm in bench_prune_coverage_timm.py)."""
    begin, end = f"<!-- begin {key} -->", f"<!-- end {key} -->"
    doc = DOC.read_text() if DOC.exists() else DOC_TITLE
    block = f"{begin}\n{text.rstrip()}\n{end}"
    if begin in doc:
        doc = doc[:doc.index(begin)] + block + doc[doc.index(end) + len(end):]
    else:
        doc = doc.rstrip() + "\n\n" + block + "\n"
    write_text_atomic(DOC, doc)


STRUCTURES_MARKER = "<!-- structures: written by benchmarks/bench_prune_structures.py -->"


DOC_INTRO = """Every classification model of `torchvision.models.list_models(module=torchvision.models)`,
pruned with `torchslim.prune(model, "l1", example_input=x, ratio=0.3)`, then run and profiled. Written by
`benchmarks/bench_prune_coverage.py` (rerun it to refresh; rows are kept per model in
`benchmarks/results/prune_coverage/`, so a killed run resumes). Status:

- `pruned`: the pruned model runs, returns (1, 1000) and has fewer MACs;
- `no MAC reduction (...)`: it runs, but every channel was pinned; the note names the op that pinned the
  last of them (attention ops torchslim does not rewrite: `MultiheadAttention`, Swin's
  `shifted_window_attention`, reshapes with literal head sizes);
- `error: UnsupportedModelError: ...`: refused with a message naming the module and op;
- `BUG: ...`: any other failure (e.g. a shape error in the pruned model's forward): a torchslim bug;
- `skipped: ...`: over the per-model time or memory limit of this machine (2 shared cores, 24 GB).

"""


def _md(rows, args, heading=True):
    count = {k: sum(r["status"].startswith(k) for r in rows) for k in ("pruned", "no MAC", "error", "BUG", "skipped")}
    lines = ["## Pruning coverage (torchvision zoo, L1, 30 % channels)\n"] if heading else []
    lines += [f"Command: `{args.command}`. Random init, batch 1, input {args.size}x{args.size} or the model's "
              "smallest accepted size from torchvision's metadata (column `input`: 224 for ViT/Swin/MaxViT, 256 for "
              "Swin V2, 75 for Inception-v3). Each model runs in "
              f"its own process on one core, limited to {args.timeout:.0f} s and {args.mem_gb:.0f} GB of address "
              "space. MACs = conv + linear multiply-accumulates (torchslim.analysis); `prune (s)` = graph + "
              "scores + surgery, `wall (s)` = the whole forked child (build, trace, profile twice, prune, forward). "
              f"**{count['pruned']} / {len(rows)} models pruned, run and lost MACs**; {count['no MAC']} ran but "
              f"kept all their MACs (every channel pinned: the status names the op), {count['error']} refused "
              f"with a clear error, {count['BUG']} failed otherwise, {count['skipped']} skipped (limits). Whole "
              f"run: {sum(r.get('wall_s', 0) for r in rows) / 60:.1f} min wall on one core shared with other "
              "jobs. ViT loses whole attention heads, its embedding width (`hidden_dim` follows) and MLP widths; "
              "Swin and MaxViT lose MACs in their MLP hidden widths only: their attention functions and the "
              "embedding width are pinned (the `pinned` notes in the JSON name the ops).\n",
              "| model | input | MACs before | MACs after | ratio | params before | params after | status | "
              "prune (s) | wall (s) |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        def f(k, d=1e6):
            return f"{r[k] / d:.1f}M" if k in r else "-"
        status = r["status"].replace("|", "/")
        lines.append(f"| {r['model']} | {r.get('input', '-')} | {f('macs_before')} | {f('macs_after')} | "
                     f"{r.get('macs_ratio', '-')} | {f('params_before')} | {f('params_after')} | {status} | "
                     f"{r.get('time_s', '-')} | {r.get('wall_s', '-')} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser()
    add_device_arg(ap)
    ap.add_argument("--quick", action="store_true", help="10 representative models")
    ap.add_argument("--models", help="comma-separated names")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--skip", default="", help="comma-separated names to leave out")
    ap.add_argument("--timeout", type=float, default=300, help="seconds per model")
    ap.add_argument("--mem-gb", type=float, default=12, help="address-space limit per model")
    ap.add_argument("--fresh", action="store_true", help="rerun models that already have a row")
    args = ap.parse_args(argv)
    args.command = "python -m benchmarks.bench_prune_coverage " + " ".join(argv if argv is not None else sys.argv[1:])
    names = args.models.split(",") if args.models else QUICK if args.quick else \
        ordered(torchvision.models.list_models(module=torchvision.models))
    names = [n for n in names if n not in set(args.skip.split(","))]
    import torchslim.analysis, torchslim.prune  # noqa: F401  (imported once, before the forks)
    rows = []
    for n in names:
        path = ROWS / f"{n}.json"
        if path.exists() and not args.fresh:
            rows.append(json.loads(path.read_text()))
        else:
            rows.append(run_isolated(n, args.size, args.timeout, args.mem_gb))
            print(json.dumps(rows[-1]), flush=True)
        write(rows, args)


if __name__ == "__main__":
    main()

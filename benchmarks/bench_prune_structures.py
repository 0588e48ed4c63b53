"""Structures a CNN is made of, pruned by torchslim and by Torch-Pruning side by side.

    python -m benchmarks.bench_prune_structures [--only a,b]

The structures are our own re-creations of the models in Torch-Pruning's test suite (its tests/ folder,
v1.6.1) plus structures its tests lack (tests/graph/structures.py). Each is pruned at 30 % of the channels
by L1 magnitude: `torchslim.prune(model, "l1", example_input=x, ratio=0.3)` and Torch-Pruning's `MagnitudePruner(p=1,
pruning_ratio=0.3)`, told to leave the layers that write the model outputs alone (torchslim keeps output
shapes by itself) and given every nn.MultiheadAttention's head count (`num_heads`), as its docs ask. A
case passes when the pruned model runs, keeps its output shapes and its MACs fall to at most 0.8x; MACs
are counted by Torch-Pruning's `count_ops_and_params` for both sides. torchslim's exactness: a random
plan removing 40 % of every group, the original with those channels zeroed vs the pruned model, max
|difference| of the outputs (structures with a LayerNorm over channels are not exact by nature: removing a
channel changes the statistics).

`torch-pruning` is needed only here (the `bench` extra). Writes results/prune_structures.{json,md} and the
structures table of docs/prune_coverage.md.
"""
from __future__ import annotations

import argparse
import copy
import importlib.metadata
import platform
import time
from pathlib import Path

import torch

from benchmarks.common import command_line, md_table, write_result
from tests.graph.structures import OUTPUT_LAYERS, STRUCTURES, call, mask_plan, outputs, random_plan

DOC = Path(__file__).resolve().parent.parent / "docs" / "prune_coverage.md"
MARKER = "<!-- structures: written by benchmarks/bench_prune_structures.py -->"
MAX_MACS = 0.8


def _macs(model, x) -> float:
    import torch_pruning as tp

    with torch.no_grad():
        return float(tp.utils.count_ops_and_params(model, x)[0])


def _verdict(model, x, before_shapes, base_macs) -> dict:
    with torch.no_grad():
        shapes = [tuple(o.shape) for o in outputs(call(model.eval(), x))]
    ratio = _macs(model, x) / base_macs
    if shapes != before_shapes:
        return {"status": "output shape changed", "macs_ratio": round(ratio, 3)}
    return {"status": "pass" if ratio <= MAX_MACS else f"MACs {ratio:.2f}x", "macs_ratio": round(ratio, 3)}


def _built(name: str):
    """The structure's model (eval, seeded), its input, its output shapes and its MACs."""
    build, _, _ = STRUCTURES[name]
    torch.manual_seed(0)
    model, x = build()
    model.eval()
    with torch.no_grad():
        shapes = [tuple(o.shape) for o in outputs(call(model, x))]
    return model, x, shapes, _macs(model, x)


def run_torchslim(name: str) -> dict:
    import torchslim

    model, x, shapes, base = _built(name)
    t0 = time.perf_counter()
    try:
        small = torchslim.prune(model, "l1", example_input=x, ratio=0.3, round_to=1)  # exact ratios, as measured
        row = {"time_s": round(time.perf_counter() - t0, 2), **_verdict(small, x, shapes, base)}
    except Exception as e:
        return {"status": f"error: {type(e).__name__}: {str(e)[:160]}"}
    row["max_abs_diff"] = _exactness(name)
    return row


def _exactness(name: str) -> float | None:
    """Max |masked original - pruned| over the outputs, for a random 40 % plan."""
    from torchslim.graph import ChannelGraph
    from torchslim.prune import apply_plan

    build, _, _ = STRUCTURES[name]
    torch.manual_seed(0)
    model, x = build()
    model.eval()
    graph = ChannelGraph(model, x)
    plan = random_plan(graph, 0.4, torch.Generator().manual_seed(1))
    masked = copy.deepcopy(model)
    mask_plan(masked, graph, plan)
    apply_plan(model, graph, plan)
    with torch.no_grad():
        diffs = [(a - b).abs().max().item() for a, b in zip(outputs(call(masked, x)), outputs(call(model, x)))]
    return max(diffs) if diffs else 0.0


def run_torch_pruning(name: str) -> dict:
    import torch_pruning as tp

    model, x, shapes, base = _built(name)
    t0 = time.perf_counter()
    try:
        ignored = [model.get_submodule(n) for n in OUTPUT_LAYERS[name]]
        heads = {m: m.num_heads for m in model.modules() if isinstance(m, torch.nn.MultiheadAttention)}
        pruner = tp.pruner.MagnitudePruner(model, x, importance=tp.importance.MagnitudeImportance(p=1),
                                           pruning_ratio=0.3, ignored_layers=ignored, num_heads=heads)
        pruner.step()
        return {"time_s": round(time.perf_counter() - t0, 2), **_verdict(model, x, shapes, base)}
    except Exception as e:
        return {"status": f"error: {type(e).__name__}: {str(e)[:160]}"}


def markdown(rows: list[dict], meta: dict) -> str:
    def passed(side, source=None):
        rs = [r for r in rows if source is None or r["source"] == source]
        return f"{sum(r[side]['status'] == 'pass' for r in rs)} / {len(rs)}"

    table = md_table(
        ["structure", "from", "torchslim", "MACs", "exact (max abs diff)", "Torch-Pruning", "MACs"],
        [[r["structure"], r["source"], r["torchslim"]["status"], r["torchslim"].get("macs_ratio", "-"),
          _exact_cell(r), r["torch_pruning"]["status"].replace("|", "/"), r["torch_pruning"].get("macs_ratio", "-")]
         for r in rows])
    return (f"## Structured pruning per structure: torchslim vs Torch-Pruning\n\n"
            f"Command: `{meta['command']}` ({meta['wall_s']:.0f} s wall, budget 15 min, one thread, "
            f"{meta['machine']}; torch {meta['torch']}, torch-pruning {meta['torch_pruning']}). Each structure "
            f"pruned at 30 % of the channels by L1 magnitude; pass = runs, keeps output shapes, MACs <= "
            f"{MAX_MACS}x (Torch-Pruning's counter for both); Torch-Pruning is told which layers write the outputs and "
            f"each attention's head count. Exactness (torchslim): the original with a random 40 % plan's "
            f"channels zeroed vs the pruned model (`not exact by nature`: a LayerNorm over channels).\n\n"
            f"**torchslim passes {passed('torchslim')}, Torch-Pruning {passed('torch_pruning')}**; on "
            f"Torch-Pruning's own test structures {passed('torchslim', 'torch-pruning')} vs "
            f"{passed('torch_pruning', 'torch-pruning')}.\n\n" + table + "\n")


def _exact_cell(r) -> str:
    d = r["torchslim"].get("max_abs_diff")
    if d is None:
        return "-"
    return f"{d:.1e}" + ("" if r["exact"] else " (not exact by nature)")


def write_doc(md: str) -> None:
    text = DOC.read_text() if DOC.exists() else ""
    head = text.split(MARKER)[0].rstrip() + "\n\n"
    tmp = DOC.with_name(DOC.name + ".tmp")
    tmp.write_text(head + MARKER + "\n\n" + md)
    tmp.replace(DOC)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="comma-separated structure names")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    names = args.only.split(",") if args.only else list(STRUCTURES)
    t0 = time.perf_counter()
    rows = []
    for name in names:
        _, source, exact = STRUCTURES[name]
        row = {"structure": name, "source": source, "exact": exact,
               "torchslim": run_torchslim(name), "torch_pruning": run_torch_pruning(name)}
        print(row, flush=True)
        rows.append(row)
    meta = {"command": command_line(), "wall_s": time.perf_counter() - t0,
            "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
            "torch_pruning": importlib.metadata.version("torch-pruning")}
    md = markdown(rows, meta)
    write_result("prune_structures", {**meta, "rows": rows}, md)
    if not args.only:
        write_doc(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

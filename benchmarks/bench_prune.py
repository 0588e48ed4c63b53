"""Structured pruning benchmarks.

    python -m benchmarks.bench_prune [--quick]

1. CIFAR ResNet-56 at 2x MAC reduction (target_macs=0.5, uniform): test top-1 right after pruning and
   after a small stated fine-tuning budget, per criterion; measured CPU latency beside the MAC ratio.
   Reference: Li et al. 2017, ResNet-56-pruned-B: -27.6 % FLOPs at 93.06 % (from 93.04 %).
2. Rank correlation with the oracle (Molchanov et al. 2017, sec. 4): pretrained CIFAR ResNet-20, every
   registered criterion's per-channel scores against the oracle's (loss change when one channel alone is
   removed), Spearman's rho per group (mean over groups) and over all channels at once with each group's
   scores divided by their mean magnitude, as the global ranking does. Written to results/prune_oracle.*
   (`--only-oracle` runs just this part).
3. Side by side with Torch-Pruning (pip install torch-pruning, the `bench` extra): ResNet-18, ResNet-50,
   MobileNetV2, ShuffleNetV2 at 224, 30 % channels by L1 in both: time to build the graph and prune,
   MACs and params after, and whether the pruned model runs.
"""
from __future__ import annotations

from benchmarks.common import add_device_arg
import argparse
import copy
import json
import os
import time
from pathlib import Path

import torch
import torchvision

from torchslim.analysis import measure_latency, profile
from torchslim.data import get_data
from torchslim.models import create_model
from torchslim.prune import prune, prune_report
from torchslim.train import FitConfig, evaluate

RESULTS = Path(__file__).parent / "results"


def resnet56():
    from benchmarks.bench_baselines import baseline

    return baseline("resnet56", "cifar10")


def bench_resnet56(args) -> dict:
    torch.manual_seed(0)
    model, source = resnet56()
    model.eval()
    data = get_data("cifar10", batch_size=128, limit_train=args.train_images, limit_eval=args.test_images)
    x = torch.randn(1, 3, 32, 32)
    base_acc = evaluate(model, data.test)["top1"]
    ft = FitConfig(epochs=1, lr=0.01, max_steps_per_epoch=args.finetune_steps, progress=False)
    rows = []
    for crit in args.criteria:
        t0 = time.perf_counter()
        p = prune(model, crit, example_input=x, target_macs=0.5, data=data, batches=4, options={"candidates": 5})
        t_prune = time.perf_counter() - t0
        acc0 = evaluate(p, data.test)["top1"]
        from torchslim.train import fit

        fit(p, data.train, config=ft)
        p.cpu().eval()
        acc1 = evaluate(p, data.test)["top1"]
        # side by side, alternating, so both see the same machine load
        lats = {"base": [], "pruned": []}
        for _ in range(3):
            for key, mm in (("base", model), ("pruned", p)):
                lats[key].append(measure_latency(mm, input_size=(3, 32, 32), batch_size=1, threads=1).median_ms)
        base_lat, lat = sorted(lats["base"])[1], sorted(lats["pruned"])[1]
        r = prune_report(p)
        rows.append({"criterion": crit, "macs_ratio": round(r["macs_ratio"], 3), "params_ratio": round(r["params_ratio"], 3),
                     "top1_pruned": round(acc0, 2), "top1_finetuned": round(acc1, 2),
                     "latency_ms": round(lat, 3), "base_latency_ms": round(base_lat, 3), "speedup": round(base_lat / lat, 2), "prune_time_s": round(t_prune, 1)})
        print(json.dumps(rows[-1]), flush=True)
    return {"source": source, "baseline_top1": round(base_acc, 2),
            "test_images": data.test.dataset.__len__(), "finetune": f"{args.finetune_steps} SGD steps of batch 128, lr 0.01",
            "rows": rows}


def bench_oracle(args) -> dict:
    """Spearman correlation of every registered criterion with the oracle on pretrained ResNet-20."""
    from scipy.stats import spearmanr

    from torchslim.graph import ChannelGraph
    from torchslim.prune.allocation import normalise
    from torchslim.prune.criteria import CRITERIA, ScoreContext

    torch.manual_seed(0)
    model = create_model("resnet20", pretrained=True).eval()
    n = args.oracle_images
    data = get_data("cifar10", batch_size=args.oracle_batch, eval_batch_size=args.oracle_batch,
                    limit_train=n, limit_eval=n)
    graph = ChannelGraph(model, torch.randn(1, 3, 32, 32))
    batches = max(1, n // args.oracle_batch)
    names = sorted({"oracle", *(args.oracle_criteria or CRITERIA.names())}, key=lambda c: (c != "oracle", c))
    scores, times, cpu = {}, {}, {}
    for crit in names:
        t0, c0 = time.perf_counter(), time.process_time()
        ctx = ScoreContext(model, graph, data, ratio=0.3, batches=batches, options={"candidates": 10})
        scores[crit] = CRITERIA.get(crit)(ctx).double()
        times[crit], cpu[crit] = round(time.perf_counter() - t0, 1), round(time.process_time() - c0, 1)
        print(crit, times[crit], "s", flush=True)
    ref, ref_norm = scores["oracle"], normalise(graph, scores["oracle"])
    rows = []
    for crit in names:
        if crit == "oracle":
            continue
        per_group = []
        for g in graph.groups:
            rho = spearmanr(scores[crit][g.units].numpy(), ref[g.units].numpy()).statistic
            per_group.append(None if rho != rho else round(float(rho), 3))  # NaN: constant scores
        valid = [r for r in per_group if r is not None]
        glob = spearmanr(normalise(graph, scores[crit]).numpy(), ref_norm.numpy()).statistic
        rows.append({"criterion": crit, "layer_mean": round(sum(valid) / len(valid), 3) if valid else None,
                     "layers_defined": len(valid), "global": round(float(glob), 3), "per_group": per_group,
                     "time_s": times[crit]})
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "per_group"}), flush=True)
    return {"model": "resnet20 (pretrained, cifar10)", "units": graph.num_units,
            "groups": [(g.name, len(g)) for g in graph.groups], "images": batches * args.oracle_batch,
            "batch": args.oracle_batch, "oracle_time_s": times["oracle"], "oracle_cpu_s": cpu["oracle"], "rows": rows,
            "subset": args.oracle_criteria}


def _oracle_md(res, cmd) -> str:
    subset = res.get("subset")
    lines = ["## Pruning criteria against the oracle (rank correlation)"
             + (f", reduced run: {', '.join(subset)}\n" if subset else "\n"),
             f"Command: `{cmd}`. {res['model']}: {res['units']} prunable channels in {len(res['groups'])} groups. "
             f"The oracle is |loss change| when one channel alone is removed (Molchanov et al. 2017), measured on "
             f"{res['images']} validation images ({res['oracle_time_s']} s wall on one core shared with other jobs"
             f"{', %s s CPU' % res['oracle_cpu_s'] if 'oracle_cpu_s' in res else ''}); data-driven criteria read "
             f"the same number of images (train split for the ones that use training batches), random_masks at "
             "ratio 0.3 with 10 candidates, taylor without fine-tuning (one pass of gradients) and with its default "
             "FLOPs regulariser. Spearman's rho with the oracle: *layer mean* = mean over groups of the "
             "within-group rho (groups where a criterion's scores are constant are left out), *global* = over "
             "all channels, each group's scores divided by their mean magnitude as `allocation=\"global\"` does. "
             "Molchanov et al. report these for VGG-16/AlexNet on Birds-200/Flowers; with this few images the "
             "oracle itself is noisy, so compare criteria with each other, not with the paper.\n",
             "| criterion | rho, layer mean | rho, global | groups with a defined rho | scoring time (s) |",
             "|---|---|---|---|---|"]
    for r in sorted(res["rows"], key=lambda r: -(r["global"] if r["global"] == r["global"] else -2)):
        lines.append(f"| {r['criterion']} | {r['layer_mean']} | {r['global']} | {r['layers_defined']} / "
                     f"{len(res['groups'])} | {r['time_s']} |")
    lines += ["", "Within-group rho per group (" + ", ".join(f"{n} ({k})" for n, k in res["groups"]) + "):", "",
              "| criterion | " + " | ".join(n for n, _ in res["groups"]) + " |",
              "|---|" + "---|" * len(res["groups"])]
    for r in res["rows"]:
        lines.append(f"| {r['criterion']} | " + " | ".join("-" if v is None else str(v) for v in r["per_group"]) + " |")
    return "\n".join(lines) + "\n"


def bench_torch_pruning(args) -> list[dict]:
    try:
        import torch_pruning as tp
    except ImportError:
        return [{"model": "-", "status": "torch-pruning not installed (pip install .[bench])"}]
    out = []
    x = torch.randn(1, 3, 224, 224)
    def tp_prune(m):
        imp = tp.importance.MagnitudeImportance(p=1)
        pr = tp.pruner.MagnitudePruner(m, x, importance=imp, pruning_ratio=0.3,
                                       ignored_layers=[mod for mod in m.modules()
                                                       if isinstance(mod, torch.nn.Linear) and mod.out_features == 1000])
        pr.step()
        return m

    def timed(fn, m):
        t0 = time.perf_counter()
        p = fn(m)
        return time.perf_counter() - t0, p

    for name in args.tp_models:
        row = {"model": name, "tp_version": tp.__version__}
        base = torchvision.models.get_model(name, weights=None).eval()
        row["macs_before"] = profile(base, (3, 224, 224)).macs
        ts, tps = [], []
        for _ in range(args.tp_rounds):  # alternate, so both see the same machine load
            t, p = timed(lambda m: prune(m, "l1", example_input=x, ratio=0.3, inplace=True), copy.deepcopy(base))
            ts.append(t)
            if "tp_status" not in row:
                try:
                    t, m = timed(tp_prune, copy.deepcopy(base))
                    tps.append(t)
                except Exception as e:
                    import traceback

                    last = traceback.extract_tb(e.__traceback__)[-1]
                    row["tp_status"] = (f"{type(e).__name__}: {str(e)[:100]} (in {last.name}, "
                                        f"{Path(last.filename).parent.name}/{Path(last.filename).name})")
        row["torchslim_s"] = round(sorted(ts)[len(ts) // 2], 2)
        prof = profile(p, (3, 224, 224))
        row.update(torchslim_macs=prof.macs, torchslim_params=prof.params,
                   torchslim_runs=bool(p(x).shape == (1, 1000)))
        if tps:
            row["tp_s"] = round(sorted(tps)[len(tps) // 2], 2)
            prof = profile(m, (3, 224, 224))
            row.update(tp_macs=prof.macs, tp_params=prof.params, tp_runs=bool(m(x).shape == (1, 1000)))
        out.append(row)
        print(json.dumps(row), flush=True)
    return out


def _md(res, commands: dict) -> str:
    r56 = res.get("resnet56")
    lines = ["## Structured pruning\n"]
    if r56:
        lines += [f"### CIFAR ResNet-56 at 2x MAC reduction (target_macs=0.5, uniform allocation)\n",
                  f"Command: `{commands.get('resnet56', 'python -m benchmarks.bench_prune --quick')}`.\n",
                  f"Start: {r56['source']}; baseline top-1 {r56['baseline_top1']} % on {r56['test_images']} test images, "
                  "latency: batch 1, 1 thread, medians of the original and the pruned model measured alternately (3 rounds, middle value). Fine-tuning budget: "
                  f"{r56['finetune']}. Reference (Li et al. 2017, full CIFAR-10, 40 epochs retraining): "
                  "ResNet-56 -27.6 % FLOPs at 93.06 % from 93.04 %.\n",
                  "| criterion | MACs ratio | params ratio | top-1 pruned | top-1 fine-tuned | latency original / pruned (ms) | speedup |",
                  "|---|---|---|---|---|---|---|"]
        for r in r56["rows"]:
            lines.append(f"| {r['criterion']} | {r['macs_ratio']} | {r['params_ratio']} | {r['top1_pruned']} | "
                         f"{r['top1_finetuned']} | {r['base_latency_ms']} / {r['latency_ms']} | {r['speedup']}x |")
    if res.get("torch_pruning"):
        lines += ["\n### Side by side with Torch-Pruning (224x224, 30 % channels, L1; random init)\n",
                  f"Command: `{commands.get('torch_pruning', 'python -m benchmarks.bench_prune --quick')}`. Times include "
                  "building the dependency graph and the surgery; median of the rounds, the two libraries alternating "
                  "(shared machine: compare within a row).\n",
                  "| model | MACs before | torchslim MACs | TP MACs | torchslim params | TP params | torchslim time (s) | TP time (s) | both run |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in res["torch_pruning"]:
            g = lambda k: f"{r[k] / 1e6:.1f}M" if k in r else "fails (below)" if "tp_status" in r else "-"
            lines.append(f"| {r['model']} | {g('macs_before')} | {g('torchslim_macs')} | {g('tp_macs')} | "
                         f"{g('torchslim_params')} | {g('tp_params')} | {r.get('torchslim_s')} | {r.get('tp_s', '-')} | "
                         f"{r.get('torchslim_runs')}/{r.get('tp_runs', '-')} |")
        for r in res["torch_pruning"]:
            if "tp_status" in r:
                lines.append(f"\nTorch-Pruning {r.get('tp_version', '')} on {r['model']}: {r['tp_status']}.")
    return "\n".join(lines) + "\n"


def main(argv=None):
    import sys

    ap = argparse.ArgumentParser()
    add_device_arg(ap)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--skip-resnet56", action="store_true")
    ap.add_argument("--skip-tp", action="store_true")
    ap.add_argument("--skip-oracle", action="store_true")
    ap.add_argument("--only-oracle", action="store_true", help="only the rank correlation with the oracle")
    ap.add_argument("--oracle-images", type=int, default=None, help="validation images for the oracle")
    ap.add_argument("--oracle-criteria", help="comma-separated criteria to compare (default: every registered one); "
                    "the result goes to results/prune_oracle-subset.*, beside the full comparison")
    ap.add_argument("--criteria", help="comma-separated criteria for the ResNet-56 part (default: ten of them)")
    ap.add_argument("--tp-models", help="comma-separated torchvision models for the Torch-Pruning comparison")
    args = ap.parse_args(argv)
    if args.only_oracle:
        args.skip_resnet56 = args.skip_tp = True
    args.oracle_images = args.oracle_images or (128 if args.quick else 256)
    args.oracle_batch = min(128, args.oracle_images)
    args.oracle_criteria = args.oracle_criteria.split(",") if args.oracle_criteria else None
    cmd = "python -m benchmarks.bench_prune " + " ".join(sys.argv[1:] if argv is None else argv)
    args.criteria = args.criteria.split(",") if args.criteria else ["l1", "taylor", "random"] if args.quick else \
        ["l1", "l2", "bn_scale", "random", "apoz", "entropy", "taylor", "lda", "icc", "random_masks"]
    args.test_images = 500 if args.quick else 2000
    args.train_images = 5000 if args.quick else 20000
    args.finetune_steps = 20 if args.quick else 150
    args.tp_rounds = 1 if args.quick else 3
    args.tp_models = args.tp_models.split(",") if args.tp_models else ["resnet18", "mobilenet_v2"] if args.quick \
        else ["resnet18", "resnet50", "mobilenet_v2", "shufflenet_v2_x1_0"]
    if not args.skip_oracle:
        from benchmarks.common import write_result

        res = bench_oracle(args)
        write_result("prune_oracle" + ("-quick" if args.quick else "") + ("-subset" if args.oracle_criteria else ""),
                     res, _oracle_md(res, cmd))
    if args.skip_tp and args.skip_resnet56:
        return
    # parts that ran replace theirs in the existing results; the others' figures (and commands) stay
    path = RESULTS / "prune.json"
    res = json.loads(path.read_text()) if path.is_file() else {}
    commands = res.pop("commands", {})
    if not args.skip_tp:
        res["torch_pruning"] = bench_torch_pruning(args)
        commands["torch_pruning"] = cmd
    if not args.skip_resnet56:
        res["resnet56"] = bench_resnet56(args)
        commands["resnet56"] = cmd
    res["commands"] = commands
    RESULTS.mkdir(exist_ok=True)
    for name, text in (("prune.json", json.dumps(res, indent=2)), ("prune.md", _md(res, commands))):
        tmp = RESULTS / (name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, RESULTS / name)


if __name__ == "__main__":
    main()

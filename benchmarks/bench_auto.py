"""Automatic compression against uniform L1 filter pruning and Tucker alone, at the same measured speedup.

    python -m benchmarks.bench_auto [--quick] [--model resnet56] [--target latency=0.5x] [--actions prune,lowrank,quant]

Issue #8's comparison on CIFAR-10: the speedup `torchslim.auto` reaches within `--max-drop` points and
what the two single methods lose at that same speedup, each after the same fine-tuning budget:
(a) auto: prune (per channel group), Tucker-2/SVD (per layer) and int8 (whole model, ONNX Runtime)
    actions, each measured alone (latency on the runtime, one thread, batch 1; top-1 on
    `--eval-images` validation images), combined greedily, checked for real, fine-tuned;
(b) uniform L1 filter pruning (the same ratio in every group), the ratio bisected until its measured
    latency matches auto's;
(c) Tucker alone: the same search restricted to the Tucker-2/SVD actions (their measurements reused),
    aimed at auto's measured speedup whatever it costs in accuracy.
Figures: top-1 on `--test-images` test images before and after the fine-tuning. The model is the
baseline of bench_baselines.py (the shipped checkpoint for the CIFAR ResNets; said in the result). Full run (ResNet-56, 118 actions): estimated 25-30 min of one core (extrapolated from
the quick run, not yet measured); --quick (ResNet-20, 46 actions, 20 fine-tuning steps): 2.7 min of
CPU (11 min wall on a core shared four ways). Both times are in the result (`times_s`, CPU and wall).
"""
from __future__ import annotations

import argparse
import time

import torch

from benchmarks.bench_baselines import baseline
from benchmarks.common import add_device_arg, command_line, md_table, write_result
from torchslim.auto import Target, auto_compress, measure_actions, metric_fn
from torchslim.auto import build_actions
from torchslim.data import get_data
from torchslim.prune import prune
from torchslim.train import FitConfig, evaluate, fit


def load_start(name: str):
    return baseline(name, "cifar10")


def uniform_l1(model, x, measure, goal: float, steps: int = 7):
    """Smallest uniform L1 ratio whose measured metric is at most `goal` (bisection)."""
    lo, hi, best = 0.0, 0.9, None
    for _ in range(steps):
        mid = (lo + hi) / 2
        m = prune(model, "l1", example_input=x, ratio=mid)
        v = measure(m)
        if v <= goal:
            hi, best = mid, (mid, m, v)
        else:
            lo = mid
    if best is None:
        m = prune(model, "l1", example_input=x, ratio=hi)
        best = (hi, m, measure(m))
    return best


def topic(model: str, kinds: tuple, quick: bool) -> str:
    """One result per (model, action set): the float-only and VGG-16 runs sit beside the default one."""
    parts = ["auto"] + ([model] if model not in ("resnet56", "resnet20") else [])
    parts += [] if set(kinds) == {"prune", "lowrank", "quant"} else ["-".join(kinds)]
    return "-".join(parts) + ("-quick" if quick else "")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_device_arg(ap)
    ap.add_argument("--quick", action="store_true", help="ResNet-20 and small budgets (a smoke run, < 5 min)")
    ap.add_argument("--model", help="default resnet56 (quick: resnet20)")
    ap.add_argument("--target", default="latency=0.5x")
    ap.add_argument("--max-drop", type=float, default=1.0)
    ap.add_argument("--runtime", default="onnxruntime", choices=["onnxruntime", "torch"])
    ap.add_argument("--actions", default="prune,lowrank,quant")
    ap.add_argument("--prune-ratios", default="0.25,0.5")
    ap.add_argument("--compressions", default="3", help="Tucker/SVD compressions per layer")
    ap.add_argument("--eval-images", type=int, help="validation images scoring each action (default 500; quick 200)")
    ap.add_argument("--test-images", type=int, help="test images for the reported top-1 (default 10000; quick 1000)")
    ap.add_argument("--ft-steps", type=int, help="fine-tuning steps (batch 128, lr 0.01 cosine) for every arm "
                                                  "(default 100; quick 20)")
    ap.add_argument("--calib-images", type=int, default=256)
    args = ap.parse_args(argv)
    q = args.quick
    args.model = args.model or ("resnet20" if q else "resnet56")
    args.eval_images = args.eval_images or (200 if q else 500)
    args.test_images = args.test_images or (1000 if q else 10000)
    args.ft_steps = args.ft_steps or (20 if q else 100)
    torch.manual_seed(0)
    t_all, cpu0 = time.perf_counter(), time.process_time()
    times: dict[str, float] = {}
    model, source = load_start(args.model)
    data = get_data("cifar10", batch_size=128, limit_eval=max(args.test_images, args.eval_images))
    x = next(iter(data.val))[0][:1]
    target = Target.parse(args.target)
    measure = metric_fn(target.metric, x, args.runtime)
    max_batches = max(1, args.eval_images // data.val.batch_size)
    val = lambda m: evaluate(m, data.val, max_batches=max_batches)["top1"]  # noqa: E731
    test = lambda m: evaluate(m, data.test)["top1"]  # noqa: E731
    ft_cfg = FitConfig(epochs=1, lr=0.01, max_steps_per_epoch=args.ft_steps, progress=False, seed=0)

    def finetune(m):
        t = time.perf_counter()
        h = fit(m, data.train, config=ft_cfg).history
        times["finetune_s"] = times.get("finetune_s", 0) + time.perf_counter() - t
        return h

    base_test = test(model)
    kinds = tuple(k for k in args.actions.split(",") if k)
    calib = data.calibration_batches(args.calib_images) if "quant" in kinds else None
    actions = build_actions(model, data, target, kinds, runtime=args.runtime,
                            prune_ratios=tuple(float(v) for v in args.prune_ratios.split(",")),
                            compressions=tuple(float(v) for v in args.compressions.split(",")), calib=calib,
                            calib_images=args.calib_images, log=print)
    t = time.perf_counter()
    table = measure_actions(model, actions, evaluate=val, measure=measure, log=lambda s: print(s, flush=True))
    times["measure_actions_s"] = time.perf_counter() - t
    base = table[0]
    print(f"{len(actions)} actions measured in {times['measure_actions_s']:.0f} s; base {base.metric:.4g}", flush=True)

    rows = []

    def row(method, m, metric, acc0, extra=""):
        acc1 = test(m)
        rows.append({"method": method, "metric": metric, "speedup": base.metric / metric, "top1_before_ft": acc0,
                     "top1": acc1, "drop": base_test - acc1, "within": base_test - acc1 <= args.max_drop,
                     "detail": extra})
        print(rows[-1], flush=True)

    t = time.perf_counter()
    auto = auto_compress(model, actions, evaluate=val, example_input=x, target=target, max_drop=args.max_drop,
                         runtime=args.runtime, finetune=finetune, calib=calib, table=table, best_effort=True,
                         log=print)
    times["auto_s"] = time.perf_counter() - t
    kinds_used = {k: sum(a.kind == k for a in auto.chosen.actions) for k in ("prune", "lowrank", "quant")}
    row("auto", auto.model, auto.metric, None, ", ".join(f"{v} {k}" for k, v in kinds_used.items() if v))
    goal = auto.metric  # the others aim at auto's measured result

    t = time.perf_counter()
    ratio, l1, l1_metric = uniform_l1(model, x, measure, goal)
    acc0 = test(l1)
    finetune(l1)
    times["uniform_l1_s"] = time.perf_counter() - t
    row("uniform L1", l1.cpu().eval(), measure(l1), acc0, f"{ratio:.1%} of every group")

    t = time.perf_counter()
    lowrank = [m for m in table[1] if m.action.kind == "lowrank"]
    try:
        frac = min(0.99, goal / base.metric)
        tucker = auto_compress(model, [], evaluate=val, example_input=x, target=Target(target.metric, frac),
                               max_drop=100.0, runtime=args.runtime, table=(base, lowrank), log=print)
        acc0 = test(tucker.model)
        finetune(tucker.model)
        reached = tucker.checks and tucker.checks[-1]["measured"] <= goal
        row("Tucker alone", tucker.model.cpu().eval(), measure(tucker.model), acc0,
            f"{len(tucker.chosen.actions)} layers" + ("" if reached else
                                                       "; no Tucker combination reached auto's speed"))
    except Exception as e:  # e.g. no Tucker combination reaches auto's speed
        rows.append({"method": "Tucker alone", "error": f"{type(e).__name__}: {e}"})
        print(rows[-1], flush=True)
    times["tucker_s"] = time.perf_counter() - t
    times["total_s"] = time.perf_counter() - t_all
    times["total_cpu_s"] = time.process_time() - cpu0  # one thread: the time on an unshared core

    unit = "ms" if target.metric == "latency" else target.metric
    res = {"quick": q, "command": command_line(), "model": args.model, "source": source, "target": vars(target),
           "runtime": args.runtime, "max_drop": args.max_drop, "actions": len(actions), "kinds": kinds,
           "budget": {"eval_images": args.eval_images, "test_images": args.test_images, "ft_steps": args.ft_steps,
                      "ft": "1 epoch capped at ft_steps batches of 128, SGD lr 0.01 cosine, wd 5e-4"},
           "base": {"metric": base.metric, "val_top1": base.accuracy, "test_top1": base_test},
           "base_samples": base.samples,
           "auto": {"chosen": [f"{a.layer}: {a.name}" for a in auto.chosen.actions], "checks": auto.checks,
                    "target_met": auto.target_met,
                    "predicted": {"metric": auto.chosen.predicted_metric, "val_top1": auto.chosen.predicted_accuracy},
                    "stages": auto.stages, "front": len(auto.front)},
           "rows": rows, "times_s": {k: round(v, 1) for k, v in times.items()}}
    md = [f"## Automatic compression vs single methods: {args.model}, actions {'+'.join(kinds)} "
          "(`benchmarks/bench_auto.py`)", ""]
    if q:
        md += ["_Quick mode: ResNet-20, tiny budgets; not the reference figures._", ""]
    md += [f"Command: `{res['command']}`. Model: {args.model}, {source}; test top-1 {base_test:.2f} % on "
           f"{args.test_images} test images. Target {args.target} ({target.metric} on {args.runtime}, one thread, "
           f"batch 1), at most {args.max_drop} point lost. {len(actions)} candidate actions ({', '.join(kinds)}), "
           f"each scored alone on {args.eval_images} validation images. Every arm is fine-tuned for "
           f"{args.ft_steps} steps (batch 128, SGD lr 0.01 cosine); uniform L1 and Tucker aim at auto's measured "
           f"{target.metric}. Total {times['total_s'] / 60:.1f} min wall, {times['total_cpu_s'] / 60:.1f} min CPU (one "
           "thread).", "",
           md_table(["method", f"{target.metric} ({unit})", "speedup" if target.metric == "latency" else "reduction",
                     "top-1 before FT", "top-1 after FT", "drop", f"<= {args.max_drop} pt", "what"],
                    [[r["method"], r.get("metric", "-"), r.get("speedup", "-"),
                      "-" if r.get("top1_before_ft") is None else r["top1_before_ft"], r.get("top1", "-"),
                      r.get("drop", "-"), "yes" if r.get("within") else "no", r.get("detail") or r.get("error", "")]
                     for r in rows]), "",
           ("" if auto.target_met else f"The target {args.target} was predicted out of reach within "
            f"{args.max_drop} point; auto ran best effort (the fastest point predicted within the drop)"
            + ("; measured, it does meet the target. " if auto.metric <= target.fraction * base.metric else ". "))
           + f"auto's choice: {'; '.join(res['auto']['chosen'][:12])}{' ...' if len(res['auto']['chosen']) > 12 else ''}",
           ""]
    write_result(topic(args.model, kinds, q), res, "\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

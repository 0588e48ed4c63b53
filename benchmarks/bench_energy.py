"""Energy-aware pruning (Yang et al., CVPR 2017) against magnitude pruning at the same estimated energy.

    python -m benchmarks.bench_energy [--quick] [--models lenet300 lenet5 resnet56]

Issue #8's comparison. For each model and target (a fraction of the dense network's estimated energy,
`torchslim.analysis.energy`, Horowitz 45 nm costs), four arms prune the same trained network down to
that energy, then get the same masked fine-tuning budget:
(a) energy-aware: the most energy-hungry layer first, least-squares restoration of its outputs after
    every step (`sparsify(..., "energy-aware")` without its own fine-tuning);
(b) the same energy-ordered greedy steps without the restoration (plain magnitude in energy order):
    isolates what the least-squares step buys;
(c) global magnitude pruning (Han et al.: one threshold for every layer), the sparsity bisected until
    the estimated energy reaches what (a) reached (a greedy step can overshoot the target);
(d) the same sparsity in every layer, bisected the same way.
Figures: test top-1 right after pruning and after the fine-tuning, the energy actually reached, the
weight sparsity. Starting points are the baselines of bench_baselines.py (LeNets trained there, on the spot when
not cached; ResNet-56 is the shipped checkpoint).
"""
from __future__ import annotations

import argparse
import copy
import time

import torch

from benchmarks.bench_baselines import LENET, baseline, baseline_path
from benchmarks.common import add_device_arg, command_line, md_table, write_result
from torchslim.analysis.energy import estimate_energy
from torchslim.analysis.profile import profile
from torchslim.data import get_data
from torchslim.models import create_model
from torchslim.sparsity.energy_aware import EnergyAwareConfig, energy_aware_prune
from torchslim.sparsity.magnitude import prune_by_magnitude
from torchslim.sparsity.masks import KeepMasks, density_summary
from torchslim.train import FitConfig, evaluate, fit

# model: data set, energy targets, masked fine-tuning steps (batch 128), calibration images for (a)
SETUPS = {
    "lenet300": dict(data="mnist", targets=(0.2, 0.1), ft_steps=430, calib=2048),
    "lenet5": dict(data="mnist", targets=(0.3, 0.15), ft_steps=430, calib=2048),
    "resnet56": dict(data="cifar10", targets=(0.6,), ft_steps=200, calib=512),
}


def start_model(name: str, data: str, quick: bool):
    if quick and name in LENET and not baseline_path(name, data).is_file():
        return create_model(name).eval(), f"{name}, untrained (quick run)"
    return baseline(name, data)


def energy_of(model, input_size) -> float:
    return sum(r.total_pj for r in estimate_energy(profile(model, input_size)))


def magnitude_at_energy(model, input_size, target_pj: float, scope: str, iterations: int = 14):
    """Lowest sparsity (one-shot magnitude, `scope` layer or global) whose estimated energy <= target."""
    lo, hi, best = 0.0, 0.999, None
    for _ in range(iterations):
        mid = (lo + hi) / 2
        m = copy.deepcopy(model)
        prune_by_magnitude(m, mid, scope=scope)
        if energy_of(m, input_size) <= target_pj:
            hi, best = mid, m
        else:
            lo = mid
    if best is None:
        best = copy.deepcopy(model)
        prune_by_magnitude(best, hi, scope=scope)
    return best, hi


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_device_arg(ap)
    ap.add_argument("--quick", action="store_true", help="LeNet-300-100 only, subsets, 20 fine-tuning steps")
    ap.add_argument("--models", nargs="*", help=f"default {' '.join(SETUPS)} (quick: lenet300)")
    args = ap.parse_args(argv)
    q = args.quick
    names = args.models or (["lenet300"] if q else list(SETUPS))
    torch.manual_seed(0)
    results, t_all = [], time.perf_counter()
    for name in names:
        setup = dict(SETUPS[name])
        data = get_data(setup["data"], batch_size=128, limit_eval=1000 if q else None,
                        limit_train=4000 if q else None)
        model, source = start_model(name, setup["data"], q)
        input_size = tuple(next(iter(data.test))[0].shape[1:])
        e0 = energy_of(model, input_size)
        base = evaluate(model, data.test)["top1"]
        print(f"{name}: {source}, top-1 {base:.2f} %, {e0 / 1e6:.1f} uJ per image", flush=True)
        ft = FitConfig(epochs=1, lr=0.01, weight_decay=0.0, max_steps_per_epoch=20 if q else setup["ft_steps"],
                       seed=0, progress=False, precision="bf16")
        calib = torch.cat(data.calibration_batches(min(setup["calib"], 512) if q else setup["calib"]))
        for target in setup["targets"]:
            arms = []
            for label, restore in (("energy-aware (LS restore)", True), ("energy order, no restore", False)):
                m = copy.deepcopy(model)
                t = time.perf_counter()
                steps = energy_aware_prune(m, calib, EnergyAwareConfig(target_energy=target, restore=restore))
                arms.append((label, m, f"{len(steps)} greedy steps", time.perf_counter() - t))
            reached = energy_of(arms[0][1], input_size)  # a greedy step can overshoot the target: match (a)
            for label, scope in (("global magnitude (Han)", "global"), ("uniform magnitude", "layer")):
                t = time.perf_counter()
                m, s = magnitude_at_energy(model, input_size, reached, scope)
                arms.append((label, m, f"sparsity {s:.1%} ({scope})", time.perf_counter() - t))
            for label, m, detail, prune_s in arms:
                before = evaluate(m, data.test)["top1"]
                t = time.perf_counter()
                fit(m, data.train, config=ft, callbacks=[KeepMasks()])
                row = {"model": name, "target": target, "arm": label, "energy": energy_of(m, input_size) / e0,
                       "sparsity": 1 - density_summary(m)["density"], "top1_before_ft": before,
                       "top1": evaluate(m, data.test)["top1"], "base_top1": base, "detail": detail,
                       "prune_s": round(prune_s, 1), "ft_s": round(time.perf_counter() - t, 1)}
                results.append(row)
                print(row, flush=True)
        setup.update(source=source, base_top1=base, energy_uj=e0 / 1e6)
        SETUPS[name] = setup
    total_min = (time.perf_counter() - t_all) / 60
    res = {"quick": q, "command": command_line(), "setups": {n: SETUPS[n] for n in names}, "rows": results,
           "total_min": round(total_min, 1)}
    md = ["## Energy-aware vs magnitude pruning at the same estimated energy (`benchmarks/bench_energy.py`)", ""]
    if q:
        md += ["_Quick mode: LeNet-300-100 on subsets, 20 fine-tuning steps; not the reference figures._", ""]
    md += [f"Command: `{res['command']}` ({total_min:.0f} min). Energy is the estimate of "
           "`torchslim.analysis.energy` (MACs skipped on zero weights, RF / buffer / DRAM traffic, Horowitz "
           "45 nm costs), as a fraction of the dense model's. Every arm gets the same masked fine-tuning "
           "(SGD lr 0.01 cosine, batch 128, bf16 autocast) of the steps stated per model; top-1 on the full "
           "test split.", ""]
    for n in names:
        s = SETUPS[n]
        md += [f"**{n}** ({s['data']}; {s['source']}; dense top-1 {s['base_top1']:.2f} %, "
               f"{s['energy_uj']:.1f} uJ per image; {s['ft_steps'] if not q else 20} fine-tuning steps):", "",
               md_table(["energy target", "method", "energy reached", "weight sparsity %", "top-1 after pruning",
                         "top-1 after FT", "how"],
                        [[r["target"], r["arm"], f"{r['energy']:.3f}", 100 * r["sparsity"], r["top1_before_ft"],
                          r["top1"], r["detail"]] for r in results if r["model"] == n]), ""]
    write_result("energy" + ("-quick" if q else ""), res, "\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

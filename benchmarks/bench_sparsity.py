"""Kernel sparsification benchmarks, next to the papers' figures.

Parts (run separately or together; each part's results are kept in results/sparsity.json and the
markdown fragment is rebuilt from all parts present):

- lenet: LeNet-300-100 and LeNet-5 on MNIST (dense baselines trained with torchslim.train.fit and cached
  in ~/.cache/torchslim/baselines/): magnitude pruning with retraining (Han et al. 2015) at Han's
  per-layer densities and at DNS's, and Dynamic Network Surgery (Guo et al. 2016) at DNS's densities.
- dns_long: one longer DNS run (--dns-epochs) on LeNet-300-100, shown in the same table.
- compare: LeNet-300-100 at equal sparsity and equal retraining budget: magnitude, IHT (Jin et al.),
  correlation pruning (Sun et al.), elementwise L1.
- ssl: Structured Sparsity Learning on the pretrained CIFAR ResNet-20: GEMM sizes per layer before/after,
  measured CPU latency dense vs lowered, and accuracy, on a small stated budget.

All training runs single-threaded (torch.set_num_threads(1)): on this shared 2-core machine, OpenMP
threads fighting other processes made training steps ~40x slower than one thread.

    python -m benchmarks.bench_sparsity [--quick] [--parts lenet compare ssl]
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from dataclasses import replace

import torch

from benchmarks.common import RESULTS, add_device_arg, command_line, md_table, write_result
from torchslim.data import get_data
from torchslim.models import create_model
from torchslim.sparsity import density_summary, sparsify
from torchslim.train import FitConfig, evaluate

# per-layer fraction of weights KEPT, as published (Han et al. 2015 table 1/2; Guo et al. 2016 table 2)
HAN_KEEP = {"lenet300": {"1": 0.08, "3": 0.09, "5": 0.26}, "lenet5": {"0": 0.66, "2": 0.12, "5": 0.08, "7": 0.19}}
DNS_KEEP = {"lenet300": {"1": 0.018, "3": 0.018, "5": 0.055},
            "lenet5": {"0": 0.142, "2": 0.031, "5": 0.007, "7": 0.043}}
PAPER = {  # compression (weights / kept) and top-1 error as reported
    "lenet300": {"han": (12, 1.59), "dns": (56, 1.99), "ref_err": (1.64, 2.28)},
    "lenet5": {"han": (12, 0.77), "dns": (108, 0.91), "ref_err": (0.80, 0.91)},
}
LENET_BUDGET = {"lenet300": dict(epochs=20, lr=0.05, weight_decay=1e-4, batch_size=128),  # as bench_baselines
                "lenet5": dict(epochs=4, lr=0.02, weight_decay=5e-4, batch_size=128)}  # CPU budget


def sparsity_of(keep: dict) -> dict:
    return {k: round(1.0 - v, 6) for k, v in keep.items()}


def lenet_baseline(name: str, quick: bool):
    """The dense baseline: bench_baselines' cached one if present, else one trained here (single-threaded,
    `LENET_BUDGET`) and cached as <name>-mnist-sparsity.safetensors beside it."""
    from benchmarks.bench_baselines import baseline_path
    from torchslim.io import load_model, save_model
    from torchslim.train import fit

    shared = baseline_path(name, "mnist")
    if shared.is_file():
        return load_model(shared)
    own = shared.with_name(f"{name}-mnist-sparsity.safetensors")
    if own.is_file():
        return load_model(own)
    if quick:
        raise SystemExit(f"{shared} missing: run `python -m benchmarks.bench_sparsity --parts lenet` first")
    budget = dict(LENET_BUDGET[name])
    data = get_data("mnist", batch_size=budget.pop("batch_size"))
    model = create_model(name)
    cfg = FitConfig(optimizer="sgd", momentum=0.9, nesterov=True, schedule="cosine", seed=0, progress=False, **budget)
    fit(model, data.train, val_loader=data.val, config=cfg, checkpoint_dir=own.with_suffix(".ckpt"))
    top1 = evaluate(model, data.test)["top1"]
    save_model(model, own, metadata={"model": name, "top1": top1, **budget, "trained_by": "bench_sparsity"})
    print(f"{name}: trained baseline {top1:.2f} % -> {own}", flush=True)
    return load_model(own)


def baseline_source(name: str) -> str:
    from benchmarks.bench_baselines import LENET, baseline_path

    shared = baseline_path(name, "mnist")
    if shared.is_file():
        return f"{shared.name} (bench_baselines: {LENET[name]['epochs']} epochs)"
    return f"{name}-mnist-sparsity.safetensors (trained here: {LENET_BUDGET[name]['epochs']} epochs)"


def _fit_cfg(lr: float, quick: bool, steps: int | None = None) -> FitConfig:
    return FitConfig(lr=lr, weight_decay=0.0, momentum=0.9, schedule="cosine", progress=False,
                     max_steps_per_epoch=steps or (40 if quick else None))


def _run(model, method: str, data, **kw) -> dict:
    t = time.perf_counter()
    sparse, info = sparsify(model, method, data=data, return_info=True, **kw)
    secs = time.perf_counter() - t
    test = evaluate(sparse, data.test)
    d = info["density"]
    return {"method": method, "top1": test["top1"], "error": 100 - test["top1"], "weights": d["weights"],
            "kept": d["nonzero"], "compression": d["compression"], "seconds": round(secs, 1),
            "layers": {r["layer"]: {"kept": r["nonzero"], "weights": r["params"], "density": r["density"]}
                       for r in d["layers"]}}


# ---------------------------------------------------------------- part: lenet
LENET_ROUNDS = {"lenet300": 4, "lenet5": 2}  # retraining epochs per run (CPU budget: LeNet-5 is ~6x slower)


def part_lenet(quick: bool, models=("lenet300", "lenet5")) -> dict:
    data = get_data("mnist", batch_size=128, limit_train=4000 if quick else None, limit_eval=2000 if quick else None)
    out = {}
    for name in models:
        base = lenet_baseline(name, quick)
        base_acc = evaluate(base, data.test)["top1"]
        runs = {}
        rounds, per_round = (2, 1) if quick else (LENET_ROUNDS[name], 1)
        runs["magnitude @ Han densities"] = _run(
            base, "magnitude", data, sparsity=sparsity_of(HAN_KEEP[name]), schedule="iterative", rounds=rounds,
            epochs=per_round, fit=_fit_cfg(0.01, quick))
        runs["magnitude @ DNS densities"] = _run(
            base, "magnitude", data, sparsity=sparsity_of(DNS_KEEP[name]), schedule="iterative", rounds=rounds,
            epochs=per_round, fit=_fit_cfg(0.01, quick))
        # same epoch budget as the iterative magnitude run: rounds*per_round
        runs["DNS @ DNS densities"] = _run(
            base, "dns", data, sparsity=sparsity_of(DNS_KEEP[name]), epochs=rounds * per_round - 1,
            finetune_epochs=1, fit=_fit_cfg(0.01, quick))
        out[name] = {"baseline_top1": base_acc, "runs": runs, "epochs_each": rounds * per_round,
                     "baseline": baseline_source(name)}
        for k, r in runs.items():
            print(name, k, f"{r['top1']:.2f} %", f"{r['compression']:.1f}x", f"{r['seconds']} s", flush=True)
    return out


def part_dns_long(quick: bool, epochs: int, name: str = "lenet300") -> dict:
    """DNS with a longer budget, to see how close more surgery epochs get to the paper."""
    data = get_data("mnist", batch_size=128, limit_train=4000 if quick else None, limit_eval=2000 if quick else None)
    base = lenet_baseline(name, quick)
    run = _run(base, "dns", data, sparsity=sparsity_of(DNS_KEEP[name]), epochs=epochs - 1, finetune_epochs=1,
               fit=_fit_cfg(0.01, quick))
    print(name, f"DNS {epochs} epochs", f"{run['top1']:.2f} %", f"{run['compression']:.1f}x", flush=True)
    return {name: {"epochs": epochs, "run": run}}


def md_lenet(res: dict, long: dict | None = None) -> list[str]:
    md = ["### LeNets on MNIST: weights kept and accuracy", "",
          "Each run starts from the dense baseline and gets the same retraining budget per model (epochs over "
          "the 55k training images, SGD momentum 0.9, lr 0.01 cosine per phase, no weight decay): magnitude "
          "prunes in that many rounds of prune + 1 epoch; DNS does surgery for all but the last epoch, then one "
          "epoch with frozen masks. Accuracy on the 10k test images. Compression = weights / nonzero weights "
          "of the Linear and conv layers (biases not counted, as in both papers' tables).", ""]
    for name in [n for n in ("lenet300", "lenet5") if n in res]:
        r = res[name]
        p = PAPER[name]
        rows = [[f"dense baseline: {r.get('baseline', 'ours')}", "1.0x", f"{100 - r['baseline_top1']:.2f}", "", ""]]
        paper_of = {"magnitude @ Han densities": p["han"], "magnitude @ DNS densities": None,
                    "DNS @ DNS densities": p["dns"]}
        for k, run in r["runs"].items():
            pp = paper_of[k]
            rows.append([k, f"{run['compression']:.1f}x", f"{run['error']:.2f}",
                         f"{pp[0]}x" if pp else "", f"{pp[1]:.2f}" if pp else ""])
        if long and name in long:
            lr_ = long[name]["run"]
            rows.append([f"DNS @ DNS densities, {long[name]['epochs']} epochs", f"{lr_['compression']:.1f}x",
                         f"{lr_['error']:.2f}", f"{p['dns'][0]}x", f"{p['dns'][1]:.2f}"])
        md += [f"**{'LeNet-300-100' if name == 'lenet300' else 'LeNet-5'}**, {r['epochs_each']} epochs per run "
               f"(paper reference error "
               f"{p['ref_err'][0]} % Han, {p['ref_err'][1]} % DNS):", "",
               md_table(["run", "compression", "top-1 error %", "paper compression", "paper error %"], rows), ""]
        layers = list(next(iter(r["runs"].values()))["layers"])
        lrows = []
        for layer in layers:
            row = [layer, next(iter(r["runs"].values()))["layers"][layer]["weights"]]
            for run in r["runs"].values():
                row.append(f"{run['layers'][layer]['density']:.1%}")
            row += [f"{HAN_KEEP[name][layer]:.1%}", f"{DNS_KEEP[name][layer]:.1%}"]
            lrows.append(row)
        md += ["Weights kept per layer:", "",
               md_table(["layer", "weights"] + list(r["runs"]) + ["Han et al.", "Guo et al. (DNS)"], lrows), ""]
    return md


# ---------------------------------------------------------------- part: compare
def part_compare(quick: bool) -> dict:
    data = get_data("mnist", batch_size=128, limit_train=4000 if quick else None, limit_eval=2000 if quick else None)
    base = lenet_baseline("lenet300", quick)
    levels = [0.95] if quick else [0.9, 0.97]
    out = {"baseline_top1": evaluate(base, data.test)["top1"], "levels": {}}
    fc = _fit_cfg(0.01, quick)
    for s in levels:
        runs = {
            "magnitude, no retraining": _run(base, "magnitude", data, sparsity=s, schedule="oneshot", epochs=0, fit=fc),
            "magnitude (iterative, 3 x 1 epoch)": _run(base, "magnitude", data, sparsity=s, schedule="iterative",
                                                       rounds=3, epochs=1, fit=fc),
            "IHT / DSD (sparse, dense, sparse: 1 epoch each)": _run(base, "iht", data, sparsity=s, cycles=2,
                                                                    dense_epochs=1, sparse_epochs=1, fit=fc),
            "correlation (3 layers x 1 epoch, top-down)": _run(base, "correlation", data, sparsity=s,
                                                              epochs_per_layer=1, fit=fc),
            "elementwise L1 (2 epochs) + 1 epoch retrain": _run(base, "l1", data, sparsity=s, l1=2e-5, epochs=2,
                                                                finetune_epochs=1, fit=fc),
        }
        out["levels"][str(s)] = runs
        for k, r in runs.items():
            print(s, k, f"{r['top1']:.2f} %", f"{r['compression']:.1f}x", flush=True)
    return out


def md_compare(res: dict) -> list[str]:
    md = ["### LeNet-300-100: methods at equal sparsity and budget", "",
          f"Uniform per-layer sparsity, 3 epochs of (re)training each (SGD momentum 0.9, lr 0.01 cosine per phase), "
          f"from the dense baseline ({res['baseline_top1']:.2f} % test top-1); 10k test images.", ""]
    for s, runs in res["levels"].items():
        rows = [[k, f"{r['compression']:.1f}x", f"{r['top1']:.2f}"] for k, r in runs.items()]
        md += [f"Sparsity {float(s):.0%}:", "", md_table(["method", "compression", "test top-1 %"], rows), ""]
    return md


# ---------------------------------------------------------------- part: ssl
def _interleaved_ms(models: dict, x: torch.Tensor, reps: int) -> dict:
    times = {k: [] for k in models}
    with torch.no_grad():
        for m in models.values():
            m.eval()
            for _ in range(3):
                m(x)
        for _ in range(reps):
            for k, m in models.items():
                t = time.perf_counter()
                m(x)
                times[k].append((time.perf_counter() - t) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def part_ssl(quick: bool, lam: float, steps: int, finetune_steps: int, groups=("filter", "shape")) -> dict:
    from torchslim.sparsity import SSLConfig, gemm_table

    limit = 2000 if quick else 10000
    data = get_data("cifar10", batch_size=128, limit_train=limit, limit_eval=1000 if quick else 2000)
    base = create_model("resnet20", pretrained=True)
    base_acc = evaluate(base, data.test)["top1"]
    fc = FitConfig(lr=0.01, weight_decay=1e-4, momentum=0.9, progress=False, max_steps_per_epoch=steps)
    cfg = SSLConfig(groups=tuple(groups), lam=lam, normalize=True, proximal=True, epochs=1, threshold=1e-3,
                    finetune_epochs=1 if finetune_steps else 0, remove="lower", fit=fc, input_size=(3, 32, 32))
    t = time.perf_counter()
    # fine-tuning uses its own step budget
    sparse, info = sparsify(base, "ssl", data=data, config=cfg, return_info=True)
    secs = time.perf_counter() - t
    acc = evaluate(sparse, data.test)["top1"]
    # control: the same steps without the regulariser (fine-tuning alone changes accuracy)
    control = copy.deepcopy(base)
    from torchslim.train import fit

    fit(control, data.train, config=replace(fc, epochs=1))
    control_acc = evaluate(control, data.test)["top1"]
    x1 = torch.randn(1, 3, 32, 32)
    x32 = torch.randn(32, 3, 32, 32)
    reps = 10 if quick else 24
    lat1 = _interleaved_ms({"dense": base, "ssl": sparse}, x1, reps)
    lat32 = _interleaved_ms({"dense": base, "ssl": sparse}, x32, max(5, reps // 4))
    gemm = info.get("gemm") or []
    before = sum(r["macs_before"] for r in gemm)
    after = sum(r["macs_after"] for r in gemm)
    import os

    return {"load_average": os.getloadavg()[0], "lambda_g": lam, "groups": list(cfg.groups), "threshold": cfg.threshold, "train_images": limit,
            "steps": steps, "baseline_top1": base_acc, "control_top1": control_acc, "ssl_top1": acc,
            "zeroed_groups": info["zeroed_groups"], "gemm": gemm, "macs_before": before, "macs_after": after,
            "latency_ms": {"batch1": lat1, "batch32": lat32}, "seconds": round(secs, 1),
            "lowered": info.get("lowered", []), "test_images": len(data.test.dataset)}


def md_ssl(res: dict) -> list[str]:
    l1, l32 = res["latency_ms"]["batch1"], res["latency_ms"]["batch32"]
    md = [f"### SSL on CIFAR ResNet-20 (shipped checkpoint, CIFAR-10): {' + '.join(res['groups'])}-wise, "
          f"lambda_g = {res['lambda_g']}", "",
          f"Budget: {res['steps']} steps of batch 128 from {res['train_images']} training images with "
          f"{' + '.join(res['groups'])}-wise group lasso (proximal steps, lambda_g = {res['lambda_g']}, groups scaled by sqrt(size)), "
          f"groups with RMS "
          f"weight < {res['threshold']} zeroed, then the same number of steps of fine-tuning with the zeros held; "
          f"convs with zero columns/filters lowered to a smaller GEMM (`LoweredConv2d`). Test top-1 on "
          f"{res['test_images']} images. The control gets the same steps without the regulariser (fine-tuning "
          "alone changes accuracy).", "",
          md_table(["model", "test top-1 %", "conv MACs", "latency batch 1 (ms)", "latency batch 32 (ms)"], [
              ["pretrained dense", f"{res['baseline_top1']:.2f}", f"{res['macs_before'] / 1e6:.1f} M",
               f"{l1['dense']:.2f}", f"{l32['dense']:.2f}"],
              ["dense, same steps without group lasso", f"{res['control_top1']:.2f}", "", "", ""],
              [f"SSL ({' + '.join(res['groups'])}), lowered", f"{res['ssl_top1']:.2f}", f"{res['macs_after'] / 1e6:.1f} M",
               f"{l1['ssl']:.2f}", f"{l32['ssl']:.2f}"],
          ]), "",
          f"Measured speedup (dense / SSL, medians interleaved, 1 thread"
          + (f", load average {res['load_average']:.1f} on a 2-core machine" if "load_average" in res else "")
          + "): batch 1 "
          f"{l1['dense'] / l1['ssl']:.2f}x, batch 32 {l32['dense'] / l32['ssl']:.2f}x; conv GEMM work "
          f"{res['macs_before'] / max(res['macs_after'], 1):.2f}x smaller. Zeroed groups: {res['zeroed_groups']}. " +
          (("Lowered convs run a smaller oneDNN conv (only whole channels/filters gone) or a strided im2col of the kept columns + one MKL GEMM "
            "(scattered columns), plus index copies for removed input channels and filters; at this shrinkage "
            "those overheads outweigh the saved MACs: no speedup.") if l1["dense"] < l1["ssl"] or
           l32["dense"] < l32["ssl"] else "The saved MACs outweigh the lowering overheads here."), "",
          "GEMM sizes per conv (filters x im2col rows; output locations):", "",
          md_table(["layer", "before", "after", "locations"],
                   [[r["layer"], r["before"], r["after"], r["locations"]] for r in res["gemm"]]), ""]
    return md


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_device_arg(ap)
    ap.add_argument("--quick", action="store_true", help="subsets, few steps; results go to sparsity-quick")
    ap.add_argument("--parts", nargs="*", default=["lenet", "compare", "ssl"],
                    help="parts to run; `--parts` with none only rebuilds the markdown from the JSON")
    ap.add_argument("--ssl-lambda", type=float, default=0.1)
    ap.add_argument("--ssl-groups", nargs="*", default=["filter", "shape"])
    ap.add_argument("--dns-epochs", type=int, default=10, help="dns_long part: epochs of the longer DNS run")
    ap.add_argument("--models", nargs="*", default=["lenet300", "lenet5"], help="lenet part: which LeNets")
    ap.add_argument("--ssl-steps", type=int, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    topic = "sparsity" + ("-quick" if args.quick else "")
    path = RESULTS / f"{topic}.json"
    new: dict = {}
    commands: dict = {}
    for part in args.parts:
        t = time.perf_counter()
        if part == "lenet":
            new["lenet"] = part_lenet(args.quick, args.models)
        elif part == "dns_long":
            new["dns_long"] = {}
            for name in args.models:
                new["dns_long"].update(part_dns_long(args.quick, args.dns_epochs, name))
        elif part == "compare":
            new["compare"] = part_compare(args.quick)
        elif part == "ssl":
            steps = args.ssl_steps or (10 if args.quick else 30)
            r = part_ssl(args.quick, args.ssl_lambda, steps, steps, args.ssl_groups)
            new.setdefault("ssl_runs", {})[f"{'+'.join(args.ssl_groups)} lambda={args.ssl_lambda}"] = r
        else:
            raise SystemExit(f"unknown part {part!r}; use lenet, dns_long, compare, ssl")
        commands[part] = command_line()
        print(f"part {part}: {time.perf_counter() - t:.0f} s", flush=True)
    # parts may run in separate processes: merge into what is on disk at the time of writing
    res = json.loads(path.read_text()) if path.is_file() else {}
    if "lenet" in new:
        new["lenet"] = {**res.get("lenet", {}), **new["lenet"]}
    if "ssl" in res:  # the first layout kept one run
        r = res.pop("ssl")
        res.setdefault("ssl_runs", {})[f"{'+'.join(r['groups'])} lambda={r['lambda_g']}"] = r
    if "ssl_runs" in new:
        new["ssl_runs"] = {**res.get("ssl_runs", {}), **new["ssl_runs"]}
    if "dns_long" in new:
        new["dns_long"] = {**res.get("dns_long", {}), **new["dns_long"]}
    res.update(new)
    res.setdefault("commands", {}).update(commands)
    md = ["## Sparsity (`benchmarks/bench_sparsity.py`)", ""]
    if args.quick:
        md += ["_Quick mode: subsets and few steps; not the reference figures._", ""]
    md += ["Commands: " + "; ".join(f"`{c}`" for c in dict.fromkeys(res["commands"].values())), "",
           "Training single-threaded (shared 2-core machine).", ""]
    if "lenet" in res:
        md += md_lenet(res["lenet"], res.get("dns_long"))
    if "compare" in res:
        md += md_compare(res["compare"])
    for run in res.get("ssl_runs", {}).values():
        md += md_ssl(run)
    write_result(topic, res, "\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

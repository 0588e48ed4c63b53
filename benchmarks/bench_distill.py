"""Distillation and efficient blocks, measured.

1. mnist: Hinton et al. 2015 (section 3) in miniature: a large MLP teacher (dropout), a small MLP
   student trained with hard labels only vs with soft targets; test errors.
2. cifar: ResNet-56 teacher -> ResNet-20 student trained from scratch, with KD, with activation AT
   and with KD+AT under one budget (a stated subset of the train split, no augmentation, so the
   teacher's targets are computed once and cached: each epoch sees the very same tensors).
3. convert: a pretrained ResNet-20 with its 3x3 convs replaced by depthwise-separable blocks (SVD
   init, layer-wise reconstruction, then KD from the original): MACs, size, latency, accuracy.

    python -m benchmarks.bench_distill [--quick] [--parts mnist cifar convert]
"""
from __future__ import annotations

import argparse
import copy
import json
import time

import torch
from torch import nn

from benchmarks.common import RESULTS, add_device_arg, command_line, md_table, write_result
from torchslim.analysis import measure_latency, profile, saved_size_bytes
from torchslim.blocks import ConvertConfig, to_separable
from torchslim.data import get_data
from torchslim.distill import DistillConfig, distill_fit
from torchslim.models import create_model
from torchslim.train import FitConfig, evaluate, fit

HINTON_MNIST = {"teacher_errors": 67, "student_errors": 146, "distilled_errors": 74}  # section 3, of 10k
AT_PAPER = "Zagoruyko & Komodakis 2017 (Table 1, CIFAR-10): AT gains of about 0.5-1.5 points for ResNet/WRN students"


def mlp(hidden: int, dropout: float = 0.0) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    d = 784
    for _ in range(2):
        layers += [nn.Linear(d, hidden), nn.ReLU(inplace=True)] + ([nn.Dropout(dropout)] if dropout else [])
        d = hidden
    return nn.Sequential(*layers, nn.Linear(d, 10))


def errors(model, loader) -> tuple[int, int]:
    r = evaluate(model, loader)
    return round(r["n"] * (1 - r["top1"] / 100)), r["n"]


def _overrides(cfg: dict, budget: dict | None) -> dict:
    """The command line's budget (--limit-train, --epochs, --eval-images) for a part's own config keys;
    epochs is the students' (cifar) or the KD epochs (convert)."""
    out = {}
    for key, value in (budget or {}).items():
        key = {"epochs": "kd_epochs" if "kd_epochs" in cfg else "epochs", "eval_images": "limit_eval"}.get(key, key)
        if value is not None and key in cfg:
            out[key] = value
    return out


def part_mnist(quick: bool, budget: dict | None = None) -> dict:
    cfg = dict(teacher_hidden=800, teacher_dropout=0.2, teacher_epochs=1 if quick else 12, student_hidden=100,
               student_epochs=1 if quick else 8, temperature=4.0, alpha=0.9, lr=0.05, student_lrs=[0.05, 0.02],
               batch_size=128,
               limit_train=3000 if quick else 20000, limit_eval=2000 if quick else None)
    data = get_data("mnist", batch_size=cfg["batch_size"], limit_train=cfg["limit_train"],
                    limit_eval=cfg["limit_eval"])
    fc = lambda e, lr=cfg["lr"]: FitConfig(epochs=e, lr=lr, momentum=0.9, nesterov=True, weight_decay=0.0,  # noqa: E731
                             eval_every=0, progress=False)
    torch.manual_seed(0)
    teacher = mlp(cfg["teacher_hidden"], cfg["teacher_dropout"])
    t = time.perf_counter()
    fit(teacher, data.train, config=fc(cfg["teacher_epochs"]))
    rows = [{"model": f"teacher 784-{cfg['teacher_hidden']}x2-10, dropout", "lr": cfg["lr"], "soft_targets": "-",
             "params": sum(p.numel() for p in teacher.parameters()), "train_s": round(time.perf_counter() - t, 1)}]
    rows[0]["errors"], n = errors(teacher, data.test)
    for lr in cfg["student_lrs"]:
        for soft in (False, True):
            torch.manual_seed(1)
            student = mlp(cfg["student_hidden"])
            t = time.perf_counter()
            if soft:
                distill_fit(student, teacher, data, "kd", DistillConfig(
                    fit=fc(cfg["student_epochs"], lr), cache_teacher=True, temperature=cfg["temperature"],
                    alpha=cfg["alpha"]))
            else:
                fit(student, data.train, config=fc(cfg["student_epochs"], lr))
            e, _ = errors(student, data.test)
            rows.append({"model": f"student 784-{cfg['student_hidden']}x2-10", "lr": lr,
                         "soft_targets": "yes" if soft else "no",
                         "params": sum(p.numel() for p in student.parameters()), "errors": e,
                         "train_s": round(time.perf_counter() - t, 1)})
            print(rows[-1], flush=True)
    return {"config": cfg, "test_images": n, "rows": rows}


def _teacher(quick: bool) -> tuple[nn.Module, str]:
    from benchmarks.bench_baselines import baseline

    return baseline("resnet56", "cifar10")


def part_cifar(quick: bool, budget: dict | None = None) -> dict:
    cfg = dict(limit_train=300 if quick else 1000, limit_eval=300 if quick else 1000, epochs=1 if quick else 4,
               batch_size=50, lrs=[0.05, 0.02], weight_decay=5e-4, temperature=4.0, alpha=0.9, beta=1000.0, augment=False)
    cfg.update(_overrides(cfg, budget))
    data = get_data("cifar10", batch_size=cfg["batch_size"], augment=False, limit_train=cfg["limit_train"],
                    limit_eval=cfg["limit_eval"])
    teacher, teacher_src = _teacher(quick)
    t_acc = evaluate(teacher, data.test)["top1"]
    print("teacher", teacher_src, t_acc, flush=True)
    rows = []
    for lr, (name, methods) in [(lr, arm) for lr in cfg["lrs"] for arm in
                                [("scratch", None), ("KD", ["kd"]), ("AT", ["at"]), ("KD+AT", ["kd", "at"])]]:
        torch.manual_seed(0)
        student = create_model("resnet20")
        fc = FitConfig(epochs=cfg["epochs"], lr=lr, momentum=0.9, nesterov=True,
                       weight_decay=cfg["weight_decay"], eval_every=0, progress=False, seed=0)
        t = time.perf_counter()
        if methods is None:
            fit(student, data.train, config=fc)
        else:
            distill_fit(student, teacher, data, methods, DistillConfig(
                fit=fc, temperature=cfg["temperature"], alpha=cfg["alpha"], beta=cfg["beta"], cache_teacher=True))
        acc = evaluate(student, data.test)["top1"]
        rows.append({"student": "resnet20", "lr": lr, "method": name, "top1": acc,
                     "train_s": round(time.perf_counter() - t, 1)})
        print(rows[-1], flush=True)
    for r in rows:
        r["gain"] = r["top1"] - next(b["top1"] for b in rows if b["lr"] == r["lr"] and b["method"] == "scratch")
    return {"config": cfg, "teacher": teacher_src, "teacher_top1": t_acc, "rows": rows,
            "train_images": len(data.train.dataset), "test_images": len(data.test.dataset)}


def _figures(model, name: str, acc: float | None) -> dict:
    p = profile(model, (3, 32, 32))
    return {"model": name, "macs": p.macs, "params": p.params, "size_bytes": saved_size_bytes(model), "top1": acc}


def _latencies(models: list, rounds: int) -> list[dict]:
    """Median latency per model, measured in interleaved rounds (A B C A B C ...) so that the load of a
    shared machine drifts over all models alike; the figure is the median over rounds of each round's median."""
    got: list[dict] = [{"b1": [], "b32": []} for _ in models]
    for _ in range(rounds):
        for m, g in zip(models, got):
            for bs in (1, 32):
                r = measure_latency(m, input_size=(3, 32, 32), batch_size=bs, threads=1, with_peak=False,
                                    repeats=10 if bs == 32 else 30)
                g[f"b{bs}"].append(r.median_ms)
    med = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
    return [{"latency_b1_ms": med(g["b1"]), "latency_b32_ms": med(g["b32"]), "latency_rounds": g} for g in got]


def part_convert(quick: bool, budget: dict | None = None) -> dict:
    cfg = dict(calib_images=64 if quick else 256, steps=10 if quick else 120, rec_lr=3e-3, kd_epochs=1 if quick else 2,
               limit_train=300 if quick else 1000, limit_eval=300 if quick else 1000, lr=0.01, batch_size=50,
               temperature=4.0, alpha=0.9, variants=["depthwise", "grouped (4 ch/group)"], latency_rounds=2 if quick else 5)
    cfg.update(_overrides(cfg, budget))
    data = get_data("cifar10", batch_size=cfg["batch_size"], augment=False, limit_train=cfg["limit_train"],
                    limit_eval=cfg["limit_eval"])
    original = create_model("resnet20", pretrained=True).eval()
    rows = [_figures(original, "resnet20 (original)", evaluate(original, data.test)["top1"])]
    models = [original]
    print(rows[-1], flush=True)
    variants = {}
    common = dict(calib_images=cfg["calib_images"], steps=cfg["steps"], lr=cfg["rec_lr"])
    for label, conv_cfg in [("depthwise", ConvertConfig(**common)),
                            ("grouped (4 ch/group)", ConvertConfig(**common, group_channels=4))]:
        if label not in cfg["variants"]:
            continue
        svd_only, _ = to_separable(original, None, conv_cfg)
        acc_svd = evaluate(svd_only, data.test)["top1"]
        t = time.perf_counter()
        converted, layers = to_separable(original, data, conv_cfg)
        rec_s = time.perf_counter() - t
        acc_rec = evaluate(converted, data.test)["top1"]
        t = time.perf_counter()
        fc = FitConfig(epochs=cfg["kd_epochs"], lr=cfg["lr"], momentum=0.9, nesterov=True, weight_decay=5e-4,
                       eval_every=0, progress=False)
        distill_fit(converted, copy.deepcopy(original), data, "kd",
                    DistillConfig(fit=fc, temperature=cfg["temperature"], alpha=cfg["alpha"], cache_teacher=True))
        kd_s = time.perf_counter() - t
        row = _figures(converted.eval(), f"resnet20, {label}", evaluate(converted, data.test)["top1"])
        row.update(top1_svd_init=acc_svd, top1_reconstructed=acc_rec, reconstruct_s=round(rec_s, 1),
                   kd_s=round(kd_s, 1))
        rows.append(row)
        models.append(converted.eval())
        variants[label] = layers
        print(row, flush=True)
    for row, lat in zip(rows, _latencies(models, cfg["latency_rounds"])):
        row.update(lat)
    return {"config": cfg, "rows": rows, "layers": variants, "test_images": len(data.test.dataset)}


def markdown(res: dict) -> str:
    q = res["quick"]
    md = ["## Distillation and efficient blocks (`benchmarks/bench_distill.py`)", ""]
    if q:
        md += ["_Quick mode: tiny subsets, one epoch; not the reference figures._", ""]
    if "mnist" in res:
        m = res["mnist"]
        c = m["config"]
        md += [f"Command: `{m['command']}`", "",
               f"**MNIST, Hinton et al. 2015 in miniature.** Teacher and students trained here (SGD Nesterov, "
               f"cosine; teacher {c['teacher_epochs']} epochs at lr {c['lr']} with dropout {c['teacher_dropout']}, "
               f"students {c['student_epochs']} epochs, no regularisation, each at lr "
               f"{' and '.join(map(str, c.get('student_lrs', [c['lr']])))}; "
               f"KD at T = {c['temperature']}, alpha = {c['alpha']}, teacher logits cached: no augmentation; "
               f"{c['limit_train'] or 55000} training images). Soft targets at a learning rate that suits hard labels "
               "can hurt: the T^2-scaled gradients of a confident teacher are larger (docs/distillation.md). "
               f"Test errors out of {m['test_images']}; the paper (2 x 1200 teacher, 2 x 800 student, "
               f"full training) reports {HINTON_MNIST['teacher_errors']} / {HINTON_MNIST['student_errors']} / "
               f"{HINTON_MNIST['distilled_errors']} errors for teacher / student / distilled student.", "",
               md_table(["model", "lr", "soft targets", "params", "test errors", "train s"],
                        [[r["model"], r.get("lr", c["lr"]), r["soft_targets"], r["params"], r["errors"], r["train_s"]]
                         for r in m["rows"]]), ""]
    if "cifar" in res:
        c = res["cifar"]
        k = c["config"]
        md += [f"Command: `{c['command']}`", "",
               f"**CIFAR-10, ResNet-56 -> ResNet-20.** Teacher: {c['teacher']}, {c['teacher_top1']:.2f} % on the "
               f"{c['test_images']} test images. Students from random init under one budget: {c['train_images']} training images "
               f"(a fixed random subset), no augmentation (so the teacher's targets are cached honestly), "
               f"{k['epochs']} epochs, batch {k['batch_size']}, SGD Nesterov, cosine, each arm at lr "
               f"{' and '.join(map(str, k.get('lrs', [k.get('lr')])))} (gains are against scratch at the same lr); KD T = "
               f"{k['temperature']}, alpha = {k['alpha']}; AT beta = {k['beta']}, p = 2, pairs = the ends of the three "
               f"stages. Top-1 on {c['test_images']} test images. {AT_PAPER}; theirs are full 200-epoch runs, "
               "ours a few CPU minutes on a subset.", "",
               md_table(["student", "lr", "method", "top-1 %", "gain vs scratch (points)", "train s"],
                        [[r["student"], r.get("lr", k.get("lr")), r["method"], r["top1"], r["gain"], r["train_s"]] for r in c["rows"]]),
               ""]
    if "convert" in res:
        v = res["convert"]
        k = v["config"]
        o = v["rows"][0]
        for r in v["rows"]:  # runs from before the interleaved latency rounds
            r.setdefault("latency_b1_ms", float("nan"))
            r.setdefault("latency_b32_ms", float("nan"))
        md += [f"Command: `{v['command']}`", "",
               f"**Conversion to separable blocks.** Pretrained ResNet-20 (../shared/data weights); every 3x3 conv "
               f"with >= 8 input channels replaced by a spatial conv (depthwise, or groups of 4 channels) + 1x1 conv, "
               f"initialised by per-group truncated SVD, reconstructed layer by layer ({k['calib_images']} images, "
               f"{k['steps']} Adam steps per layer, lr {k.get('rec_lr', 1e-3)}), then KD from the original "
               f"({k['kd_epochs']} epochs on {k['limit_train']} unaugmented train images, SGD lr {k['lr']}). Top-1 on {v['test_images']} test images; latency: "
               f"torch eager, 1 thread, median over {k.get('latency_rounds', 1)} interleaved rounds of per-round medians, "
               "measured side by side in this run on a shared, loaded 2-core machine (expect noise of 10-20 %). "
               "Fewer MACs need not mean less time: a separable layer is two kernels, and PyTorch's CPU depthwise "
               "kernels run far below peak, so compare the MACs ratio with the speed-up column. MobileNets (Howard et al. 2017, "
               "eq. 5) give the per-layer cost ratio 1/N + 1/D_K^2 (0.17 for N = 16, D_K = 3).", "",
               md_table(["model", "MACs (M)", "MACs ratio", "params (k)", "size (kB)", "latency b=1 (ms)",
                         "latency b=32 (ms)", "speed-up b=1 / b=32", "top-1 % SVD init", "top-1 % reconstructed",
                         "top-1 % final (after KD)"],
                        [[r["model"], r["macs"] / 1e6, f"{r['macs'] / o['macs']:.3f}", r["params"] / 1e3,
                          r["size_bytes"] / 1e3, r["latency_b1_ms"], r["latency_b32_ms"],
                          f"{o['latency_b1_ms'] / r['latency_b1_ms']:.2f}x / {o['latency_b32_ms'] / r['latency_b32_ms']:.2f}x",
                          r.get("top1_svd_init", "-"), r.get("top1_reconstructed", "-"), r["top1"]]
                         for r in v["rows"]]), ""]
    return "\n".join(md)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_device_arg(ap)
    ap.add_argument("--quick", action="store_true", help="tiny subsets, one epoch")
    ap.add_argument("--parts", nargs="*", default=["mnist", "cifar", "convert"], choices=["mnist", "cifar", "convert"],
                    help="parts to run (results of other parts already in the JSON are kept); none: re-render")
    ap.add_argument("--limit-train", type=int, help="cifar / convert: training images (default 1000)")
    ap.add_argument("--epochs", type=int, help="cifar: student epochs (default 4); convert: KD epochs (default 2)")
    ap.add_argument("--eval-images", type=int, help="cifar / convert: test images (default 1000)")
    args = ap.parse_args(argv)
    budget = {"limit_train": args.limit_train, "epochs": args.epochs, "eval_images": args.eval_images}
    topic = "distill" + ("-quick" if args.quick else "")
    previous = RESULTS / f"{topic}.json"

    def merged(new: dict) -> dict:  # parts run separately accumulate; each records its own command
        res: dict = {"quick": args.quick}
        if previous.is_file():
            res.update({k: v for k, v in json.loads(previous.read_text()).items() if k in PARTS})
        res.update(new)
        return res

    for part in args.parts:
        t = time.perf_counter()
        out = PARTS[part](args.quick, budget)
        out.update(part_s=round(time.perf_counter() - t, 1), command=command_line())
        res = merged({part: out})
        write_result(topic, res, markdown(res))  # after each part: a killed run keeps what it finished
    if not args.parts:  # re-render the markdown from the JSON
        res = merged({})
        write_result(topic, res, markdown(res))
    return 0


PARTS = {"mnist": part_mnist, "cifar": part_cifar, "convert": part_convert}


if __name__ == "__main__":
    raise SystemExit(main())

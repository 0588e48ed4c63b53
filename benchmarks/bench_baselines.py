"""Reference baselines every later benchmark starts from, and `baseline()`, the one way benchmarks load them.

1. The pretrained CIFAR ResNets of ../shared/data evaluated on the original CIFAR-10 test set: this
   proves the model definition, weight loading and normalisation against the published accuracy
   (ResNet-20/32/44/56: 91.73 / 92.63 / 93.10 / 93.39 %). They are the CIFAR baselines as shipped.
2. LeNet-300-100 and LeNet-5 trained here on MNIST (the Deep Compression baselines: 98.36 % and 99.20 %),
   cached in ~/.cache/torchslim/baselines/ (outside the repo). Resumable: rerun after a kill.
3. (`--parts scratch`, not in the default run: hours on a CPU) CIFAR VGG-16-BN trained from scratch,
   cached the same way, for the low-rank and auto benchmarks.

    python -m benchmarks.bench_baselines [--quick] [--parts pretrained lenet scratch]

A run of some parts keeps the other parts' figures (and their commands) from the run that made them.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from benchmarks.common import RESULTS, add_device_arg, command_line, md_table, write_result
from torchslim.data import get_data
from torchslim.io import load_model, model_info, save_model
from torchslim.models import create_model
from torchslim.paths import cache_dir
from torchslim.train import FitConfig, evaluate, fit

PUBLISHED = {"resnet20": 91.73, "resnet32": 92.63, "resnet44": 93.10, "resnet56": 93.39}  # 100 - published error
LENET = {  # model: training budget on MNIST (55k train, 5k val)
    "lenet300": dict(epochs=20, lr=0.05, weight_decay=1e-4, batch_size=128),
    "lenet5": dict(epochs=20, lr=0.02, weight_decay=5e-4, batch_size=128),
}
PAPER = {"lenet300": 98.36, "lenet5": 99.20}
SCRATCH = {  # CIFAR models trained here from scratch (no checkpoint is shipped): the VGG-16 the low-rank
    # and auto benchmarks compress. bf16 autocast + NHWC: about 7.5 min an epoch on one AVX-512-BF16 core
    # (fp32: 15 min), so the budget is 10 epochs; more epochs would give a stronger baseline.
    "vgg16_cifar": dict(epochs=10, lr=0.05, weight_decay=5e-4, batch_size=128, precision="bf16",
                        channels_last=True),
}


def baseline_path(name: str, data: str) -> "Path":  # noqa: F821
    return cache_dir() / "baselines" / f"{name}-{data}.safetensors"


def baseline(name: str, data: str, *, train_if_missing: bool = True) -> tuple[torch.nn.Module, str]:
    """The starting model of every benchmark, and a sentence saying where it came from.

    CIFAR ResNets: the shipped checkpoints as they are (trained on all of cifar10/train.npz; no
    adaptation: ../shared/data holds the original images they were trained on). LeNets and the CIFAR
    VGG-16: trained here by this script and cached; a missing LeNet is trained on the spot.
    """
    if name in PUBLISHED and data == "cifar10":
        return create_model(name, pretrained=True).eval(), f"shipped {name} checkpoint ({PUBLISHED[name]:.2f} % published)"
    path = baseline_path(name, data)
    if not path.is_file() and train_if_missing and name in LENET and data == "mnist":
        train_and_cache(name, data, LENET[name], False, quick=False)
    if not path.is_file():
        raise SystemExit(f"{name} on {data}: no baseline at {path}; run `python -m benchmarks.bench_baselines "
                         f"--parts {'lenet' if name in LENET else 'scratch'}` first")
    info = model_info(path)["metadata"]
    return load_model(path).eval(), f"{name} trained here ({info.get('epochs')} epochs, {info.get('top1')} % test; {path.name})"


def pretrained(names, quick: bool) -> list[dict]:
    data = get_data("cifar10", limit_eval=1000 if quick else None)
    rows = []
    for name in names:
        t = time.perf_counter()
        acc = evaluate(create_model(name, pretrained=True), data.test)
        rows.append({"model": name, "top1": acc["top1"], "published_top1": PUBLISHED[name], "n": acc["n"],
                     "eval_s": round(time.perf_counter() - t, 1)})
        print(rows[-1], flush=True)
    return rows


def train_and_cache(name: str, dataset: str, budget: dict, pretrained_start: bool, quick: bool) -> dict:
    out = baseline_path(name, dataset)
    budget = dict(budget)
    bs = budget.pop("batch_size")
    if quick:
        budget["epochs"] = 1
    data = get_data(dataset, batch_size=bs, limit_train=2000 if quick else None,
                    limit_eval=1000 if quick else None)
    if out.is_file() and not quick:
        info = model_info(out)["metadata"]
        print(f"{name}: cached at {out}", flush=True)
        return info
    model = create_model(name, pretrained=pretrained_start)
    start_acc = evaluate(model, data.test)["top1"] if pretrained_start else None
    cfg = FitConfig(optimizer="sgd", momentum=0.9, nesterov=True, schedule="cosine", seed=0, **budget)
    t = time.perf_counter()
    ckpt = cache_dir() / "baselines" / f"{name}-{dataset}{'-quick' if quick else ''}.ckpt"
    result = fit(model, data.train, val_loader=data.val, config=cfg, checkpoint_dir=ckpt)
    train_s = time.perf_counter() - t
    test = evaluate(model, data.test)
    info = {"model": name, "data": dataset, "start_top1": start_acc, "top1": test["top1"],
            "top5": test["top5"], "val_top1": result.last.get("val_top1"), "epochs": cfg.epochs, "lr": cfg.lr,
            "weight_decay": cfg.weight_decay, "batch_size": bs, "precision": cfg.precision, "train_images": len(data.train.dataset),
            "train_s": round(train_s, 1), "resumed_from": result.resumed_from, "quick": quick,
            "path": str(out)}
    if not quick:
        save_model(model, out, metadata=info)
    print(info, flush=True)
    return info


def render(res: dict) -> str:
    """BENCHMARKS.md fragment for every part present in `res` (parts may come from separate runs)."""
    cmds = res.get("commands", {})
    md = ["## Baselines (`benchmarks/bench_baselines.py`)", "",
          "Commands: " + "; ".join(f"{part}: " + ", then ".join(f"`{c}`" for c in ([cmd] if isinstance(cmd, str) else cmd))
                                   for part, cmd in cmds.items()), "",
          "'train s' is the wall time of that training on whatever else the machine was doing (cached "
          "models keep the figure of the run that made them): a budget record, not a speed figure.", ""]
    if res.get("quick"):
        md.insert(2, "_Quick mode: subsets, one epoch; not the reference figures._\n")
    if "pretrained" in res:
        md += ["Pretrained CIFAR ResNets (../shared/data/weights) on the original CIFAR-10 test set, no "
               "fine-tuning, against their published accuracy (100 - published error):", "",
               md_table(["model", "top-1 %", "published top-1 %", "images"],
                        [[r["model"], r["top1"], r.get("published_top1"), r["n"]] for r in res["pretrained"]]), ""]
    if "lenet" in res:
        md += ["LeNets trained here on MNIST (SGD, Nesterov momentum 0.9, cosine schedule; 55k train images):", "",
               md_table(["model", "epochs", "lr", "test top-1 %", "Deep Compression baseline %", "train s"],
                        [[r["model"], r["epochs"], r["lr"], r["top1"], PAPER[r["model"]], r["train_s"]]
                         for r in res["lenet"]]), ""]
    if "scratch" in res:
        md += ["CIFAR models trained here from scratch on all 50,000 training images (random crop + flip, "
               "SGD Nesterov 0.9, cosine; val: the test half of the protocol):", "",
               md_table(["model", "epochs", "lr", "precision", "test top-1 %", "val top-1 %", "train s"],
                        [[r["model"], r["epochs"], r["lr"], r.get("precision", "fp32"), r["top1"], r["val_top1"],
                          r["train_s"]] for r in res["scratch"]]), ""]
    return "\n".join(md)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_device_arg(ap)
    ap.add_argument("--quick", action="store_true", help="subsets and one epoch; caches nothing")
    ap.add_argument("--parts", nargs="*", default=["pretrained", "lenet"],
                    help="parts to run (pretrained, lenet, scratch); the others keep the figures of the run "
                         "that last made them")
    args = ap.parse_args(argv)
    topic = "baselines" + ("-quick" if args.quick else "")
    previous = RESULTS / f"{topic}.json"
    res: dict = json.loads(previous.read_text()) if previous.is_file() else {}
    res.pop("adapt", None)  # the JPEG-copy adaptation is gone with the JPEG copy
    res.setdefault("commands", {}).pop("adapt", None)
    res["quick"] = args.quick
    if "pretrained" in args.parts:
        res["pretrained"] = pretrained(list(PUBLISHED), args.quick)
    if "lenet" in args.parts:
        res["lenet"] = [train_and_cache(n, "mnist", b, False, args.quick) for n, b in LENET.items()]
    if "scratch" in args.parts:
        res["scratch"] = [train_and_cache(n, "cifar10", b, False, args.quick) for n, b in SCRATCH.items()]
    for part in args.parts:
        res["commands"][part] = [command_line()]
    write_result(topic, res, render(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

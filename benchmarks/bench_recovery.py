"""What each recovery capability buys at an equal budget, after structured pruning.

    python -m benchmarks.bench_recovery [--quick] [--model resnet20] [--target-macs 0.5] [--epochs 1]
                                        [--device cpu|cuda]

From the shipped checkpoint (trained on all of cifar10/train.npz), uniform L1 filter pruning to the
MACs target, then arms that differ only in how the pruned model recovers:
  plain            labels only, the running BatchNorm statistics of the original
  bn-recal         BatchNorm statistics re-estimated on 512 training images after surgery
  reconstruct      least-squares refit of every layer that lost inputs (He et al. 2017; ThiNet)
  kd               Hinton KD from the unpruned model during fine-tuning (the default)
  reconstruct+kd   both
Each arm gets the same fine-tuning (epochs, batch 128, SGD lr 0.01 cosine, bf16 autocast +
channels_last on CPU). Figures: top-1 on val (the test half used for decisions) right after pruning,
and after fine-tuning on the full 10,000-image test set and on the held-out half no decision saw.
"""
from __future__ import annotations

import argparse
import time

import torch

import torchslim
from benchmarks.common import add_device_arg, command_line, md_table, write_result
from torchslim.analysis.latency import machine_info
from torchslim.data import get_data
from torchslim.models import create_model
from torchslim.prune import prune_report
from torchslim.distill import from_original
from torchslim.train import FitConfig, evaluate, fit

ARMS = {
    "plain": dict(distill=False),
    "bn-recal": dict(distill=False, bn_recalibration=512),
    "reconstruct": dict(distill=False, reconstruct=True),
    "kd": dict(distill=True),
    "reconstruct+kd": dict(distill=True, reconstruct=True),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_device_arg(ap)
    ap.add_argument("--quick", action="store_true", help="20 fine-tuning steps, 1,000 evaluation images")
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--target-macs", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--arms", nargs="*", default=list(ARMS))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cpu = args.device == "cpu"
    data = get_data("cifar10", limit_eval=1000 if args.quick else None, num_workers=0)
    base = create_model(args.model, pretrained=True).eval()
    x = torch.zeros(1, 3, 32, 32)
    baseline = {s: evaluate(base, data.split(s))["top1"] for s in ("val", "test", "heldout")}
    fc = FitConfig(epochs=args.epochs, lr=0.01, nesterov=True, device=args.device, progress=False,
                   precision="bf16", channels_last=cpu, max_steps_per_epoch=20 if args.quick else None)
    rows = []
    for arm in args.arms:
        t0 = time.perf_counter()
        pruned = torchslim.prune(base, "l1", example_input=x, target_macs=args.target_macs, data=data, **ARMS[arm])
        t_prune = time.perf_counter() - t0
        after_prune = evaluate(pruned, data.val)["top1"]
        t1 = time.perf_counter()
        # the same recovery `prune(..., final_finetune=fc)` runs: KD from the unpruned model when distill
        fit(pruned, data.train, val_loader=None, config=fc, loss_fn=from_original(base) if ARMS[arm]["distill"] else None)
        t_ft = time.perf_counter() - t1
        tuned = pruned.cpu().eval()
        rep = prune_report(tuned)
        row = {"arm": arm, **ARMS[arm], "macs_ratio": rep["macs_ratio"], "top1_after_prune_val": after_prune,
               "top1_test": evaluate(tuned, data.test)["top1"], "top1_heldout": evaluate(tuned, data.heldout)["top1"],
               "prune_s": round(t_prune, 1), "finetune_s": round(t_ft, 1),
               "images_per_s": round(len(data.train.dataset) * args.epochs / max(t_ft, 1e-9), 1)
               if not args.quick else None}
        rows.append(row)
        print(row, flush=True)
    budget = (f"{args.epochs} epoch(s) of {len(data.train.dataset)} images, batch 128, SGD lr 0.01 cosine, bf16 autocast"
              + (" + channels_last" if cpu else "") + f", {args.threads} thread(s) on {args.device}"
              + (" (quick: 20 steps, 1,000 evaluation images)" if args.quick else ""))
    result = {"command": command_line(), "model": args.model, "target_macs": args.target_macs, "budget": budget,
              "baseline": baseline, "protocol": data.protocol_note, "rows": rows, "machine": machine_info(args.threads, False)}
    md = [f"## Recovery at an equal budget ({args.model}, uniform L1 to {args.target_macs}x MACs)", "",
          f"`{command_line()}` — {__doc__.split(chr(10))[0].rstrip('.')}. Baseline (shipped checkpoint): "
          f"{baseline['test']:.2f} % test, {baseline['heldout']:.2f} % held-out half, {baseline['val']:.2f} % val half.",
          f"Budget per arm: {budget}. Validation protocol: {data.protocol_note}.", "",
          md_table(["arm", "MACs", "val top-1 right after pruning", "test top-1 after FT", "held-out half after FT",
                    "prune s", "fine-tune s"],
                   [[r["arm"], f"{r['macs_ratio']:.3f}x", r["top1_after_prune_val"], r["top1_test"], r["top1_heldout"],
                     r["prune_s"], r["finetune_s"]] for r in rows]), ""]
    write_result("recovery" + ("-quick" if args.quick else ""), result, "\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

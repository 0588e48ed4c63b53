"""Deep Compression on LeNet-300-100 and LeNet-5 (MNIST) and CIFAR ResNet-56: .slim size vs fp32
weights, and accuracy.

    python -m benchmarks.bench_deep_compression [--quick] [--models lenet300 lenet5]
    python -m benchmarks.bench_deep_compression --models resnet56 --steps-per-epoch 150

Baselines: ~/.cache/torchslim/baselines/<model>-<data>.safetensors (benchmarks.bench_baselines) when
present, else trained here with torchslim.train.fit (LeNets) or the shipped pretrained weights
(ResNet-56); the output says which. Per-layer pruning rates for the LeNets are the paper's (Han et al.
2016, tables 2-3); the paper has no ResNet, so ResNet-56 prunes every conv but the first and the
classifier at `--resnet-sparsity` (the first conv, 432 weights, and the 640-weight classifier at half
that rate).
"""
from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import add_device_arg, command_line, md_table, write_result

PAPER = {"lenet300": {"ratio": 40, "top1_ref": 98.36, "top1": 98.42},
         "lenet5": {"ratio": 39, "top1_ref": 99.20, "top1": 99.26}}
# fraction pruned per layer, from the paper's weight densities (LeNet-300: 8 %, 9 %, 26 %; LeNet-5: 66 %, 12 %, 8 %, 19 %)
SPARSITY = {"lenet300": {"1": 0.92, "3": 0.91, "5": 0.74},
            "lenet5": {"0": 0.34, "2": 0.88, "5": 0.92, "7": 0.81}}


CIFAR = {"resnet56"}  # models run on cifar10; the others on mnist


def resnet_sparsity(model: torch.nn.Module, rate: float) -> dict:
    """Per-layer rates for a CIFAR ResNet: `rate` on every conv but the first, half of it on conv1 and the classifier."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            out[name] = rate / 2 if name in ("conv1", "linear") else rate
    return out


def baseline(name: str, data, quick: bool, epochs: int) -> tuple[torch.nn.Module, str]:
    from torchslim.models import create_model
    from torchslim.train import FitConfig, fit

    dataset = "cifar10" if name in CIFAR else "mnist"
    if name in CIFAR or not quick:  # the shipped checkpoint, or the LeNet bench_baselines trained
        from benchmarks.bench_baselines import baseline as shared_baseline

        return shared_baseline(name, dataset)
    m = create_model(name)
    fit(m, data.train, config=FitConfig(epochs=epochs, lr=0.05, progress=False))
    return m, f"trained here: {epochs} epoch(s) SGD on {len(data.train.dataset)} images"


def main(argv=None) -> int:
    from torchslim.data import get_data
    from torchslim.quant.deep_compression import DeepCompressionConfig, deep_compression
    from torchslim.train import FitConfig

    p = argparse.ArgumentParser()
    add_device_arg(p)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--models", nargs="+", default=["lenet300", "lenet5"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--prune-epochs", type=int, default=1, help="retraining epochs per pruning round")
    p.add_argument("--kmeans-epochs", type=int, default=1, help="centroid fine-tuning epochs")
    p.add_argument("--bits", default="conv=8,fc=5", help="k-means bits per kind (the paper's: conv=8,fc=5)")
    p.add_argument("--resnet-sparsity", type=float, default=0.8, help="fraction of ResNet conv weights pruned")
    p.add_argument("--steps-per-epoch", type=int, default=None,
                   help="cap on batches per retraining epoch (CIFAR epochs are long on a CPU)")
    p.add_argument("--eval-images", type=int, default=None, help="test images (default: all)")
    args = p.parse_args(argv)
    from torchslim.quant import parse_bits

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if len({n in CIFAR for n in args.models}) > 1:
        p.error("run MNIST and CIFAR models in separate invocations (they write separate result fragments)")
    dataset = "cifar10" if args.models[0] in CIFAR else "mnist"
    data = get_data(dataset, batch_size=128, limit_train=5000 if args.quick else None,
                    limit_eval=2000 if args.quick else args.eval_images)
    steps = 20 if args.quick else args.steps_per_epoch
    res = {"command": command_line(), "models": {}, "steps_per_epoch": steps, "train_images": len(data.train.dataset),
           "test_images": len(data.test.dataset)}
    rows = []
    for name in args.models:
        t0 = time.time()
        model, src = baseline(name, data, args.quick, 1 if args.quick else 4)
        sparsity = resnet_sparsity(model, args.resnet_sparsity) if name in CIFAR else SPARSITY[name]
        cfg = DeepCompressionConfig(sparsity=sparsity, bits=parse_bits(args.bits), prune_rounds=2 if args.quick else 3,
                                    prune_epochs=args.prune_epochs, kmeans_epochs=args.kmeans_epochs,
                                    fit=FitConfig(lr=0.01, weight_decay=0.0, progress=False, max_steps_per_epoch=steps))
        q, rep = deep_compression(model, data, cfg, output=f"/tmp/torchslim-dc-{name}")
        rep["baseline"] = src
        rep["seconds"] = time.time() - t0
        res["models"][name] = {k: v for k, v in rep.items() if k != "storage"} | {
            "storage": {k: rep["storage"][k] for k in ("totals", "file_bytes", "fp32_param_bytes", "compression")},
            "layers": rep["storage"]["layers"]}
        s = rep["stages"]
        paper = PAPER.get(name)
        rows.append([name, f"{s['baseline']['top1']:.2f}", f"{s['pruned']['top1']:.2f}", f"{s['quantized']['top1']:.2f}",
                     f"{s['slim_reloaded']['top1']:.2f}", f"{100 * s['pruned']['density']:.1f}",
                     rep["storage"]["fp32_param_bytes"], rep["storage"]["file_bytes"], f"{rep['compression']:.1f}x",
                     f"{paper['ratio']}x, {paper['top1_ref']} -> {paper['top1']}" if paper else "- (not in the paper)"])
        print(rows[-1], flush=True)
    md = ["## Deep Compression (`benchmarks/bench_deep_compression.py`)", "", f"Command: `{command_line()}`", "",
          "Prune (torchslim.sparsity magnitude, iterative, "
          + (f"every conv at {args.resnet_sparsity:g}, conv1 and the classifier at {args.resnet_sparsity / 2:g}"
             if dataset == "cifar10" else "the paper's per-layer rates") + ") -> retrain -> k-means "
          "weight sharing -> retrain centroids -> Huffman + relative-index CSR in a "
          "`.slim` file (bits: " + args.bits + "). Ratio = fp32 parameter bytes / `.slim` file bytes (whole file: header, biases, code "
          "tables, checksum). Top-1 on the " + dataset + f" test set ({len(data.test.dataset)} images). Retraining: "
          + (f"at most {steps} batches of 128 per epoch, " if steps else "full epochs, ")
          + f"{args.prune_epochs} epoch(s) per pruning round (3 rounds), {args.kmeans_epochs} of centroid fine-tuning.", "",
          md_table(["model", "top-1 fp32", "pruned", "k-means", ".slim reloaded", "density %", "fp32 bytes",
                    ".slim bytes", "ratio", "paper (ratio, top-1 ref -> compressed)"], rows), ""]
    for name, r in res["models"].items():
        md += [f"Baseline {name}: {r['baseline']}.", "", f"Per layer ({name}):", "",
               md_table(["layer", "weights", "nonzero", "fp32 B", "pruned B (CSR fp32)", "quantized B", "coded B",
                         "index bits/w", "index entropy", "gap bits", "gap entropy"],
                        [[n, L["numel"], L["nonzero"], L["bytes_original"], L["bytes_pruned"], L["bytes_quantized"],
                          L["bytes_coded"], L["index_bits_per_weight"], L["index_entropy_bits"],
                          L["gap_bits_per_entry"], L["gap_entropy_bits"]] for n, L in r["layers"].items()]), ""]
    tag = "" if args.bits == "conv=8,fc=5" else "-" + args.bits.replace("=", "").replace(",", "-")
    if dataset == "cifar10":
        tag = "-" + "-".join(args.models) + tag
        md[0] = md[0] + ", CIFAR-10"
    if tag:
        md[0] = md[0] + f", k-means bits {args.bits}"
    write_result("deep_compression" + tag + ("-quick" if args.quick else ""), res, "\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

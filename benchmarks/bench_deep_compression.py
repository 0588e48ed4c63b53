"""Deep Compression on LeNet-300-100 and LeNet-5 (MNIST): .slim size vs fp32 weights, and accuracy.

    python -m benchmarks.bench_deep_compression [--quick] [--models lenet300 lenet5]

Baselines: ~/.cache/torchslim/baselines/<model>-mnist.safetensors (benchmarks.bench_baselines) when
present, else trained here with torchslim.train.fit (budget stated in the output). Per-layer pruning
rates are the paper's (Han et al. 2016, tables 2-3).
"""
from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import command_line, md_table, write_result

PAPER = {"lenet300": {"ratio": 40, "top1_ref": 98.36, "top1": 98.42},
         "lenet5": {"ratio": 39, "top1_ref": 99.20, "top1": 99.26}}
# fraction pruned per layer, from the paper's weight densities (LeNet-300: 8 %, 9 %, 26 %; LeNet-5: 66 %, 12 %, 8 %, 19 %)
SPARSITY = {"lenet300": {"1": 0.92, "3": 0.91, "5": 0.74},
            "lenet5": {"0": 0.34, "2": 0.88, "5": 0.92, "7": 0.81}}


def baseline(name: str, data, quick: bool, epochs: int) -> tuple[torch.nn.Module, str]:
    from torchslim.io import load_model
    from torchslim.models import create_model
    from torchslim.paths import cache_dir
    from torchslim.train import FitConfig, fit

    for path in (cache_dir() / "baselines" / f"{name}-mnist.safetensors",
                 cache_dir() / "baselines" / f"{name}-mnist-sparsity.safetensors"):  # the sparsity benchmark's
        if path.exists() and not quick:
            return load_model(path), f"cached {path.name} (~/.cache/torchslim/baselines)"
    m = create_model(name)
    fit(m, data.train, config=FitConfig(epochs=epochs, lr=0.05, progress=False))
    return m, f"trained here: {epochs} epoch(s) SGD on {len(data.train.dataset)} images"


def main(argv=None) -> int:
    from torchslim.data import get_data
    from torchslim.quant.deep_compression import DeepCompressionConfig, deep_compression
    from torchslim.train import FitConfig

    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--models", nargs="+", default=["lenet300", "lenet5"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--prune-epochs", type=int, default=1, help="retraining epochs per pruning round")
    p.add_argument("--kmeans-epochs", type=int, default=1, help="centroid fine-tuning epochs")
    p.add_argument("--bits", default="conv=8,fc=5", help="k-means bits per kind (the paper's: conv=8,fc=5)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    limit = 5000 if args.quick else None
    data = get_data("mnist", batch_size=128, limit_train=limit, limit_eval=2000 if args.quick else None)
    res = {"command": command_line(), "models": {}}
    rows = []
    for name in args.models:
        t0 = time.time()
        model, src = baseline(name, data, args.quick, 1 if args.quick else 4)
        from torchslim.cli.quantize import parse_bits

        cfg = DeepCompressionConfig(sparsity=SPARSITY[name], bits=parse_bits(args.bits), prune_rounds=2 if args.quick else 3,
                                    prune_epochs=args.prune_epochs, kmeans_epochs=args.kmeans_epochs,
                                    fit=FitConfig(lr=0.01, weight_decay=0.0, progress=False,
                                                  max_steps_per_epoch=20 if args.quick else None))
        q, rep = deep_compression(model, data, cfg, output=f"/tmp/torchslim-dc-{name}")
        rep["baseline"] = src
        rep["seconds"] = time.time() - t0
        res["models"][name] = {k: v for k, v in rep.items() if k != "storage"} | {
            "storage": {k: rep["storage"][k] for k in ("totals", "file_bytes", "fp32_param_bytes", "compression")},
            "layers": rep["storage"]["layers"]}
        s = rep["stages"]
        rows.append([name, f"{s['baseline']['top1']:.2f}", f"{s['pruned']['top1']:.2f}", f"{s['quantized']['top1']:.2f}",
                     f"{s['slim_reloaded']['top1']:.2f}", f"{100 * s['pruned']['density']:.1f}",
                     rep["storage"]["fp32_param_bytes"], rep["storage"]["file_bytes"], f"{rep['compression']:.1f}x",
                     f"{PAPER[name]['ratio']}x, {PAPER[name]['top1_ref']} -> {PAPER[name]['top1']}"])
        print(rows[-1], flush=True)
    md = ["## Deep Compression (`benchmarks/bench_deep_compression.py`)", "", f"Command: `{command_line()}`", "",
          "Prune (torchslim.sparsity magnitude, iterative, the paper's per-layer rates) -> retrain -> k-means "
          "weight sharing -> retrain centroids -> Huffman + relative-index CSR in a "
          "`.slim` file (bits: " + args.bits + "). Ratio = fp32 parameter bytes / `.slim` file bytes (whole file: header, biases, code "
          "tables, checksum). Top-1 on the MNIST test set" + (" (quick: 2000 images)" if args.quick else "") + ".", "",
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
    if tag:
        md[0] = md[0] + f", k-means bits {args.bits}"
    write_result("deep_compression" + tag + ("-quick" if args.quick else ""), res, "\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Binary and ternary weights on MNIST (LeNet-300-100, LeNet-5): accuracy, `.slim` size, bits per weight.

    python -m benchmarks.bench_binary [--quick] [--models lenet300 lenet5] [--keep-first-last]

fp32 baseline: ~/.cache/torchslim/baselines/<model>-mnist.safetensors (benchmarks.bench_baselines) when
present, else trained here with bench_baselines' recipe (SGD, Nesterov 0.9, cosine, its lr and weight
decay) for the epochs stated in the output (not cached: it is not bench_baselines' 20-epoch model).
From it, scaled-sign binary (per-filter alpha = mean |W|) and TWN ternary versions are fine-tuned with
the straight-through estimator (torchslim.quant.binary), written as bit-packed `.slim` files, read back,
and evaluated again. The budget was sized for ~15 minutes on one core (measured: a LeNet-5 epoch takes
~2 minutes there, a LeNet-300-100 epoch ~15-25 s).
"""
from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import add_device_arg, command_line, md_table, write_result

FP32_EPOCHS = {"lenet300": 5, "lenet5": 2}  # only when no cached baseline
LOWBIT_EPOCHS = {"lenet300": 3, "lenet5": 1}
PAPER = {
    "lenet300": "BinaryConnect (Courbariaux et al. 2015), binary MLP on MNIST: ~98.7 % (1.29 % error, "
                "deterministic; their MLP is 3x1024 with BN, not LeNet-300-100)",
    "lenet5": "TWN (Li & Liu 2016), LeNet-5 on MNIST: ternary 99.35 %, fp32 99.41 % (their LeNet-5 is "
              "32C5-MP2-64C5-MP2-512FC)",
}


def baseline(name: str, data, epochs: int, quick: bool) -> tuple[torch.nn.Module, dict]:
    from benchmarks.bench_baselines import LENET, baseline_path
    from torchslim.io import load_model
    from torchslim.models import create_model
    from torchslim.train import FitConfig, fit

    path = baseline_path(name, "mnist")
    if path.is_file() and not quick:
        return load_model(path), {"source": f"cached {path.name} (bench_baselines)", "epochs": None, "train_s": None}
    budget = {k: v for k, v in LENET[name].items() if k != "batch_size"} | {"epochs": epochs}
    m = create_model(name)
    t = time.perf_counter()
    fit(m, data.train, config=FitConfig(optimizer="sgd", momentum=0.9, nesterov=True, schedule="cosine", seed=0,
                                        progress=False, eval_every=0, **budget))
    return m, {"source": f"trained here: {epochs} epoch(s), lr {budget['lr']}, weight decay {budget['weight_decay']}, "
                         f"{len(data.train.dataset)} images", "epochs": epochs, "train_s": time.perf_counter() - t}


def low_bit_run(model, mode: str, data, args, epochs: int, out_dir) -> dict:
    from torchslim import encode
    from torchslim.quant import quantize
    from torchslim.train import FitConfig, evaluate

    t = time.perf_counter()
    q = quantize(model, mode, data=data.train, epochs=epochs, keep_first_last=args.keep_first_last,
                 fit=FitConfig(optimizer=args.optimizer, lr=args.lr, weight_decay=0.0, schedule="cosine", seed=0,
                               progress=False, eval_every=0,
                               max_steps_per_epoch=20 if args.quick else None))
    train_s = time.perf_counter() - t
    path = encode.save(q, out_dir / f"{mode}.slim")
    back = encode.load(path)
    x = next(iter(data.test))[0]
    with torch.no_grad():
        exact = torch.equal(back(x), q(x))
    rep = encode.storage_report(path)
    low = {n: L for n, L in rep["layers"].items() if L.get("mode") == mode}
    n_low = sum(L["numel"] for L in low.values())
    n_all = sum(p.numel() for p in q.parameters())
    return {
        "top1": evaluate(q, data.test)["top1"], "slim_top1": evaluate(back, data.test)["top1"],
        "reloaded_outputs_equal": exact, "train_s": train_s, "epochs": epochs,
        "file_bytes": rep["file_bytes"], "fp32_param_bytes": rep["fp32_param_bytes"],
        "compression": rep["compression"],
        "low_bit_layers": list(low), "low_bit_weights": n_low, "params": n_all,
        "code_bits_per_weight": sum(L["code_bits_per_weight"] * L["numel"] for L in low.values()) / n_low,
        "bits_per_weight_with_scales": 8 * sum(L["bytes_coded"] for L in low.values()) / n_low,
        "file_bits_per_param": 8 * rep["file_bytes"] / n_all,
        "layers": {n: {k: L[k] for k in ("numel", "nonzero", "coding", "bytes_coded", "bits_per_weight",
                                         "code_bits_per_weight", "symbol_entropy_bits", "coding_bits_per_weight")}
                   for n, L in low.items()},
    }


def markdown(res: dict) -> str:
    """The BENCHMARKS.md fragment, from the run's JSON alone (`--render` rebuilds it)."""
    rows, layer_md = [], []
    for name, r in res["models"].items():
        base = r["baseline"]
        for mode in ("binary", "ternary"):
            m = r[mode]
            paper = PAPER[name] if mode == {"lenet300": "binary", "lenet5": "ternary"}[name] else ""
            rows.append([name, mode, f"{base['top1']:.2f}", f"{m['top1']:.2f}", f"{m['slim_top1']:.2f}",
                         m["epochs"], m["fp32_param_bytes"], m["file_bytes"], f"{m['compression']:.1f}x",
                         f"{m['code_bits_per_weight']:.3f}", f"{m['bits_per_weight_with_scales']:.3f}",
                         f"{m['file_bits_per_param']:.2f}", paper])
            layer_md.append(md_table(
                [f"{name} {mode}: layer", "weights", "nonzero", "coding", "bytes", "bits/w (codes)",
                 "bits/w (+ scales)", "symbol entropy bits", "bits/w per coding"],
                [[n, L["numel"], L["nonzero"], L["coding"], L["bytes_coded"], f"{L['code_bits_per_weight']:.3f}",
                  f"{L['bits_per_weight']:.3f}", f"{L['symbol_entropy_bits']:.3f}",
                  ", ".join(f"{k} {v:.3f}" for k, v in L["coding_bits_per_weight"].items())]
                 for n, L in m["layers"].items()]))
    which = "first and last layer fp32, the others" if res["keep_first_last"] else "every Conv2d/Linear layer"
    md = ["## Binary and ternary weights (`benchmarks/bench_binary.py`)", "", f"Command: `{res['command']}`", "",
          f"MNIST, {res['threads']} thread(s), {res['seconds'] / 60:.1f} min in all (one core shared with other "
          f"jobs). Low-bit: {which} binary "
          "(alpha_c * sign(W), alpha_c = mean |W_c| per output filter, BinaryConnect with XNOR-Net's scale) or "
          "ternary (TWN: threshold 0.7 mean |W_c|), fine-tuned from the fp32 model with the straight-through "
          f"estimator ({res['optimizer']}, lr {res['lr']:g}, cosine, batch 128, latent fp32 weights). Written as "
          "`.slim` files (version 2: binary 1 bit per weight, ternary 5 trits per byte or Huffman, whichever is "
          "smaller per layer, plus one fp32 scale per filter; biases raw), read back and evaluated again. "
          "Ratio = fp32 parameter bytes / whole `.slim` file (header, biases, scales, checksum). Bits/w: of the "
          "low-bit layers' sign/trit codes, then with their scales; 'file bits/param': the whole file over all "
          "parameters. Top-1 on the MNIST test set" + (" (quick: 2000 images, 20 steps per epoch)" if res.get("quick") else "")
          + ". The baselines are short-budget models (fp32 top-1 below the papers' and below bench_baselines' "
          "20-epoch ones); compare each low-bit model with its own fp32 column.", "",
          md_table(["model", "weights", "fp32 top-1", "low-bit top-1", ".slim reloaded top-1", "STE epochs",
                    "fp32 bytes", ".slim bytes", "ratio", "bits/w (codes)", "bits/w (+ scales)", "file bits/param",
                    "paper"], rows), ""]
    for name, r in res["models"].items():
        b = r["baseline"]
        md += [f"Baseline {name}: {b['source']}" + (f" ({b['train_s']:.0f} s)" if b.get("train_s") else "")
               + f"; STE fine-tuning took {r['binary']['train_s']:.0f} s (binary) and {r['ternary']['train_s']:.0f} s "
               f"(ternary); reloaded outputs equal: {r['binary']['reloaded_outputs_equal'] and r['ternary']['reloaded_outputs_equal']}.", ""]
    md += ["Per layer: bits per weight of every ternary coding measured (the file keeps the smallest), next to the "
           "entropy of single symbols. That entropy bounds codes of single symbols (sign bits, `huffman`); "
           "`huffman-base3` codes 5 neighbouring weights at once and goes below it where neighbours are correlated "
           "(LeNet-300's input layer; a likely cause: MNIST's border pixels are always 0, so their weights get no "
           "gradient and stay alike).", ""]
    md += [t + "\n" for t in layer_md]
    return "\n".join(md)


def main(argv=None) -> int:
    import json
    import tempfile
    from pathlib import Path

    from benchmarks.common import RESULTS
    from torchslim.data import get_data
    from torchslim.train import evaluate

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_device_arg(p)
    p.add_argument("--quick", action="store_true", help="5000 training images, 20 steps per epoch, 2000 test images")
    p.add_argument("--models", nargs="+", default=["lenet300", "lenet5"], choices=list(FP32_EPOCHS))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--fp32-epochs", type=int, help="baseline epochs when none is cached (default: lenet300 5, lenet5 2)")
    p.add_argument("--epochs", type=int, help="STE fine-tuning epochs per low-bit model (default: lenet300 3, lenet5 1)")
    p.add_argument("--optimizer", default="adam", choices=["adam", "sgd"])
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--keep-first-last", action="store_true",
                   help="leave the first and last layer in fp32 (XNOR/TWN on ImageNet); default: every layer low-bit")
    p.add_argument("--render", action="store_true", help="only rebuild the markdown from results/binary[-quick].json")
    args = p.parse_args(argv)
    topic = "binary" + ("-quick" if args.quick else "")
    if args.render:
        res = json.loads((RESULTS / f"{topic}.json").read_text())
        write_result(topic, res, markdown(res))
        return 0
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = get_data("mnist", batch_size=128, limit_train=5000 if args.quick else None,
                    limit_eval=2000 if args.quick else None)
    res = {"command": command_line(), "threads": args.threads, "optimizer": args.optimizer, "lr": args.lr,
           "keep_first_last": args.keep_first_last, "quick": args.quick, "models": {}}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            t0 = time.perf_counter()
            fp32_epochs = 1 if args.quick else (args.fp32_epochs or FP32_EPOCHS[name])
            model, base = baseline(name, data, fp32_epochs, args.quick)
            base["top1"] = evaluate(model, data.test)["top1"]
            r = {"baseline": base}
            for mode in ("binary", "ternary"):
                r[mode] = low_bit_run(model, mode, data, args, args.epochs or LOWBIT_EPOCHS[name], Path(tmp))
                print(name, mode, {k: r[mode][k] for k in ("top1", "slim_top1", "file_bytes", "compression",
                                                            "code_bits_per_weight", "train_s")}, flush=True)
            r["seconds"] = time.perf_counter() - t0
            res["models"][name] = r
    res["seconds"] = time.perf_counter() - t_all
    write_result(topic, res, markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""int8 post-training quantization: accuracy, size and measured latency of every execution path vs fp32.

    python -m benchmarks.bench_quant [--quick] [--models resnet20 resnet56 torchvision:resnet18 torchvision:mobilenet_v2]
    python -m benchmarks.bench_quant --observers-only --models resnet20   # only the observer comparison

CIFAR ResNets: the shipped checkpoints as they are (`bench_baselines.baseline`), top-1 on a stated subset of
the original CIFAR-10 test set. torchvision models:
random init, calibration and agreement on random inputs, latency only. All paths of one model are
measured in the same process, one after another, batch 1, `--threads` intra-op threads.
On ResNet-18 extra ONNX Runtime variants explain why a naive QDQ model can be slower than fp32.
"""
from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import add_device_arg, command_line, md_table, write_result
from torchslim.quant.int8_ptq import calibration_batches


def load(name: str):
    from benchmarks.bench_baselines import baseline
    from torchslim.models import create_model

    if name.startswith("torchvision:"):
        return create_model(name).eval(), "random init (torchvision)"
    return baseline(name, "cifar10")


def ablations():
    from onnxruntime.quantization import QuantType

    return {
        "ort-qdq naive (no pre-process, per-tensor, s8 act)": dict(fmt="qdq", per_channel=False, source="raw",
                                                                   activation_type=QuantType.QInt8),
        "ort-qdq s8 activations": dict(fmt="qdq", activation_type=QuantType.QInt8),
        "ort-qdq per-tensor": dict(fmt="qdq", per_channel=False),
        "ort-qdq no pre-process": dict(fmt="qdq", source="raw"),
    }


def compare_observers(model, kw: dict, observers, threads) -> dict:
    """Top-1 of the ort-qdq path and of the fake-quant reference under each activation observer."""
    from torchslim.quant import Int8Config, quantize

    out = {}
    for obs in observers:
        t = time.perf_counter()
        oq = quantize(model, "int8-ptq", config=Int8Config(observer=obs, paths=("ort-qdq",), compare=True, repeats=3,
                                                           min_time_s=0.0, threads=threads), **kw)
        r = oq.quant_report["paths"]
        out[obs] = {"ort-qdq top1": r["ort-qdq"]["top1"], "fake-quant top1": r["fake-quant"]["top1"],
                    "seconds": time.perf_counter() - t}
    return out


def observers_only(args, cifar, n_eval: int) -> int:
    """The observer comparison alone (every observer, mse included), as its own fragment: minutes, not hours."""
    out = {"command": command_line(), "threads": args.threads, "eval_images": n_eval, "models": {}}
    rows = []
    for name in [m for m in args.models if not m.startswith("torchvision:")]:
        model, src = load(name)
        obs = compare_observers(model, dict(calib=calibration_batches(cifar.train, 256), eval_loader=cifar.test),
                                dict.fromkeys([*args.observers, "mse"]), args.threads)
        out["models"][name] = {"source": src, "observers": obs}
        rows += [[name, o, f"{v['ort-qdq top1']:.2f}", f"{v['fake-quant top1']:.2f}", f"{v['seconds']:.0f}"]
                 for o, v in obs.items()]
        print(name, {o: v["ort-qdq top1"] for o, v in obs.items()}, flush=True)
    md = ["## int8 activation observers (`benchmarks/bench_quant.py --observers-only`)", "", f"Command: `{command_line()}`",
          "", f"The observer comparison of the int8 section on its own: ort-qdq path, per-channel int8 weights, uint8 "
          f"activations calibrated on 256 CIFAR-10 training images (the same augmented images for every observer), "
          f"top-1 on {n_eval} test images (the same subset and settings as the int8 section, whose calibration "
          "images are another draw: a few tenths of a point between the two runs are calibration sampling). "
          "'seconds': the whole quantization (export, calibration, ORT quantization, evaluation of both). Models: "
          + "; ".join(f"{n}: {r['source']}" for n, r in out["models"].items()) + ".", "", md_table(["model", "observer", "ort-qdq top-1", "fake-quant top-1", "seconds"], rows), ""]
    write_result("quant_observers" + ("-quick" if args.quick else ""), out, "\n".join(md))
    return 0


def main(argv=None) -> int:
    from torchslim.data import get_data
    from torchslim.quant import Int8Config, quantize

    p = argparse.ArgumentParser()
    add_device_arg(p)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--models", nargs="*",
                   default=["resnet20", "resnet56", "torchvision:resnet18", "torchvision:mobilenet_v2"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--eval-images", type=int, default=1000)
    p.add_argument("--observers", nargs="+", default=["minmax", "percentile", "kl"],
                   help="extra observers compared on the CIFAR models (ort-qdq only); mse is the main run")
    p.add_argument("--observers-only", action="store_true",
                   help="run only the observer comparison on the CIFAR models of --models (its own fragment)")
    p.add_argument("--qat-models", nargs="*", default=["resnet20"],
                   help="CIFAR models also trained with int8 QAT (ort-qdq path) on the calibration subset")
    p.add_argument("--qat-epochs", type=int, default=2)
    p.add_argument("--qat-lr", type=float, default=1e-4)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n_eval = 256 if args.quick else args.eval_images
    cifar = get_data("cifar10", batch_size=100, limit_train=512, limit_eval=n_eval)
    if args.observers_only:
        return observers_only(args, cifar, n_eval)
    res = {"command": command_line(), "threads": args.threads, "eval_images": n_eval, "models": {}}
    md = ["## int8 quantization (`benchmarks/bench_quant.py`)", "", f"Command: `{command_line()}`", "",
          f"Batch 1, {args.threads} intra-op thread(s), medians of timed runs measured one after another in one "
          f"process. Top-1 on {n_eval} CIFAR-10 test images (random subset). Weights int8 symmetric "
          "per-channel, activations uint8 asymmetric (MSE observer, 256 calibration images), BN folded. "
          "'correct': relative L2 error of logits vs fp32 <= 0.2 (and >= 90 % argmax agreement when "
          "fp32 is confident). 'chosen' = fastest correct int8 path.", ""]
    for name in args.models:
        t0 = time.time()
        model, src = load(name)
        tv = name.startswith("torchvision:")
        if tv:
            calib = [torch.randn(8, 3, 224, 224) for _ in range(2 if args.quick else 4)]
            kw = dict(calib=calib)
        else:  # drawn once: every observer and path calibrates on the same (augmented) images
            kw = dict(calib=calibration_batches(cifar.train, 256), eval_loader=cifar.test)
        cfg = Int8Config(observer="mse", calib_images=32 if tv else 256, threads=args.threads,
                         repeats=10 if args.quick else 20, min_time_s=0.5 if args.quick else 2.0,
                         extra_paths=ablations() if name == "torchvision:resnet18" else {})
        q = quantize(model, "int8-ptq", config=cfg, **kw)
        rep = q.quant_report
        rep["source"] = src
        if not tv:
            rep["observers"] = compare_observers(model, kw, args.observers, args.threads)
        rep["seconds"] = time.time() - t0
        res["models"][name] = rep
        base = rep["paths"]["fp32-torch"]
        rows = []
        for path, r in rep["paths"].items():
            if "error" in r:
                rows.append([path, "error: " + r["error"][:80], "", "", "", "", "", ""])
                continue
            rows.append([path + (" (chosen)" if path == rep["chosen"] else ""),
                         f"{r['median_ms']:.2f}" if "median_ms" in r else "-",
                         f"{base['median_ms'] / r['median_ms']:.2f}x" if "median_ms" in r else "-",
                         f"{r['size_bytes'] / 1e6:.2f}" if "size_bytes" in r else "-",
                         f"{r['top1']:.2f}" if "top1" in r else "-",
                         f"{r['top1'] - base['top1']:+.2f}" if "top1" in r and "top1" in base else "-",
                         f"{r['rel_l2_error']:.3f}" if "rel_l2_error" in r else "-", str(r.get("correct", "")) ])
        md += [f"### {name}", "", f"Model: {src}. Chosen path: **{rep['chosen']}**, "
               f"{rep['speedup_vs_fp32_torch']:.2f}x vs fp32 torch, {rep['speedup_vs_fp32_ort']:.2f}x vs fp32 ORT; "
               f"fastest of all: {rep['fastest_overall']}.", "",
               md_table(["path", "median ms", "speedup vs fp32 torch", "size MB", "top-1", "drop vs fp32",
                         "rel. L2 err", "correct"], rows), ""]
        if rep.get("observers"):
            md += [f"Observers ({name}, ort-qdq): " + ", ".join(
                f"{o}: {v['ort-qdq top1']:.2f} %" for o, v in rep["observers"].items())
                + f", mse: {rep['paths']['ort-qdq'].get('top1', float('nan')):.2f} %.", ""]
        print(name, rep["chosen"], f"{time.time() - t0:.0f}s", flush=True)
        write_result("quant" + ("-quick" if args.quick else ""), res, "\n".join(md))
    write_result("quant" + ("-quick" if args.quick else ""), res, "\n".join(md)) if args.models else None
    qat_rows, qres = [], {"command": command_line(), "eval_images": n_eval}
    for name in args.qat_models:
        from torchslim.quant import QATConfig
        from torchslim.train import FitConfig

        t0 = time.time()
        model, src = load(name)
        i8 = Int8Config(observer="mse", paths=("ort-qdq",), threads=args.threads, repeats=3, min_time_s=0.0)
        q = quantize(model, "int8-qat", data=cifar, eval_loader=cifar.test,
                     config=QATConfig(epochs=args.qat_epochs, fit=FitConfig(lr=args.qat_lr, weight_decay=0, progress=False),
                                      int8=i8))
        r = q.quant_report["paths"]
        from torchslim.train import evaluate

        fp32_top1 = evaluate(model, cifar.test)["top1"]
        ptq_q = quantize(model, "int8-ptq", config=i8, calib=cifar.train, eval_loader=cifar.test)
        ptq = ptq_q.quant_report["paths"]["ort-qdq"]["top1"]
        qres.setdefault("qat", {})[name] = {"fp32": fp32_top1, "qat float (fake-quant removed)": r["fp32-torch"]["top1"],
                                           "qat ort-qdq": r["ort-qdq"]["top1"], "lr": args.qat_lr,
                                           "ptq ort-qdq": ptq, "epochs": args.qat_epochs,
                                           "train_images": len(cifar.train.dataset), "seconds": time.time() - t0}
        qat_rows.append([name, fp32_top1, ptq, r["fp32-torch"]["top1"], r["ort-qdq"]["top1"], args.qat_epochs,
                         f"{args.qat_lr:g}", len(cifar.train.dataset)])
        print(name, "qat", f"{time.time() - t0:.0f}s", flush=True)
    if qat_rows:
        qmd = ["## int8 QAT (`benchmarks/bench_quant.py`)", "", f"Command: `{command_line()}`", "",
               f"Top-1 on {n_eval} CIFAR-10 test images. PTQ and QAT measured in the same run. "
               "Fake-quant training (BN folded, per-channel weights, EMA activation ranges, STE) on the "
               "calibration subset only (CPU budget), then the ort-qdq path.", "",
               md_table(["model", "fp32 top-1", "PTQ int8 top-1", "QAT float weights top-1", "QAT int8 top-1", "epochs",
                         "lr", "train images"], qat_rows), ""]
        write_result("quant_qat" + ("-quick" if args.quick else ""), qres, "\n".join(qmd))
    if not args.models:
        return 0
    md += ["Paper figures: Jacob et al. 2018 report int8 ResNet-50 within ~2 points and 1.5-2x faster than float on "
           "ARM; Krishnamoorthi 2018 per-channel PTQ within 0.5 points on ResNets. The target here: ResNet-56 drop "
           "<= 0.5 points.", ""]
    write_result("quant" + ("-quick" if args.quick else ""), res, "\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

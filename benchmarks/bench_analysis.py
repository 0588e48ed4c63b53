"""The measuring stick on reference models: params, MACs, size, latency on PyTorch and ONNX Runtime,
and achieved MAC/s as a fraction of this CPU's peak fp32 GEMM rate.

    python -m benchmarks.bench_analysis [--quick]
"""
from __future__ import annotations

import argparse

import torch

from benchmarks.common import add_device_arg, command_line, md_table, write_result
from torchslim.analysis import machine_info, measure_latency, profile, saved_size_bytes
from torchslim.models import create_model, model_input_size

MODELS = ["resnet20", "resnet56", "vgg16_cifar", "lenet5", "torchvision:resnet18", "torchvision:mobilenet_v2"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    add_device_arg(ap)
    ap.add_argument("--quick", action="store_true", help="two models, fewer repeats")
    ap.add_argument("--batch-sizes", type=int, nargs="*", default=[1, 32])
    args = ap.parse_args(argv)
    names = MODELS[:2] if args.quick else MODELS
    repeats = 5 if args.quick else 20
    threads = torch.get_num_threads()
    machine = machine_info(threads)
    rows = []
    for name in names:
        model = create_model(name).eval()
        size = model_input_size(name)
        prof = profile(model, size)
        for bs in args.batch_sizes:
            if bs > 1 and name.startswith("torchvision:") and args.quick:
                continue
            lat = {rt: measure_latency(model, input_size=size, batch_size=bs, runtime=rt, threads=threads,
                                       repeats=repeats, min_time_s=0.2 if args.quick else 1.0)
                   for rt in ("torch", "onnxruntime")}
            rows.append({"model": name, "input": "x".join(map(str, size)), "batch": bs, "params": prof.params,
                         "macs": prof.macs, "size_bytes": saved_size_bytes(model),
                         **{f"{rt}_ms": r.median_ms for rt, r in lat.items()},
                         **{f"{rt}_spread_ms": r.spread_ms for rt, r in lat.items()},
                         **{f"{rt}_peak_fraction": r.fraction_of_peak for rt, r in lat.items()}})
            print(rows[-1], flush=True)
    md = ["## Analysis and latency (`benchmarks/bench_analysis.py`)", "", f"Command: `{command_line()}`", "",
          f"Machine: {machine['cpu']}, {machine['cores']} cores, {threads} threads; torch {machine['torch']}, "
          f"onnxruntime {machine.get('onnxruntime')}; measured peak fp32 GEMM "
          f"{machine['peak_gemm_gflops']:.0f} GFLOP/s. Medians; % of peak = achieved MAC/s x 2 / peak FLOP/s.", "",
          md_table(["model", "input", "batch", "params (M)", "MACs (M)", "torch ms", "ORT ms", "ORT speedup",
                    "torch % peak", "ORT % peak"],
                   [[r["model"], r["input"], r["batch"], r["params"] / 1e6, r["macs"] / 1e6, r["torch_ms"],
                     r["onnxruntime_ms"], r["torch_ms"] / r["onnxruntime_ms"], 100 * r["torch_peak_fraction"],
                     100 * r["onnxruntime_peak_fraction"]] for r in rows]), ""]
    if args.quick:
        md.insert(2, "_Quick mode: fewer models and repeats._\n")
    write_result("analysis" + ("-quick" if args.quick else ""), {"machine": machine, "rows": rows,
                                                                 "command": command_line()}, "\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

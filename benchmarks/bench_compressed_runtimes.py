"""Do compressed models keep their gain at deployment? Pruned and Tucker-decomposed ResNet-56 against the
original on every runtime: PyTorch, ONNX Runtime and OpenVINO (fp32 and bf16).

    python -m benchmarks.bench_compressed_runtimes [--quick] [--budget-s 60]

Models (latency only, so no fine-tuning: the weights do not change the arithmetic): the shipped ResNet-56;
uniform L1 filter pruning to 0.5x MACs with the default `round_to`; Tucker-2 with each eligible conv's
parameters cut 2.5-fold (`rank={"compression": 2.5}`, first conv and classifier kept). Batch 1, one
thread per runtime; every arm's calls alternate with the others' (then consecutive blocks), medians,
as in bench_runtimes. The speedup is original / compressed on the same runtime and precision.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

import torchslim
from benchmarks.bench_runtimes import ort_fn, ov_request, ov_fn, torch_fn, time_arms
from benchmarks.common import add_device_arg, command_line, md_table, write_result
from torchslim.analysis import profile
from torchslim.models import create_model
from torchslim.onnx_export import to_onnx
from torchslim.runtimes import cpu_features


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_device_arg(ap)
    ap.add_argument("--quick", action="store_true", help="a 10 s timing budget per model set")
    ap.add_argument("--budget-s", type=float, default=60.0, help="timing budget for all arms together")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    x1 = torch.zeros(1, 3, 32, 32)
    base = create_model("resnet56", pretrained=True).eval()
    models = {
        "original": base,
        "pruned L1 0.5x MACs": torchslim.prune(base, "l1", example_input=x1, target_macs=0.5).eval(),
        "Tucker-2 2.5x per conv": torchslim.decompose(base, method="tucker", rank={"compression": 2.5}).eval(),
    }
    macs = {k: profile(m, (3, 32, 32)).macs for k, m in models.items()}
    feats = [f for f, present in cpu_features().items() if present]
    bf16 = "avx512_bf16" in feats or "amx_bf16" in feats
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    fns = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k, m in models.items():
            onnx = str(to_onnx(m, x1, Path(tmp) / f"{len(fns)}.onnx"))
            fns[(k, "PyTorch fp32")] = torch_fn(m)
            fns[(k, "ONNX Runtime fp32")] = ort_fn(onnx)
            fns[(k, "OpenVINO fp32")] = ov_fn(ov_request(onnx, "fp32", (1, 3, 32, 32)))
            if bf16:
                fns[(k, "OpenVINO bf16")] = ov_fn(ov_request(onnx, "bf16", (1, 3, 32, 32)))
        times = time_arms(fns, x, 10.0 if args.quick else args.budget_s)
    runtimes = list(dict.fromkeys(r for _, r in fns))
    rows = []
    for k in models:
        row = {"model": k, "macs_ratio": macs[k] / macs["original"]}
        for r in runtimes:
            t = times[(k, r)]
            row[r] = {"alternating_ms": t["alternating_ms"], "block_ms": t["block_ms"],
                      "speedup_alternating": times[("original", r)]["alternating_ms"] / t["alternating_ms"],
                      "speedup_block": times[("original", r)]["block_ms"] / t["block_ms"]}
        rows.append(row)
        print(row, flush=True)
    load = os.getloadavg()[0]
    res = {"command": command_line(), "cpu_features": sorted(feats), "load_average": load, "rows": rows,
           "calls": next(iter(times.values()))["calls"]}
    md = ["## Compressed models on every runtime (`benchmarks/bench_compressed_runtimes.py`)", "",
          f"`{command_line()}`: ResNet-56 (shipped checkpoint) pruned and Tucker-decomposed, batch 1, one thread, "
          f"every arm alternating with the others, medians of {res['calls']} calls (consecutive-block medians in "
          f"the JSON); CPU flags {', '.join(f for f in res['cpu_features'] if 'bf16' in f or 'vnni' in f or 'amx' in f) or 'none of bf16/vnni/amx'}; "
          f"load average {load:.1f} at the end. Speedup: original / compressed on the same runtime.", "",
          md_table(["model", "MACs"] + [f"{r} ms (speedup)" for r in runtimes],
                   [[r["model"], f"{r['macs_ratio']:.3f}x"] + [f"{r[rt]['alternating_ms']:.3f} ({r[rt]['speedup_alternating']:.2f}x)"
                                                              for rt in runtimes] for r in rows]), ""]
    write_result("compressed_runtimes" + ("-quick" if args.quick else ""), res, "\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Training step time: fp32 against bf16 autocast, NCHW against channels_last (FitConfig.precision / channels_last).

    python -m benchmarks.bench_train_precision [--quick] [--models vgg16_cifar resnet56] [--threads 1]

One SGD step (forward, cross entropy, backward, update) at batch 128 on 32x32 inputs, timed in
rounds that cycle through the four settings, so every setting sees the same machine load; the
figures are medians over the rounds. Each setting's throughput is also given as images per second
and as a fraction of this machine's peak for its precision (a 2048x2048 matmul in fp32 or bf16,
warm median, timed between the same rounds), counting a training step as 3x the forward MACs (the
backward pass costs about twice the forward), so one sees whether the loop or the data is the cost. bf16 keeps fp32 weights and optimizer state (autocast); its
speed comes from oneDNN's bf16 kernels, so it depends on the CPU (AVX-512 BF16 or AMX).
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from benchmarks.common import add_device_arg, command_line, md_table, write_result
from torchslim.models import create_model

SETTINGS = [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)]


def cpu_flags() -> str:
    try:
        flags = open("/proc/cpuinfo").read().split("flags")[1].split("\n")[0]
    except (OSError, IndexError):
        return platform.processor()
    return " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in flags)


def gemm_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 7) -> float:
    """FLOP/s of a square matmul in `dtype`, warm median (oneDNN/MKL's best case on this CPU)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b  # warm-up: kernel selection, page faults
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / statistics.median(times)


def step_times(name: str, rounds: int, batch: int) -> dict[str, float]:
    torch.manual_seed(0)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    runs = {}
    for precision, nhwc in SETTINGS:
        m = create_model(name).train()
        fmt = torch.channels_last if nhwc else torch.contiguous_format
        m = m.to(memory_format=fmt)
        runs[(precision, nhwc)] = (m, torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9),
                                   x.contiguous(memory_format=fmt))
    times = {k: [] for k in runs}
    for r in range(rounds + 1):  # round 0 warms up (oneDNN primitive creation)
        for (precision, nhwc), (m, opt, xx) in runs.items():
            t = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = F.cross_entropy(m(xx), y)
            opt.zero_grad()
            loss.float().backward()
            opt.step()
            if r:
                times[(precision, nhwc)].append(time.perf_counter() - t)
    return {f"{p}{' channels_last' if c else ''}": statistics.median(v) for (p, c), v in times.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_device_arg(ap)
    ap.add_argument("--quick", action="store_true", help="3 rounds, ResNet-20")
    ap.add_argument("--models", nargs="*")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = args.models or (["resnet20"] if args.quick else ["vgg16_cifar", "resnet56"])
    rounds = 3 if args.quick else args.rounds
    rows = []
    from torchslim.analysis import profile

    peaks = {"fp32": gemm_peak(torch.float32), "bf16": gemm_peak(torch.bfloat16)}
    for name in names:
        t = step_times(name, rounds, batch=128)
        peaks = {k: max(v, gemm_peak(torch.float32 if k == "fp32" else torch.bfloat16)) for k, v in peaks.items()}
        base = t["fp32"]
        flops = 3 * 2 * profile(create_model(name), (3, 32, 32)).macs * 128  # forward + backward, one batch
        rows.append({"model": name, **{k: v for k, v in t.items()},
                     **{f"speedup {k}": base / v for k, v in t.items() if k != "fp32"},
                     **{f"images/s {k}": 128 / v for k, v in t.items()},
                     **{f"peak fraction {k}": min(1.0, flops / v / peaks[k.split()[0]]) for k, v in t.items()}})
        print(rows[-1], flush=True)
    res = {"quick": args.quick, "command": command_line(), "threads": args.threads, "rounds": rounds,
           "cpu": cpu_flags(), "torch": torch.__version__, "peak_gflops": {k: v / 1e9 for k, v in peaks.items()},
           "rows": rows}
    keys = [f"{p}{' channels_last' if c else ''}" for p, c in SETTINGS]
    md = ["## Training step time by precision and layout (`benchmarks/bench_train_precision.py`)", ""]
    if args.quick:
        md += ["_Quick mode: ResNet-20, 3 rounds; not the reference figures._", ""]
    md += [f"Command: `{res['command']}`. One SGD step at batch 128 (32x32), {args.threads} thread(s), median of "
           f"{rounds} rounds that cycle through the settings; CPU flags: {res['cpu'] or 'unknown'}; torch "
           f"{torch.__version__}. Seconds per step, and the speedup over fp32 NCHW:", "",
           md_table(["model"] + keys + [f"speedup {k}" for k in keys[1:]],
                    [[r["model"]] + [f"{r[k]:.3f}" for k in keys] + [f"{r['speedup ' + k]:.2f}x" for k in keys[1:]]
                     for r in rows]), "",
           f"Throughput, images per second (and fraction of the measured matmul peak: fp32 "
           f"{peaks['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s):", "",
           md_table(["model"] + keys,
                    [[r["model"]] + [f"{r['images/s ' + k]:.0f} ({100 * r['peak fraction ' + k]:.0f} %)" for k in keys]
                     for r in rows]), ""]
    write_result("train_precision" + ("-quick" if args.quick else ""), res, "\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Training step time: fp32 against bf16 autocast, NCHW against channels_last (FitConfig.precision / channels_last).

    python -m benchmarks.bench_train_precision [--quick] [--models vgg16_cifar resnet56] [--threads 1]

One SGD step (forward, cross entropy, backward, update) at batch 128 on 32x32 inputs, timed in
rounds that cycle through the four settings, so every setting sees the same machine load; the
figures are medians over the rounds. bf16 keeps fp32 weights and optimizer state (autocast); its
speed comes from oneDNN's bf16 kernels, so it depends on the CPU (AVX-512 BF16 or AMX).
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from benchmarks.common import command_line, md_table, write_result
from torchslim.models import create_model

SETTINGS = [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)]


def cpu_flags() -> str:
    try:
        flags = open("/proc/cpuinfo").read().split("flags")[1].split("\n")[0]
    except (OSError, IndexError):
        return platform.processor()
    return " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in flags)


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
    ap.add_argument("--quick", action="store_true", help="3 rounds, ResNet-20")
    ap.add_argument("--models", nargs="*")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = args.models or (["resnet20"] if args.quick else ["vgg16_cifar", "resnet56"])
    rounds = 3 if args.quick else args.rounds
    rows = []
    for name in names:
        t = step_times(name, rounds, batch=128)
        base = t["fp32"]
        rows.append({"model": name, **{k: v for k, v in t.items()},
                     **{f"speedup {k}": base / v for k, v in t.items() if k != "fp32"}})
        print(rows[-1], flush=True)
    res = {"quick": args.quick, "command": command_line(), "threads": args.threads, "rounds": rounds,
           "cpu": cpu_flags(), "torch": torch.__version__, "rows": rows}
    keys = [f"{p}{' channels_last' if c else ''}" for p, c in SETTINGS]
    md = ["## Training step time by precision and layout (`benchmarks/bench_train_precision.py`)", ""]
    if args.quick:
        md += ["_Quick mode: ResNet-20, 3 rounds; not the reference figures._", ""]
    md += [f"Command: `{res['command']}`. One SGD step at batch 128 (32x32), {args.threads} thread(s), median of "
           f"{rounds} rounds that cycle through the settings; CPU flags: {res['cpu'] or 'unknown'}; torch "
           f"{torch.__version__}. Seconds per step, and the speedup over fp32 NCHW:", "",
           md_table(["model"] + keys + [f"speedup {k}" for k in keys[1:]],
                    [[r["model"]] + [f"{r[k]:.3f}" for k in keys] + [f"{r['speedup ' + k]:.2f}x" for k in keys[1:]]
                     for r in rows]), ""]
    write_result("train_precision" + ("-quick" if args.quick else ""), res, "\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""int8 two ways: ONNX Runtime (the deployment runtime) vs PyTorch 2 (PT2E + torch.compile).

    python -m benchmarks.bench_quant_pt2e [--quick] [--model resnet20]

Pretrained CIFAR ResNet-20 (akamaster weights, no fine-tuning). Both int8 models are calibrated on the same
256 training images: `int8-ptq` with its ONNX Runtime QDQ path (uint8 activations, per-channel int8
weights, MSE observer), and `int8-pt2e` (torchao's X86InductorQuantizer, its own min/max observers).
Top-1 on the whole CIFAR-10 test set (10,000 images; PT2E's eager program: the reference numerics of
what Inductor compiles). Latency: batch 1, one thread, all variants called in turn (round-robin),
medians of wall time and of the calling thread's CPU time (steadier on this shared machine). The
compiled variants use Inductor with freezing (weights pre-packed, dq -> conv -> q fused into int8
oneDNN kernels); their compile time is reported.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import torch

from benchmarks.common import RESULTS, command_line, md_table, write_result


def time_round_robin(fns: dict, x: torch.Tensor, rounds: int) -> dict:
    with torch.inference_mode():
        for f in fns.values():
            for _ in range(5):
                f(x)
        wall, cpu = {k: [] for k in fns}, {k: [] for k in fns}
        for _ in range(rounds):
            for k, f in fns.items():
                c, t = time.thread_time(), time.perf_counter()
                f(x)
                wall[k].append((time.perf_counter() - t) * 1e3)
                cpu[k].append((time.thread_time() - c) * 1e3)
    return {k: {"wall_ms": round(statistics.median(wall[k]), 3), "cpu_ms": round(statistics.median(cpu[k]), 3)}
            for k in fns}


def render(r: dict) -> str:
    lat, top1 = r["latency"], r["top1"]
    base = lat["fp32 (torch eager)"]["cpu_ms"]
    rows = [[name, top1.get(name, top1["fp32 (torch eager)"] if name.startswith("fp32") else "not measured"),
             t["wall_ms"], t["cpu_ms"], round(base / t["cpu_ms"], 2), r["compile_s"].get(name, "")]
            for name, t in lat.items()]
    table = md_table(["variant", f"top-1 % ({r['test_images']} test images)", "wall ms (median)", "CPU ms (median)",
                      "speed-up vs fp32 eager (CPU time)", "compile s"], rows)
    ms = {k: v["cpu_ms"] for k, v in lat.items()}
    m = r["machine"]
    return f"""## int8: ONNX Runtime vs PyTorch 2 (PT2E + torch.compile)

`{r['command']}` — pretrained CIFAR {r['model']}; both int8 models calibrated on the same 256 training
images; batch 1, one thread, {len(lat)} variants called in turn for {r['rounds']} rounds, medians (CPU time of the
calling thread is the steadier figure on this shared 2-core machine, load average {r['load_average']} at
the end); compiled variants: Inductor with freezing. CPU: {m['cpu']}; torch {m['torch']}, ONNX Runtime
{m.get('onnxruntime')}. Budget: no training, {r['wall_s']:.0f} s wall time in all. fp32 rows share the fp32
model's top-1; the compiled int8 program is compiled for batch 1 only, so its top-1 is that of the same
program run eagerly (the reference numerics of the fused kernels).

{table}

int8 keeps top-1 within {top1['fp32 (torch eager)'] - min(v for k, v in top1.items() if k.startswith('int8')):.2f}
points on both paths. At batch 1 on this CPU the compiled PT2E program takes
{ms['int8 PT2E, torch.compile']:.2f} ms against {ms['fp32, torch.compile']:.2f} ms for compiled fp32 and
{ms['int8 ONNX Runtime (ort-qdq)']:.2f} ms for ONNX Runtime int8: ONNX Runtime stays the deployment runtime;
the PT2E program is the PyTorch-native artefact (`torch.export`, `torch.compile`).
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--quick", action="store_true", help="1,000 test images, 50 rounds")
    ap.add_argument("--render", action="store_true", help="rewrite results/quant_pt2e.md from its .json")
    args = ap.parse_args(argv)
    if args.render:
        r = json.loads((RESULTS / "quant_pt2e.json").read_text())
        write_result("quant_pt2e", r, render(r))
        return 0
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    from torchslim.analysis.latency import machine_info, onnx_session
    from torchslim.data import get_data
    from torchslim.models import create_model
    from torchslim.onnx_export import to_onnx
    from torchslim.quant import quantize
    from torchslim.train import evaluate

    images, rounds = (1000, 50) if args.quick else (None, 300)
    data = get_data("cifar10", batch_size=250, augment=False, limit_eval=images)
    fp32 = create_model(args.model, pretrained=True).eval()
    ort = quantize(fp32, "int8-ptq", calib=data, paths=("ort-qdq",), path="ort-qdq", calib_images=256,
                   threads=1, repeats=3, min_time_s=0.0)
    pt2e = quantize(fp32, "int8-pt2e", calib=data, calib_images=256)
    n_test = len(data.test.dataset)
    top1 = {name: evaluate(m, data.test)["top1"] for name, m in
            {"fp32 (torch eager)": fp32, "int8 ONNX Runtime (ort-qdq)": ort, "int8 PT2E (eager program)": pt2e}.items()}
    x = torch.randn(1, 3, 32, 32)
    compile_s = {}
    compiled = {}
    import torch._inductor.config as inductor_config

    with inductor_config.patch(freezing=True), torch.no_grad():
        for name, m in {"int8 PT2E, torch.compile": pt2e, "fp32, torch.compile": fp32}.items():
            t = time.perf_counter()
            c = torch.compile(m)
            c(x)
            compile_s[name] = round(time.perf_counter() - t, 1)
            compiled[name] = c
        with tempfile.TemporaryDirectory() as tmp:
            sess = onnx_session(str(to_onnx(fp32, x, os.path.join(tmp, "fp32.onnx"))), threads=1)
            feed_name = sess.get_inputs()[0].name
            fns = {"fp32 (torch eager)": fp32,
                   "fp32 ONNX Runtime": lambda t: sess.run(None, {feed_name: t.numpy()}),
                   "int8 ONNX Runtime (ort-qdq)": ort,
                   "int8 PT2E (eager program)": pt2e, **compiled}
            lat = time_round_robin(fns, x, rounds)
    wall = time.perf_counter() - t0
    result = {"command": command_line(), "model": args.model, "test_images": n_test, "rounds": rounds,
              "machine": machine_info(1, with_peak=False), "top1": top1, "latency": lat, "compile_s": compile_s,
              "wall_s": round(wall, 1), "load_average": round(os.getloadavg()[0], 1)}
    md = render(result)
    write_result("quant_pt2e-quick" if args.quick else "quant_pt2e", result, md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

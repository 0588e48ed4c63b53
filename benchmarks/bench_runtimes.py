"""fp32 / bf16 / int8 latency on PyTorch, ONNX Runtime and OpenVINO, with NNCF's PTQ + OpenVINO as the
int8 reference arm; top-1 of every arm on the full CIFAR-10 test set for ResNet-56.

    python -m benchmarks.bench_runtimes            # ResNet-56 (pretrained) + torchvision ResNet-18/50, MobileNetV2
    python -m benchmarks.bench_runtimes --quick    # ResNet-56 on 1,000 test images, ResNet-18 only

Batch 1, one thread in every runtime. Latency: each arm's calls alternate with the other arms' (every
round calls each arm once, in a rotating order), then each arm runs a block of consecutive calls; both
medians are reported. The torchvision models have random weights (latency only, 224x224). "torchslim
int8" is the default `torchslim.quantize(model, "int8-ptq")` (quick mode: one calibration with the MSE
observer on 256 training images, one QDQ model), executed in ONNX Runtime and in OpenVINO;
"NNCF int8" is `nncf.quantize` on the OpenVINO model (its defaults: 300 calibration images, fast bias
correction). The machine is shared: its load average is stated; compare ratios within one model.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import command_line, md_table, write_result

GOAL_SPEED, GOAL_DROP, GOAL_CALIB_S = 1.05, 0.3, 15.0
# top-1 is measured for the arms whose arithmetic differs: ONNX Runtime's and OpenVINO's fp32 compute the
# PyTorch fp32 logits to ~1e-6 relative error (the quant report's rel_l2_error), so they are left out
# unless --top1-all (on 2 shared cores, each full-test-set pass costs minutes)
TOP1_ARMS = ("PyTorch fp32", "OpenVINO bf16", "ONNX Runtime int8 (torchslim QDQ)", "OpenVINO int8 (torchslim QDQ)",
             "OpenVINO int8 + bf16 (torchslim QDQ)", "OpenVINO int8 (torchslim ov-nncf path)",
             "OpenVINO int8 (NNCF PTQ, reference)",
             "PyTorch int8 (torchslim torch-x86)")


# ---------------------------------------------------------------- the arms
def ov_request(source, precision, shape):
    from torchslim.openvino_export import compile_openvino

    return compile_openvino(source, threads=1, precision=precision, input_shape=shape).create_infer_request()


def ov_fn(request):
    return lambda x: request.infer({0: x}, share_inputs=True)[0]


def ort_fn(source):
    from torchslim.onnx_runtime import onnx_session

    sess = onnx_session(source, threads=1)
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})[0]


def torch_fn(model, dtype=torch.float32):
    fmt = torch.channels_last if dtype == torch.bfloat16 else torch.contiguous_format  # oneDNN's bf16 layout

    def run(x):
        with torch.inference_mode():
            return model(torch.from_numpy(x).to(dtype).contiguous(memory_format=fmt)).float().numpy()
    return run


def nncf_quantize(model, calib_images: list[np.ndarray], x1: torch.Tensor):
    """NNCF's own PTQ on the OpenVINO model (converted from PyTorch as NNCF's docs do); (model, seconds)."""
    import nncf
    import openvino as ov

    nncf.set_log_level(40)
    t = time.perf_counter()
    c = time.process_time()
    ov_model = ov.convert_model(copy.deepcopy(model).eval(), example_input=x1)
    q = nncf.quantize(ov_model, nncf.Dataset(calib_images), subset_size=len(calib_images))
    return q, time.perf_counter() - t, time.process_time() - c


def build_arms(model, calib: list[torch.Tensor], x: np.ndarray, tmp: Path, *, nncf_images: int) -> tuple[dict, dict]:
    """{arm name: (runtime, precision, kind, make(shape) -> fn(x) -> logits)} and the quantization figures."""
    from torchslim.analysis.latency import torch_threads
    from torchslim.onnx_export import to_onnx
    from torchslim.quant import Int8Config, quantize
    from torchslim.quant.int8_ptq import torch_x86_int8
    from torchslim.runtimes import has_bf16

    fp32_onnx = str(to_onnx(model, torch.from_numpy(x), tmp / "fp32.onnx"))
    info: dict = {}
    t, c = time.perf_counter(), time.process_time()
    with torch_threads(1):
        q = quantize(model, "int8-ptq", calib=calib, config=Int8Config(threads=1))
    info["torchslim"] = {"seconds": time.perf_counter() - t, "cpu_seconds": time.process_time() - c,
                         "chosen": q.quant_report["chosen"], "calib_images": q.quant_report["calib_images"],
                         "phases": q.quant_report.get("seconds", {}),
                         "paths": {k: {kk: v for kk, v in r.items() if kk in ("median_ms", "rel_l2_error", "correct")}
                                   for k, r in q.quant_report["paths"].items()}}
    qdq = q.onnx_bytes()
    t, c = time.perf_counter(), time.process_time()
    with torch_threads(1):  # the ov-nncf path: NNCF's PTQ inside torchslim.quantize, same calibration images
        qn = quantize(model, "int8-ptq", calib=calib, config=Int8Config(threads=1, path="ov-nncf"))
    info["torchslim_ov_nncf"] = {"seconds": time.perf_counter() - t, "cpu_seconds": time.process_time() - c}
    nncf_qdq = qn.onnx_bytes()
    t = time.perf_counter()
    with torch_threads(1):
        tx86 = torch_x86_int8(model, calib, "mse")
    info["torch_x86_seconds"] = time.perf_counter() - t
    imgs = [b[i:i + 1].numpy() for b in calib for i in range(len(b))]
    imgs = (imgs * (nncf_images // max(len(imgs), 1) + 1))[:nncf_images]
    nq, secs, cpu = nncf_quantize(model, imgs, torch.from_numpy(x))
    info["nncf"] = {"seconds": secs, "cpu_seconds": cpu, "calib_images": len(imgs)}
    bf16 = has_bf16()
    m = copy.deepcopy(model).eval()
    mb = copy.deepcopy(model).eval().to(torch.bfloat16).to(memory_format=torch.channels_last)
    arms = {
        "PyTorch fp32": ("torch", "fp32", "fp32", lambda s: torch_fn(m)),
        "PyTorch bf16": ("torch", "bf16", "bf16", lambda s: torch_fn(mb, torch.bfloat16)),
        "PyTorch int8 (torchslim torch-x86)": ("torch", "int8", "torchslim int8", lambda s: torch_fn(tx86)),
        "ONNX Runtime fp32": ("onnxruntime", "fp32", "fp32", lambda s: ort_fn(fp32_onnx)),
        "ONNX Runtime int8 (torchslim QDQ)": ("onnxruntime", "int8", "torchslim int8", lambda s: ort_fn(qdq)),
        "OpenVINO fp32": ("openvino", "fp32", "fp32", lambda s: ov_fn(ov_request(fp32_onnx, "fp32", s))),
        "OpenVINO bf16": ("openvino", "bf16", "bf16", lambda s: ov_fn(ov_request(fp32_onnx, "bf16", s))),
        "OpenVINO int8 (torchslim QDQ)": ("openvino", "int8", "torchslim int8", lambda s: ov_fn(ov_request(qdq, "fp32", s))),
        "OpenVINO int8 + bf16 (torchslim QDQ)": ("openvino", "int8+bf16", "torchslim int8",
                                                 lambda s: ov_fn(ov_request(qdq, "bf16", s))),
        "OpenVINO int8 (torchslim ov-nncf path)": ("openvino", "int8", "torchslim int8",
                                                   lambda s: ov_fn(ov_request(nncf_qdq, "fp32", s))),
        "OpenVINO int8 (NNCF PTQ, reference)": ("openvino", "int8", "NNCF int8", lambda s: ov_fn(_nncf(nq, "fp32", s))),
        "OpenVINO int8 + bf16 (NNCF PTQ, reference)": ("openvino", "int8+bf16", "NNCF int8",
                                                       lambda s: ov_fn(_nncf(nq, "bf16", s))),
    }
    if not bf16:  # no bf16 units: those arms would be fp32 again (torchslim.runtimes.resolve_precision)
        arms = {k: v for k, v in arms.items() if "bf16" not in v[1]}
    return arms, info


def _nncf(ov_model, precision, shape):
    from torchslim.openvino_export import openvino_config, openvino_core

    m = ov_model.clone()
    m.reshape(list(shape))
    return openvino_core().compile_model(m, "CPU", openvino_config(1, precision)).create_infer_request()


# ---------------------------------------------------------------- timing
def time_arms(fns: dict, x: np.ndarray, budget_s: float) -> dict:
    """Alternating rounds, then consecutive blocks, within about `budget_s`; medians in ms per arm."""
    for f in fns.values():  # warm-up, and one call each to size the rounds
        f(x)
    one = {}
    for k, f in fns.items():
        t = time.perf_counter()
        f(x)
        one[k] = time.perf_counter() - t
    per_round = sum(one.values())
    rounds = int(min(300, max(10, budget_s / 2 / per_round)))
    alt = {k: [] for k in fns}
    names = list(fns)
    for r in range(rounds):
        for k in names[r % len(names):] + names[: r % len(names)]:
            t = time.perf_counter()
            fns[k](x)
            alt[k].append((time.perf_counter() - t) * 1e3)
    block = {}
    for k, f in fns.items():
        ts = []
        for _ in range(rounds):
            t = time.perf_counter()
            f(x)
            ts.append((time.perf_counter() - t) * 1e3)
        block[k] = ts
    return {k: {"alternating_ms": statistics.median(alt[k]), "block_ms": statistics.median(block[k]),
                "alternating_p10_ms": float(np.percentile(alt[k], 10)),
                "alternating_p90_ms": float(np.percentile(alt[k], 90)), "calls": rounds} for k in fns}


def top1(fn, loader) -> float:
    right = n = 0
    for xb, yb in loader:
        right += int((fn(xb.numpy()).argmax(1) == yb.numpy()).sum())
        n += len(yb)
    return 100.0 * right / n


# ---------------------------------------------------------------- main
def rewrite_markdown(topic: str = "runtimes") -> None:
    """Rebuild results/<topic>.md from its .json (the tables' layout changed, the measurements did not)."""
    import json

    from benchmarks.common import RESULTS

    res = json.loads((RESULTS / f"{topic}.json").read_text())
    write_result(topic, res, markdown(res))


def main(argv=None) -> int:
    from torchslim.analysis.latency import machine_info
    from torchslim.data import get_data
    from torchslim.models import create_model
    from torchslim.quant.int8_ptq import calibration_batches
    from torchslim.runtimes import cpu_features

    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--models", nargs="*")
    p.add_argument("--eval-images", type=int, help="ResNet-56 test images (default all 10,000; --quick 1,000)")
    p.add_argument("--budget-s", type=float, default=40.0, help="latency timing budget per model (seconds)")
    p.add_argument("--top1-all", action="store_true", help="top-1 of every arm, not only of TOP1_ARMS")
    args = p.parse_args(argv)
    models = args.models or (["resnet56", "torchvision:resnet18"] if args.quick else
                             ["resnet56", "torchvision:resnet18", "torchvision:resnet50", "torchvision:mobilenet_v2"])
    n_eval = args.eval_images or (1000 if args.quick else None)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    t_all = time.time()
    machine = machine_info(1, with_peak=False)
    machine["cpu_features"] = cpu_features()
    machine["load_average_start"] = os.getloadavg()
    res: dict = {"command": command_line(), "machine": machine, "models": {}}
    cifar = get_data("cifar10", batch_size=100, eval_batch_size=250, augment=False, limit_eval=n_eval)
    for name in models:
        t0 = time.time()
        tv = name.startswith("torchvision:")
        model = create_model(name, pretrained=not tv).eval()
        g = torch.Generator().manual_seed(0)
        if tv:
            calib = [torch.randn(8, 3, 224, 224, generator=g) for _ in range(4)]
            x = torch.randn(1, 3, 224, 224, generator=g).numpy()
        else:
            calib = calibration_batches(cifar.train, 256)
            x = calib[0][:1].numpy()
        with tempfile.TemporaryDirectory() as tmp:
            arms, info = build_arms(model, calib, x, Path(tmp), nncf_images=32 if tv else 300)
            print(name, "built in", round(time.time() - t0), "s", flush=True)
            lat = time_arms({k: make(x.shape) for k, (_, _, _, make) in arms.items()}, x,
                            args.budget_s / (2 if args.quick else 1))
            row = {k: {"runtime": rt, "precision": prec, "kind": kind, **lat[k]}
                   for k, (rt, prec, kind, _) in arms.items()}
            if not tv:
                shape = (cifar.test.batch_size, *x.shape[1:])
                for k, (_, _, _, make) in arms.items():
                    if k not in TOP1_ARMS and not args.top1_all:
                        continue
                    fn = make(shape)
                    row[k]["top1"] = top1(fn, cifar.test)
                    print(" ", k, f"{row[k]['top1']:.2f}", flush=True)
        info["seconds"] = time.time() - t0
        res["models"][name] = {"arms": row, "quantization": info,
                               "source": "random init, 224x224, latency only" if tv else
                               f"pretrained checkpoint, top-1 on {len(cifar.test.dataset)} CIFAR-10 test images"}
        print(name, {k: round(v["alternating_ms"], 3) for k, v in row.items()}, flush=True)
    machine["load_average_end"] = os.getloadavg()
    res["seconds"] = time.time() - t_all
    write_result("runtimes" + ("-quick" if args.quick else ""), res, markdown(res))
    print("total", round(res["seconds"]), "s")
    return 0


def goal(model_res: dict) -> dict:
    """torchslim's best int8 arm vs NNCF's best, and the accuracy/calibration limits of the goal."""
    arms = model_res["arms"]
    ours = min((k for k, a in arms.items() if a["kind"] == "torchslim int8"), key=lambda k: arms[k]["alternating_ms"])
    ref = min((k for k, a in arms.items() if a["kind"] == "NNCF int8"), key=lambda k: arms[k]["alternating_ms"])
    out = {"torchslim": ours, "nncf": ref, "ratio": arms[ours]["alternating_ms"] / arms[ref]["alternating_ms"],
           "block_ratio": arms[ours]["block_ms"] / arms[ref]["block_ms"],
           "calib_s": model_res["quantization"]["torchslim"]["seconds"],
           "calib_cpu_s": model_res["quantization"]["torchslim"]["cpu_seconds"],
           "nncf_cpu_s": model_res["quantization"]["nncf"]["cpu_seconds"]}
    out["calibrate_s"] = model_res["quantization"]["torchslim"].get("phases", {}).get("calibrate")
    if "top1" in arms[ours]:
        out["drop"] = arms["PyTorch fp32"]["top1"] - arms[ours]["top1"]
    misses = [why for why, miss in (
        (f"{out['ratio']:.3f}x slower (alternating)", out["ratio"] > GOAL_SPEED),
        (f"{out['block_ratio']:.3f}x slower (block)", out["block_ratio"] > GOAL_SPEED),
        (f"{out.get('drop', 0):.2f} pt drop", out.get("drop", 0) > GOAL_DROP),
        (f"quantize {out['calib_s']:.0f} s > {GOAL_CALIB_S:.0f} s", out["calib_s"] > GOAL_CALIB_S)) if miss]
    out["verdict"] = "met" if not misses else "missed: " + "; ".join(misses)
    return out


def markdown(res: dict) -> str:
    m = res["machine"]
    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in m["cpu_features"].items())
    md = ["## Runtimes: fp32, bf16 and int8 on PyTorch, ONNX Runtime and OpenVINO (`benchmarks/bench_runtimes.py`)", "",
          f"Command: `{res['command']}` ({res['seconds'] / 60:.1f} min wall)", "",
          f"CPU: {m['cpu']}, {m['cores']} cores; flags: {flags}. torch {m['torch']}, onnxruntime "
          f"{m.get('onnxruntime')}, openvino {m.get('openvino')}. Load average (1/5/15 min) at start "
          f"{'/'.join(f'{v:.1f}' for v in m['load_average_start'])}, at end "
          f"{'/'.join(f'{v:.1f}' for v in m['load_average_end'])}: the machine is shared, so absolute "
          "times are inflated; compare arms of one model, which were timed interleaved.", "",
          "Batch 1, one thread in every runtime (OpenVINO: latency hint, one stream, CPU pinning off, "
          "`torchslim.openvino_export.openvino_config`); 'alt.' = median of calls alternating between all arms "
          "(rotating order), 'block' = median of consecutive calls of one arm. 'torchslim int8' = the "
          "default `torchslim.quantize(model, \"int8-ptq\")` (MSE observer, 256 calibration images, one QDQ "
          "model) run in each runtime; 'NNCF' = `nncf.quantize` of the OpenVINO model (300 calibration "
          "images; 32 random images for the 224x224 models). 'int8 + bf16': the int8 model with "
          "OpenVINO's inference precision bf16 for what stays float.", ""]
    goals = []
    for name, r in res["models"].items():
        arms = r["arms"]
        base = arms["ONNX Runtime fp32"]["alternating_ms"]
        q = r["quantization"]
        md += [f"### {name} ({r['source']})", "",
               f"torchslim int8: {q['torchslim']['seconds']:.1f} s wall ({q['torchslim']['cpu_seconds']:.1f} s CPU) "
               f"for calibration, QDQ export and choosing its runtime (chose `{q['torchslim']['chosen']}`); "
               f"NNCF: {q['nncf']['seconds']:.1f} s wall ({q['nncf']['cpu_seconds']:.1f} s CPU) for conversion "
               f"and quantization.", ""]
        header = ["arm", "runtime", "precision", "alt. ms", "block ms", "vs ONNX Runtime fp32"]
        has_top1 = any("top1" in a for a in arms.values())
        if has_top1:
            header.append("top-1 %")
        rows = []
        for k, a in arms.items():
            row = [k, a["runtime"], a["precision"], f"{a['alternating_ms']:.3f}", f"{a['block_ms']:.3f}",
                   f"{base / a['alternating_ms']:.2f}x"]
            if has_top1:
                row.append(f"{a['top1']:.2f}" if "top1" in a else "(= fp32)" if a["precision"] == "fp32" else "-")
            rows.append(row)
        md += [md_table(header, rows), ""]
        g = goal(r)
        goals.append([name, g["torchslim"], g["nncf"], f"{g['ratio']:.3f}", f"{g['block_ratio']:.3f}",
                      f"{g['drop']:+.2f}" if "drop" in g else "-", f"{g['calib_s']:.1f}",
                      f"{g['calibrate_s']:.1f}" if g.get("calibrate_s") is not None else "-", f"{g['calib_cpu_s']:.1f}",
                      f"{g['nncf_cpu_s']:.1f}", g["verdict"]])
    md += ["### Goal: torchslim's best int8 vs NNCF + OpenVINO", "",
           f"Goal: time ratio <= {GOAL_SPEED} (alternating medians), top-1 drop <= {GOAL_DROP} pt on ResNet-56 "
           f"(full test set), calibration <= {GOAL_CALIB_S:.0f} s. The quantize times include exporting, "
           "calibrating, building the QDQ model and timing it in ONNX Runtime and OpenVINO (the goal is judged on "
           "this whole time; 'of which calibration' is the two passes over the calibration images that set the "
           "ranges, from the quant report's `seconds`); wall seconds are "
           "stretched by the machine's load (several processes per core), CPU seconds are this process's own.", "",
           md_table(["model", "torchslim's fastest int8 arm", "NNCF's fastest arm", "time ratio (alt.)",
                     "time ratio (block)", "top-1 drop vs fp32", "torchslim quantize s (wall)",
                     "of which calibration s", "torchslim quantize CPU s", "NNCF CPU s", "goal"], goals), ""]
    return "\n".join(md)


if __name__ == "__main__":
    raise SystemExit(main())

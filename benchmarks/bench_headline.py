"""The headline table: each row a shipped recipe run end to end, beside the paper or tool it answers.

    python -m benchmarks.bench_headline [--rows r56-int8 lenet5-dc ...] [--runs-dir runs/headline]
                                        [--device cpu|cuda] [--assemble]

Each row runs `torchslim compress recipes/<recipe>.yaml -o <runs-dir>/<id>` (resumable: a killed run
goes on where it stopped), then measures, from the run folder:
- top-1 of the compressed model on the full 10,000-image test set (the papers' protocol) and on the
  held-out half of it that no decision saw (cifar10's `val` is the other half; MNIST models are
  trained here, so their val split is carved from train and the held-out set is the test set);
- MACs, parameters and file size (the coded .slim file where the recipe writes one) against the
  row's baseline: the shipped checkpoint, or the recipe's own `train` stage where no checkpoint ships;
- ONNX Runtime latency at batch 1 and 32, one thread, the baseline and the compressed model timed
  alternately in one run (`torchslim.analysis.latency_side_by_side`);
- the budget: fine-tuning epochs and wall-clock core-minutes of the run.
Rows whose recipe has not run are listed as such, with no figures. `--assemble` only rebuilds the
table from results/headline.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import RESULTS, add_device_arg, command_line, md_table, write_result
from torchslim.analysis import latency_side_by_side, profile
from torchslim.analysis.latency import machine_info
from torchslim.data import get_data
from torchslim.io import load_model, save_model
from torchslim.paths import RECIPES_DIR
from torchslim.recipe import load_recipe, run_recipe
from torchslim.recipe.runner import INPUT_STAGE
from torchslim.train import evaluate

# id: (recipe, model, method, anchor: the figure of the paper or tool it answers, goal)
ROWS = {
    "r56-prune-2x": ("headline_r56_prune_2x", "ResNet-56", "filter pruning to <= 0.5x MACs",
                     "Torch-Pruning's CIFAR benchmark, 2.12x: L1 93.53 -> 92.93, BN-scale -> 93.29, 100 GPU epochs",
                     "<= 0.3 pt drop from 93.39 with <= 15 epochs; ORT speedup >= 1.6x at batch 1"),
    "r56-prune-li": ("headline_r56_prune_li", "ResNet-56", "filter pruning, Li et al. setting (-27.6 % FLOPs)",
                     "Li et al. 2017: 93.04 -> 93.06, 40 epochs", "no drop (>= 93.3) with <= 5 epochs"),
    "r56-int8": ("headline_r56_int8", "ResNet-56", "int8 PTQ",
                 "Krishnamoorthi 2018: per-channel PTQ within 0.5 pt", "<= 0.3 pt drop; int8 ORT >= 2x faster than fp32 ORT"),
    "r56-tucker": ("headline_r56_tucker", "ResNet-56", "whole-network Tucker-2 at >= 2x fewer MACs",
                   "Kim et al. 2016: AlexNet -1.7 top-5 at 2.67x FLOPs", "<= 0.5 pt drop with <= 15 epochs"),
    "r56-dc": ("headline_r56_dc", "ResNet-56", "Deep Compression (prune + k-means + Huffman)",
               "Han et al. 2016: 35-49x on their nets, no loss", ">= 12x smaller file at <= 0.5 pt drop"),
    "r56-auto": (None, "ResNet-56", "`torchslim auto` to latency 0.4x on the fastest runtime",
                 "none of the peers reaches a measured latency target",
                 "measured >= 2.5x at <= 0.5 pt drop (held-out half)"),
    "lenet300-dc": ("headline_lenet300_dc", "LeNet-300-100", "Deep Compression (prune + k-means + Huffman)",
                    "Han et al. 2016: 40x, no loss", ">= 40x at <= 0.1 pt drop"),
    "lenet5-dc": ("headline_lenet5_dc", "LeNet-5", "Deep Compression (prune + k-means + Huffman)",
                  "Han et al. 2016: 39x, no loss", ">= 39x at <= 0.1 pt drop"),
    "lenet5-dns": ("headline_lenet5_dns", "LeNet-5", "Dynamic Network Surgery",
                   "Guo et al. 2016: 108x fewer parameters, no loss", ">= 100x at <= 0.1 pt drop"),
}
# The goals as numbers, checked on the measured row (top-1 drop on the full test set, in points).
CHECKS = {
    "r56-prune-2x": dict(max_drop=0.3, max_macs_ratio=0.5, max_epochs=15, min_speedup_bs1=1.6),
    "r56-prune-li": dict(min_top1=93.3, max_macs_ratio=0.724, max_epochs=5),
    "r56-int8": dict(max_drop=0.3, min_speedup_bs1=2.0),
    "r56-tucker": dict(max_drop=0.5, max_macs_ratio=0.5, max_epochs=15),
    "r56-dc": dict(max_drop=0.5, min_file=12),
    "r56-auto": dict(max_drop_heldout=0.5, min_speedup_runtime_bs1=2.5),
    "lenet300-dc": dict(max_drop=0.1, min_file=40),
    "lenet5-dc": dict(max_drop=0.1, min_file=39),
    "lenet5-dns": dict(max_drop=0.1, min_params=100),
}
# Why a goal was missed, where the run says more than the numbers (keyed by row id).
WHY = {
    "r56-auto": "the search chose int8 alone (0.36x when measured alone, no loss) as the most accurate point "
                "predicted to reach 0.4x; timed alternately with the original it is 2.3x in OpenVINO at batch 1. "
                "The run before the fewest-actions rule chose int8 + 18 prune actions: 0.31x measured, but 1.0 point "
                "of validation accuracy lost after its one fine-tuning epoch",
    "r56-prune-2x": "6 fine-tuning epochs where the issue allows 15 (the CPU one session held beside the other rows): "
                    "80.2 % after pruning and reconstruction, validation top-1 rising every epoch (84.3, 86.9, 90.6, "
                    "91.3, 91.9, 92.0) as the cosine schedule ends; Torch-Pruning's figures come from 100 GPU epochs",
    "r56-tucker": "4 fine-tuning epochs where the issue allows 15: 28.8 % right after decomposing every 3x3 conv "
                  "2.5-fold, validation top-1 85.2, 89.2, 92.1, 92.1",
    "r56-dc": "3 epochs after one-shot 80 % magnitude pruning (28.8 % before recovery; validation 91.0, 92.4, 92.1) "
              "and 300 centroid steps, where Han et al. prune iteratively and retrain far longer",
    "r56-prune-li": "uniform L1 at 0.72x MACs is 87.92 % after pruning and reconstruction; 5 epochs of KD bring it to "
                    "92.6 with validation top-1 still rising every epoch (89.2, 90.4, 92.1, 92.7, 92.7 as the cosine "
                    "schedule ends); Li et al. retrain 40 epochs and leave their most sensitive layers unpruned",
    "lenet300-dc": "one-shot pruning to Han et al.'s per-layer densities with 12 retraining epochs (they prune "
                   "iteratively); the coded file is measured against the dense safetensors file",
    "lenet5-dns": "8 epochs of surgery and 2 with frozen masks at Guo et al.'s per-layer densities, trained inside "
                  "the sparsify stage (the epochs column counts recipe fine-tuning only); Guo et al. train far longer",
    "lenet5-dc": "the accuracy holds; the coded file is measured against the dense safetensors file and stays "
                 "short of the paper's ratio, which counts weights only",
}
# The auto row is a search, not a recipe: `torchslim auto` with these arguments writes the model and the
# recipe that reproduces its choice (copied to recipes/headline_r56_auto.yaml after a run).
AUTO_ARGS = {"r56-auto": ["resnet56", "--pretrained", "--data", "cifar10", "--target", "latency=0.4x",
                          "--max-drop", "0.5", "--actions", "prune,quant", "--calib-images", "512",
                          "--epochs", "1", "--precision", "bf16", "--channels-last"]}


def _baseline_stage(recipe) -> str:
    """The stage whose model is the row's starting point: a `train` stage if the recipe trains one."""
    names = recipe.stage_names()
    return next((n for n, s in zip(names, recipe.stages) if s.method == "finetune"), INPUT_STAGE)


def _file_bytes(stage_dir: Path) -> int:
    slim = sorted(stage_dir.glob("*.slim"))
    return (slim[0] if slim else stage_dir / "model.safetensors").stat().st_size


def _run_recipe_row(row_id: str, runs_dir: Path, device: str) -> dict:
    """Run (or resume) the row's recipe; the baseline and compressed model and the run's budget."""
    recipe = load_recipe(RECIPES_DIR / f"{ROWS[row_id][0]}.yaml").model_copy(update={"device": device})
    run_dir = runs_dir / row_id
    t0 = time.perf_counter()
    run_recipe(recipe, run_dir, progress=False, report=True, log=print)
    wall = time.perf_counter() - t0
    names = recipe.stage_names()
    base_name = _baseline_stage(recipe)
    base_dir, stage_dirs = run_dir / "stages" / base_name, [run_dir / "stages" / n for n in names]
    last = max((d for d in stage_dirs if d.name != base_name and not d.name.endswith("export")),
               key=lambda d: d.name)
    coded = next((d for d in stage_dirs if list(d.glob("*.slim"))), last)
    infos = [json.loads((d / "metrics.json").read_text()) for d in stage_dirs]
    return {"base": load_model(base_dir / "model.safetensors").eval(),
            "small": load_model(last / "model.safetensors").eval(),
            "data_name": recipe.data.name,
            "input_size": tuple(json.loads((base_dir / "metrics.json").read_text())["input_size"]),
            "file_ratio": _file_bytes(coded) / _file_bytes(base_dir),
            "epochs": sum(len(i.get("history", [])) for i in infos if i["stage"] != base_name),
            "core_minutes": round(sum(i.get("time_s", 0) for i in infos) / 60, 1), "wall_s": wall,
            "recipe": f"recipes/{ROWS[row_id][0]}.yaml", "baseline_stage": base_name, "runtime": "onnxruntime"}


def _run_auto_row(row_id: str, runs_dir: Path, device: str) -> dict:
    """Run `torchslim auto` once (a finished run folder is reused); the original and the model it chose."""
    from torchslim.models import create_model

    run_dir, argv = runs_dir / row_id, AUTO_ARGS[row_id]
    done = run_dir / "auto.json"
    t0 = time.perf_counter()
    if not done.is_file():
        cmd = [sys.executable, "-m", "torchslim.cli.main", "auto", *argv, "--device", device, "-o", str(run_dir)]
        print(" ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        (run_dir / "wall_s.json").write_text(json.dumps({"wall_s": time.perf_counter() - t0}))
    summary = json.loads(done.read_text())
    wall = json.loads((run_dir / "wall_s.json").read_text())["wall_s"]
    shipped = RECIPES_DIR / "headline_r56_auto.yaml"
    header = (f"# Headline row {row_id}: the choice of `torchslim auto {' '.join(argv)}` (written by\n"
              f"# benchmarks/bench_headline.py from {run_dir}/recipe.yaml). Rerunning the search: python -m\n"
              f"# benchmarks.bench_headline --rows {row_id}; this recipe applies its choice without searching.\n")
    written = (run_dir / "recipe.yaml").read_text()
    # a shipped recipe ends in an export stage checked against PyTorch (int8 kernels differ between runtimes)
    int8 = "method: quantize" in written
    shipped.write_text(header + written + "- method: export\n" + ("  params: {atol: 0.5, rtol: 0.1}\n" if int8 else ""))
    base = create_model(argv[0], pretrained=True).eval()
    small = load_model(run_dir / "model.safetensors").eval()
    with tempfile.TemporaryDirectory() as tmp:
        base_bytes = save_model(base, Path(tmp) / "base.safetensors").stat().st_size
    i = argv.index("--epochs")
    return {"base": base, "small": small, "data_name": argv[argv.index("--data") + 1], "input_size": (3, 32, 32),
            "file_ratio": (run_dir / "model.safetensors").stat().st_size / base_bytes,
            "epochs": int(argv[i + 1]), "core_minutes": round(wall / 60, 1), "wall_s": wall,
            "recipe": f"recipes/{shipped.name} (written by `torchslim auto {' '.join(argv)}`)",
            "baseline_stage": "pretrained", "runtime": summary.get("runtime", {}).get("name", "onnxruntime"),
            "auto": {k: summary[k] for k in ("target", "target_met", "verdict", "ratio", "chosen")}}


def measure_row(row_id: str, runs_dir: Path, device: str) -> dict:
    _, model_name, method, anchor, goal = ROWS[row_id]
    run = (_run_auto_row if row_id in AUTO_ARGS else _run_recipe_row)(row_id, runs_dir, device)
    base, small, size = run["base"], run["small"], run["input_size"]
    data = get_data(run["data_name"], augment=False)
    pb, ps = profile(base, size), profile(small, size)
    acc = {k: (evaluate(base, data.split(k))["top1"], evaluate(small, data.split(k))["top1"]) for k in ("test", "heldout")}
    lat = {}  # speedup per (runtime, batch): both models fp32 floats, timed alternately
    for runtime in ("onnxruntime", "openvino"):
        for bs in (1, 32):
            t = latency_side_by_side({"base": base, "small": small}, torch.randn(bs, *size), runtime=runtime,
                                     threads=1, rounds=7, calls=10 if bs == 1 else 2)
            lat[runtime, bs] = t["base"]["ms"] / t["small"]["ms"]
    return {
        "id": row_id, "model": model_name, "method": method, "recipe": run["recipe"],
        "anchor": anchor, "goal": goal, "baseline_top1": acc["test"][0], "baseline_top1_heldout": acc["heldout"][0],
        "top1_full_test": acc["test"][1], "top1_heldout": acc["heldout"][1],
        # an int8 model run by ONNX Runtime is one opaque layer to the profiler: no MACs, no parameters
        "macs_ratio": ps.macs / pb.macs if ps.macs else None,
        "params_ratio": ps.nonzero_params / pb.nonzero_params if ps.nonzero_params else None,
        "file_ratio": run["file_ratio"],
        "speedup_ort_bs1": lat["onnxruntime", 1], "speedup_ort_bs32": lat["onnxruntime", 32],
        "speedup_ov_bs1": lat["openvino", 1], "speedup_ov_bs32": lat["openvino", 32],
        "runtime": run["runtime"], "epochs": run["epochs"],
        "core_minutes": run["core_minutes"], "this_call_wall_s": round(run["wall_s"], 1),
        "baseline_stage": run["baseline_stage"], "protocol": data.protocol_note, "device": device,
        **({"auto": run["auto"]} if "auto" in run else {}),
    }


def verdict(r: dict) -> str:
    """'met', or 'missed: ...' naming each goal the measured row does not reach."""
    c, miss = CHECKS.get(r["id"], {}), []
    drop = r["baseline_top1"] - r["top1_full_test"]
    if "max_drop" in c and drop > c["max_drop"]:
        miss.append(f"drop {drop:.2f} > {c['max_drop']} pt")
    if "min_top1" in c and r["top1_full_test"] < c["min_top1"]:
        miss.append(f"top-1 {r['top1_full_test']:.2f} < {c['min_top1']}")
    if "max_macs_ratio" in c and (r["macs_ratio"] or 1) > c["max_macs_ratio"]:
        miss.append(f"MACs {r['macs_ratio']:.3f}x > {c['max_macs_ratio']}x")
    if "max_epochs" in c and r["epochs"] > c["max_epochs"]:
        miss.append(f"{r['epochs']} epochs > {c['max_epochs']}")
    drop_heldout = r["baseline_top1_heldout"] - r["top1_heldout"]
    if "max_drop_heldout" in c and drop_heldout > c["max_drop_heldout"]:
        miss.append(f"held-out drop {drop_heldout:.2f} > {c['max_drop_heldout']} pt")
    if "min_speedup_runtime_bs1" in c:  # on the runtime the row optimised for
        got = r["speedup_ov_bs1"] if r.get("runtime") == "openvino" else r["speedup_ort_bs1"]
        if got < c["min_speedup_runtime_bs1"]:
            miss.append(f"{r.get('runtime')} {got:.2f}x < {c['min_speedup_runtime_bs1']}x")
    if "min_speedup_bs1" in c and r["speedup_ort_bs1"] < c["min_speedup_bs1"]:
        miss.append(f"ORT {r['speedup_ort_bs1']:.2f}x < {c['min_speedup_bs1']}x")
    if "min_file" in c and 1 / r["file_ratio"] < c["min_file"]:
        miss.append(f"file {1 / r['file_ratio']:.1f}x < {c['min_file']}x")
    if "min_params" in c and (r["params_ratio"] is None or 1 / r["params_ratio"] < c["min_params"]):
        got = "-" if r["params_ratio"] is None else f"{1 / r['params_ratio']:.1f}x"
        miss.append(f"params {got} < {c['min_params']}x")
    if not miss:
        return "met"
    return "missed: " + ", ".join(miss) + (f" ({WHY[r['id']]})" if r["id"] in WHY else "")


def render(res: dict) -> str:
    rows = {r["id"]: r for r in res.get("rows", [])}
    inv = lambda v, fmt: "-" if v is None else format(1 / v, fmt) + "x"  # noqa: E731
    md = ["## Headline: torchslim beside the papers and tools (`benchmarks/bench_headline.py`)", "",
          "Each row is a shipped recipe, rerun with `torchslim compress recipes/<recipe>.yaml -o runs/x` "
          "(resumable) and measured by `python -m benchmarks.bench_headline --rows <id>`; the auto row is a "
          "`torchslim auto` search, whose choice is written out as a recipe. Top-1 on the full "
          "10,000-image test set (the papers' protocol) and on the held-out half no decision saw (CIFAR-10; MNIST "
          "models are trained here, their held-out set is the test set). Ratios are compressed / baseline; "
          "latency: ONNX Runtime (ORT) and OpenVINO (OV, fp32 float layers; an int8 model runs its int8 kernels), "
          "one thread, baseline and compressed model timed alternately in one run, speedup at batch 1 / 32. "
          "Budget: fine-tuning epochs and wall-clock core-minutes of the run.", ""]
    table = []
    for row_id in ROWS:
        r = rows.get(row_id)
        if r is None:
            table.append([row_id, "not run yet", "", "", "", "", "", "", "", "", "", ROWS[row_id][3], ""])
            continue
        ov = f"{r['speedup_ov_bs1']:.2f}x / {r['speedup_ov_bs32']:.2f}x" if "speedup_ov_bs1" in r else "-"
        table.append([row_id, f"{r['model']}: {r['method']}",
                      f"{r['baseline_top1']:.2f} -> {r['top1_full_test']:.2f}",
                      f"{r['baseline_top1_heldout']:.2f} -> {r['top1_heldout']:.2f}",
                      inv(r["macs_ratio"], ".2f"), inv(r["params_ratio"], ".1f"), inv(r["file_ratio"], ".1f"),
                      f"{r['speedup_ort_bs1']:.2f}x / {r['speedup_ort_bs32']:.2f}x", ov,
                      r["epochs"], r["core_minutes"], r["anchor"], verdict(r)])
    md.append(md_table(["id", "row", "top-1 full test", "top-1 held-out half", "MACs", "params", "file",
                        "ORT bs1 / bs32", "OV bs1 / bs32", "epochs", "core-min", "anchor (their figure)", "goal"],
                       table))
    md += ["", "The LeNets run in tens of microseconds a call, where a runtime's call overhead is the whole "
           "latency: their speedups (OpenVINO's 0.2-0.3x at batch 1 among them) measure that overhead, not the "
           "compression, which targets size there.", ""]
    md += ["Goals (issue 14): " + "; ".join(f"{k}: {v[4]}" for k, v in ROWS.items()) + ".", ""]
    for r in rows.values():
        if "auto" in r:
            a = r["auto"]
            md += [f"{r['id']}: the search measured latency on {r['runtime']} and chose "
                   f"{', '.join(a['chosen']['actions']) or 'nothing'}; its own verdict: {a['verdict']}", ""]
    if res.get("machine"):
        m = res["machine"]
        md += [f"Machine: {m.get('cpu', '')}, torch {m.get('torch', '')}.", ""]
    return "\n".join(md)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_device_arg(ap)
    ap.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS))
    ap.add_argument("--runs-dir", default="runs/headline")
    ap.add_argument("--quick", action="store_true", help="accepted for `benchmarks.run --quick`: rebuilds the table only")
    ap.add_argument("--assemble", action="store_true", help="only rebuild the table from results/headline.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    old = RESULTS / "headline.json"
    res = json.loads(old.read_text()) if old.is_file() else {"rows": []}
    if not (args.assemble or args.quick):
        for row_id in args.rows:
            row = measure_row(row_id, Path(args.runs_dir), args.device) | {"command": command_line()}
            if old.is_file():  # rows another run of this script wrote meanwhile are kept
                res = json.loads(old.read_text())
            res["rows"] = [r for r in res["rows"] if r["id"] != row_id] + [row]
            res["rows"].sort(key=lambda r: list(ROWS).index(r["id"]))
            res["machine"] = machine_info(1, False)
            write_result("headline", res, render(res))  # after every row: a kill loses at most one row
            print(json.dumps(row, indent=2), flush=True)
    write_result("headline", res, render(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Coverage on timm: prune a broad sample of timm's CNN and hybrid models, with Torch-Pruning side by side.

    python -m benchmarks.bench_prune_coverage_timm [--models a,b] [--timeout 150] [--fresh] [--no-tp]

One model per family timm lists (`timm.list_modules()`, its smallest member by parameters), plus the
models people prune most; pure transformer / MLP families are listed with the reason they are left out.
Each model: random init (never downloads), input 64x64 or the smallest size it accepts, then
`torchslim.prune(model, "l1", example_input=x, ratio=0.3)`; the pruned model must run, keep its output shape, lose MACs in
proportion (every conv / linear loses at least 30 % of one side: <= 0.7x MACs; 0.49x where both shrink),
save and load back with equal outputs, export to ONNX and run in ONNX Runtime with equal outputs.
Torch-Pruning (the `bench` extra) prunes a copy of the same model with its default `MetaPruner`, L1
magnitude importance, the same ratio and the classifier left out, as its README shows; its MACs are
counted by the same profiler. Rows are kept per model in results/prune_coverage_timm/ (a killed run
resumes); each model runs in its own forked process on one core with a time and memory limit.
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.bench_prune_coverage import RESULTS, run_isolated, write_doc_section
from benchmarks.common import write_text_atomic

ROWS = RESULTS / "prune_coverage_timm"
RATIO = 0.3
# MACs "in proportion": every conv / linear loses at least the 30 % of one side (the stem's input and the
# classifier's output stay), 0.49x where both sides shrink: <= 0.7x overall.
IN_PROPORTION = 1 - RATIO

# (timm family = module, model): the models of issue 19 first, then the smallest member (by parameters)
# of every CNN and hybrid family, and a few popular ones.
MODELS = [
    ("vgg", "vgg11_bn"), ("mobilevit", "mobilevit_s"), ("efficientnet", "tf_mixnet_s"), ("resnet", "resnet18"),
    ("efficientnet", "efficientnet_b0"), ("efficientnet", "mnasnet_small"),
    ("mobilenetv3", "mobilenetv3_small_050"), ("mobilenetv3", "lcnet_050"), ("mobilenetv5", "mobilenetv5_300m"),
    ("regnet", "regnetx_002"), ("convnext", "convnext_atto"), ("densenet", "densenet121"), ("dla", "dla46x_c"),
    ("dpn", "dpn48b"), ("byobnet", "resnet32ts"), ("byobnet", "gernet_s"), ("byobnet", "repvgg_a0"),
    ("byoanet", "halonet26t"), ("cspnet", "cs3darknet_focus_s"), ("cspnext", "cspnext_tiny"),
    ("ghostnet", "ghostnet_050"), ("hardcorenas", "hardcorenas_a"), ("hgnet", "hgnetv2_b0"),
    ("hrnet", "hrnet_w18_small"), ("inception_v3", "inception_v3"), ("inception_v4", "inception_v4"),
    ("inception_resnet_v2", "inception_resnet_v2"), ("inception_next", "inception_next_atto"),
    ("nfnet", "nf_regnet_b0"), ("rexnet", "rexnet_100"), ("res2net", "res2net50_14w_8s"), ("resnest", "resnest14d"),
    ("resnetv2", "resnetv2_50"), ("selecsls", "selecsls42b"), ("senet", "legacy_seresnet18"),
    ("sknet", "skresnet18"), ("tresnet", "tresnet_m"), ("vovnet", "ese_vovnet19b_dw"),
    ("xception", "legacy_xception"), ("xception_aligned", "xception41"), ("repghost", "repghostnet_050"),
    ("repvit", "repvit_m1"), ("fasternet", "fasternet_t0"), ("starnet", "starnet_s1"), ("rdnet", "rdnet_tiny"),
    ("mambaout", "mambaout_femto"), ("metaformer", "poolformer_s12"), ("convmixer", "convmixer_768_32"),
    ("cpubone", "cpubone_nano"), ("lcnetv2", "lcnetv2_small"), ("nasnet", "nasnetalarge"),
    ("pnasnet", "pnasnet5large"),
    # hybrids: convolutions with attention or token mixing
    ("edgenext", "edgenext_xx_small"), ("efficientformer", "efficientformer_l1"),
    ("efficientformer_v2", "efficientformerv2_s0"), ("efficientvit_mit", "efficientvit_b0"),
    ("efficientvit_msra", "efficientvit_m0"), ("efficientvim", "efficientvim_m1"), ("fastvit", "fastvit_t8"),
    ("levit", "levit_128s"), ("coat", "coat_lite_tiny"), ("convit", "convit_tiny"),
    ("maxxvit", "coatnet_nano_rw_224"), ("tiny_vit", "tiny_vit_5m_224"), ("nextvit", "nextvit_small"),
    ("swiftformer", "swiftformer_xs"), ("visformer", "visformer_tiny"), ("pit", "pit_ti_224"),
    ("vision_transformer_hybrid", "vit_tiny_r_s16_p8_224"), ("focalnet", "focalnet_tiny_srf"),
    ("gcvit", "gcvit_xxtiny"), ("davit", "davit_tiny"), ("shvit", "shvit_s1"), ("lowformer", "lowformer_b0"),
    ("iformer", "iformer_t"), ("hiera", "hiera_tiny_224"), ("mvitv2", "mvitv2_tiny"), ("pvt_v2", "pvt_v2_b0"),
    ("twins", "twins_pcpvt_small"), ("vitamin", "vitamin_small_224"), ("csatv2", "csatv2"),
]
# Families left out, and why (a cell of the table says it too).
NOT_CNN = ("pure transformer or MLP (patch embedding + attention/MLP blocks, no convolution stages): "
           "out of this CNN coverage")
LEFT_OUT = {f: NOT_CNN for f in (
    "beit", "cait", "crossvit", "deit", "eva", "mlp_mixer", "sequencer", "swin_transformer", "swin_transformer_v2",
    "swin_transformer_v2_cr", "tnt", "vision_transformer", "vision_transformer_relpos", "vision_transformer_sam",
    "volo", "xcit", "nest", "naflexvit", "hieradet_sam2", "deepseek_vit", "qwen3_vit", "gemma4_vit")}


def _build(name: str):
    from torchslim.models import create_model

    torch.manual_seed(0)
    return create_model(f"timm:{name}").eval()  # records its constructor: saved files name it


def _input_size(model, name: str, size: int) -> int:
    """`size` if the model runs on it, else its pretrained configuration's size."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    native = cfg.input_size[-1] if cfg is not None else 224
    if cfg is not None and getattr(cfg, "fixed_input_size", False):
        return native
    for s in dict.fromkeys((size, 96, 128, native)):
        try:
            with torch.no_grad():
                model(torch.randn(1, 3, s, s))
            return s
        except Exception:
            continue
    return native


def _classify(macs_ratio: float, why: str = "") -> str:
    return "pruned" if macs_ratio <= IN_PROPORTION + 1e-3 else f"partly pruned{why}" if macs_ratio < 0.98 else \
        f"no MAC reduction{why}"


def _reclassify(r: dict) -> dict:
    """Status from the stored ratios (rows written under another threshold stay comparable)."""
    r = dict(r)
    if "macs_ratio" in r and r["status"].startswith(("pruned", "partly pruned", "no MAC reduction")):
        why = f" ({r['pinned'][-1][:160]})" if r.get("pinned") else ""
        r["status"] = _classify(r["macs_ratio"], why)
    if "tp_macs_ratio" in r:
        r["tp_status"] = _classify(r["tp_macs_ratio"])
    return r


def _why(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0][:180]}" if str(e) else type(e).__name__


def _torch_pruning(model, x, shape, before_macs, size) -> dict:
    """Torch-Pruning's MetaPruner, L1 magnitude, the same ratio, the classifier ignored."""
    from torchslim.analysis import profile

    try:
        import torch_pruning as tp
    except ImportError:
        return {"tp_status": "not installed (pip install 'torchslim[bench]')"}
    m = copy.deepcopy(model)
    t0 = time.perf_counter()
    try:
        head = m.get_classifier() if hasattr(m, "get_classifier") else None
        ignored = [head] if isinstance(head, torch.nn.Module) and any(True for _ in head.parameters()) else []
        pruner = tp.pruner.MetaPruner(m, x, importance=tp.importance.MagnitudeImportance(p=1),
                                      pruning_ratio=RATIO, ignored_layers=ignored)
        pruner.step()
        row = {"tp_time_s": round(time.perf_counter() - t0, 2)}
        with torch.no_grad():
            y = m(x)
        if tuple(y.shape) != shape:
            return {**row, "tp_status": f"output {tuple(y.shape)} instead of {shape}"}
        r = profile(m, (3, size, size)).macs / before_macs
        row["tp_macs_ratio"] = round(r, 3)
        row["tp_status"] = _classify(r)
        return row
    except Exception as e:
        return {"tp_status": f"fails: {_why(e)}"}


def run_one(name: str, size: int, tp: bool = True) -> dict:
    """Prune one model, check it, save/load it, export it; every exception becomes the row's status."""
    import torchslim
    from torchslim.analysis import profile
    from torchslim.errors import TorchslimError
    from torchslim.onnx_export import to_onnx, verify_onnx
    from torchslim.prune import prune_report

    row: dict = {"model": name}
    try:
        m = _build(name)
        s = _input_size(m, name, size)
        row["input"] = s
        x = torch.randn(1, 3, s, s)
        with torch.no_grad():
            shape = tuple(m(x).shape)
        before = profile(m, (3, s, s))
        row.update(macs_before=before.macs, params_before=before.params)
        if tp:
            row.update(_torch_pruning(m, x, shape, before.macs, s))
        t0 = time.perf_counter()
        p = torchslim.prune(m, "l1", example_input=x, ratio=RATIO, round_to=1)  # exact ratios: the graph is measured, not rounding
        row["time_s"] = round(time.perf_counter() - t0, 2)
        rep = prune_report(p)
        row["tracer"] = rep["tracer"]
        with torch.no_grad():
            y = p(x)
        after = profile(p, (3, s, s))
        r = after.macs / before.macs
        row.update(macs_after=after.macs, params_after=after.params, macs_ratio=round(r, 3))
        pinned = [n for n in rep["pinned"] if n != "model output"]
        if pinned:
            row["pinned"] = pinned[:5]
        why = f" ({pinned[-1][:160]})" if pinned else ""
        if tuple(y.shape) != shape:
            row["status"] = f"BUG: output {tuple(y.shape)} instead of {shape}"
            return row
        row["status"] = _classify(r, why)
        with tempfile.TemporaryDirectory() as d:
            try:
                torchslim.save(p, Path(d) / "m.safetensors")
                q = torchslim.load(Path(d) / "m.safetensors")
                with torch.no_grad():
                    diff = (q(x) - y).abs().max().item()
                row["saved"] = "ok" if diff <= 1e-4 * max(1.0, y.abs().max().item()) else f"outputs differ by {diff:.2g}"
            except Exception as e:
                row["saved"] = f"fails: {_why(e)}"
            try:
                path = to_onnx(p, x, Path(d) / "m.onnx")
                verify_onnx(p, path, x, rtol=1e-3, atol=1e-3)
                row["onnx"] = "ok"
            except Exception as e:
                row["onnx"] = f"fails: {_why(e)}"
                try:  # is it the pruning, or does the original model fail the same check?
                    verify_onnx(m, to_onnx(m, x, Path(d) / "original.onnx"), x, rtol=1e-3, atol=1e-3)
                except Exception:
                    row["onnx"] = f"fails, the unpruned model too: {_why(e)}"
    except MemoryError:
        row["status"] = "skipped: out of memory"
    except TorchslimError as e:
        row["status"] = f"error: {_why(e)}"
    except Exception as e:
        oom = isinstance(e, RuntimeError) and ("alloc" in str(e) or "memory" in str(e))
        row["status"] = "skipped: out of memory" if oom else f"BUG: {_why(e)}"
    return row


def _md(rows, args) -> str:
    rows = [_reclassify(r) for r in rows]
    ok = [r for r in rows if r["status"] == "pruned"]
    full = [r for r in ok if r.get("saved") == "ok" and r.get("onnx") == "ok"]
    tp_ok = [r for r in rows if r.get("tp_status") == "pruned"]
    fam = dict((m, f) for f, m in MODELS)
    families = sorted({fam[r["model"]] for r in rows if r["model"] in fam})
    concrete = [r["model"] for r in rows if r.get("tracer") == "concrete"]
    count = lambda k: sum(r["status"].startswith(k) for r in rows)  # noqa: E731
    lines = [
        f"Command: `python -m benchmarks.bench_prune_coverage_timm --timeout {args.timeout:.0f}` (rows of "
        "models that failed were rerun with `--fresh --models ...` after fixes; each row is its model's last "
        f"run). {len(rows)} timm {sys.modules['timm'].__version__} models from "
        f"{len(families)} families (every CNN and hybrid family of `timm.list_modules()`; the smallest member by "
        "parameters, plus the models pruned most often). Random init, batch 1, input 64x64 or the smallest size "
        "the model accepts (`input`). torchslim: `prune(model, \"l1\", example_input=x, ratio=0.3)`; Torch-Pruning "
        f"{_tp_version()}: `MetaPruner(model, x, MagnitudeImportance(p=1), pruning_ratio=0.3, "
        "ignored_layers=[classifier])`, its plain default (no per-model attention settings). Both MAC ratios "
        "are counted by torchslim.analysis (conv + linear). `pruned` = in proportion: MACs <= 0.7x (every conv "
        "and linear loses at least the 30 % of one side; 0.49x where both sides shrink). Each model in its own process on one core, "
        f"{args.timeout:.0f} s and {args.mem_gb:.0f} GB limit; whole run "
        f"{sum(r.get('wall_s', 0) for r in rows) / 60:.1f} min wall (budget ~20 min).\n",
        f"**torchslim: {len(ok)} / {len(rows)} pruned in proportion** ({len(full)} of them also saved, loaded "
        f"back and ran in ONNX Runtime with equal outputs), {count('partly')} partly (the note names what pinned "
        f"the rest), {count('no MAC')} without MAC reduction, {count('error')} refused with an error, "
        f"{count('BUG')} failed otherwise, {count('skipped')} skipped. **Torch-Pruning: {len(tp_ok)} / "
        f"{len(rows)} pruned in proportion.** Traced concretely (torch.fx could not trace them): "
        f"{', '.join(concrete) or 'none'}; that trace follows the branches the 1-sample example input took.\n",
        "| family | model | input | MACs before | torchslim ratio | status | saved + loaded | ONNX Runtime | "
        "Torch-Pruning ratio | Torch-Pruning status | prune (s) | wall (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        def cell(k):
            return str(r.get(k, "-")).replace("|", "/")
        before = f"{r['macs_before'] / 1e6:.1f}M" if "macs_before" in r else "-"
        lines.append(f"| {fam.get(r['model'], '-')} | {r['model']} | {cell('input')} | {before} | {cell('macs_ratio')} "
                     f"| {cell('status')} | {cell('saved')} | {cell('onnx')} | {cell('tp_macs_ratio')} | "
                     f"{cell('tp_status')} | {cell('time_s')} | {cell('wall_s')} |")
    lines += ["", "Families not in the table: " + "; ".join(f"`{f}`" for f in sorted(LEFT_OUT)) + f": {NOT_CNN}."]
    return "\n".join(lines) + "\n"


def _tp_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torch-pruning")
    except PackageNotFoundError:
        return "(not installed)"


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", help="comma-separated timm names (default: the sample above)")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--timeout", type=float, default=90, help="seconds per model")
    ap.add_argument("--mem-gb", type=float, default=12, help="address-space limit per model")
    ap.add_argument("--fresh", action="store_true", help="rerun models that already have a row")
    ap.add_argument("--no-tp", action="store_true", help="leave Torch-Pruning out")
    ap.add_argument("--assemble", action="store_true", help="run nothing: rewrite the table from the rows kept")
    args = ap.parse_args(argv)
    args.command = "python -m benchmarks.bench_prune_coverage_timm " + " ".join(argv if argv is not None else sys.argv[1:])
    torch.set_num_threads(1)
    names = [m for _, m in MODELS]
    rerun = set(args.models.split(",")) if args.models else set(names)  # the table keeps every row already there
    if args.assemble:
        rerun = set()
    names += sorted(rerun - set(names))
    import timm  # noqa: F401  (imported once, before the forks)
    import torchslim.analysis, torchslim.prune  # noqa: F401
    if not args.no_tp:
        try:
            import torch_pruning  # noqa: F401
        except ImportError:
            pass
    rows: list[dict] = []

    def write():
        payload = {"command": args.command, "rows": rows, "machine": platform.processor() or platform.machine(),
                   "torch": torch.__version__, "timm": sys.modules["timm"].__version__, "torch_pruning": _tp_version()}
        write_text_atomic(RESULTS / "prune_coverage_timm.json", json.dumps(payload, indent=2))
        text = _md(rows, args)
        write_text_atomic(RESULTS / "prune_coverage_timm.md", "## Pruning coverage (timm, L1, 30 % channels)\n\n" + text)
        write_doc_section("timm", "## timm (PyTorch Image Models), with Torch-Pruning side by side\n\n" + text)

    for n in names:
        path = ROWS / f"{n}.json"
        if n in rerun and (args.fresh or not path.exists()):
            rows.append(run_isolated(n, args.size, args.timeout, args.mem_gb,
                                     fn=lambda name, size: run_one(name, size, tp=not args.no_tp), rows=ROWS))
            print(json.dumps(rows[-1]), flush=True)
            write()
        elif path.exists():
            rows.append(json.loads(path.read_text()))
    write()

if __name__ == "__main__":
    main()

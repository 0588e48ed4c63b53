"""Low-rank decomposition benchmarks (issue 9).

1. whole: one-shot whole-network compression (Kim et al. 2016): Tucker-2 with VBMF ranks on every
   conv, truncated SVD (VBMF) on the hidden FC layers; the final classifier is kept. CIFAR ResNet-56
   (the shipped checkpoint) and a CIFAR VGG-16 trained here on a
   small stated budget. Size and MAC ratios, measured CPU latency, accuracy right after decomposition
   and after a short fine-tuning (torchslim.train.fit); per-layer theoretical vs measured speedup.
2. cp: CP decomposition (Lebedev et al. 2015) of one ResNet-56 layer at increasing ranks: measured
   layer speedup vs whole-network accuracy (no fine-tuning).
3. recipe: our Tucker-2 (Gram-eigh HOSVD + 2 HOOI sweeps) against the common TensorLy recipe
   (`partial_tucker(W, modes=[0, 1], rank, init="svd")`, the pytorch-tensor-decompositions code) on
   every k>1 conv of torchvision VGG-16 and ResNet-50 and of ResNet-56: time and reconstruction error
   at equal ranks; and our CP-ALS against tensorly.parafac on ResNet-56 layers.
4. channel: response (Zhang) vs weight reconstruction, rank R = fraction x T, symmetric fit, ResNet-56.
5. zhang: the 18 block convs of the pretrained CIFAR ResNet-20 at 2x and 3x fewer MACs (ranks chosen per
   layer to fit the MAC budget): Tucker-2 and Tucker-1 (weights) against channel (symmetric and
   asymmetric) and zhang3d (Zhang et al. 2015, responses): MACs, response error of every layer in the
   decomposed network on held-out images, top-1 without fine-tuning, measured latency of the chains.

Everything runs with 1 thread (the machine's 2 cores are shared). Accuracy on a fixed random subset
of the CIFAR-10 test split; sizes stated in the output.

    python -m benchmarks.bench_lowrank [--quick] [--parts whole cp channel zhang recipe]
"""
from __future__ import annotations

import argparse
import math
import time

import torch
from torch import nn

from benchmarks.common import add_device_arg, command_line, md_table, write_result
from torchslim.analysis import measure_latency, profile
from torchslim.data import get_data
from torchslim.io import load_model, save_model
from torchslim.lowrank import METHODS, decompose_with_report
from torchslim.lowrank.cp import cp_to_tensor, parafac4
from torchslim.lowrank.tucker import tucker2, tucker2_to_tensor
from torchslim.models import create_model
from torchslim.paths import cache_dir
from torchslim.train import FitConfig, evaluate, fit

KIM_ALEXNET = "Kim et al. 2016, AlexNet: 5.46x size, 2.67x FLOPs, -1.70 % top-5 after fine-tuning; 1.23-2.33x measured (GPU)"
LEBEDEV = "Lebedev et al. 2015: AlexNet conv2 CP rank 200: 8.5x CPU speedup (layer) at ~1 % top-5 loss"
INPUT = (3, 32, 32)


def _budget(quick: bool) -> dict:
    return dict(eval_images=500 if quick else 2000, ft_steps=5 if quick else 100, ft_batch=64,
                vgg_train_images=2000 if quick else 5000, vgg_epochs=1, vgg_batch=64,
                lat_repeats=5 if quick else 20)


RANKS = {"vbmf": "vbmf", "x3": {"compression": 3}}  # Kim et al.'s VBMF, and a fixed 3x size target


def resnet56_baseline() -> tuple[nn.Module, str]:
    from benchmarks.bench_baselines import baseline

    return baseline("resnet56", "cifar10")


def vgg16_trained(b: dict, quick: bool) -> tuple[nn.Module, str]:
    """VGG-16-BN for CIFAR trained here; cached (full budget only) under ~/.cache/torchslim/baselines.
    The full-budget model of `bench_baselines --parts scratch` is used when it exists."""
    from benchmarks.bench_baselines import baseline_path

    full = baseline_path("vgg16_cifar", "cifar10")
    if full.is_file() and not quick:
        from torchslim.io import model_info

        info = model_info(full)["metadata"]
        return load_model(full), (f"vgg16_cifar trained from scratch by bench_baselines: {info.get('epochs')} epochs "
                                  f"on {info.get('train_images')} images, test top-1 {info.get('top1')} % (cached {full})")
    path = cache_dir() / "baselines" / "vgg16_cifar-cifar10-small.safetensors"
    desc = (f"vgg16_cifar trained here from scratch: {b['vgg_epochs']} epochs on {b['vgg_train_images']} "
            f"train images, batch {b['vgg_batch']}, SGD Nesterov lr 0.05 cosine, wd 5e-4")
    if path.is_file() and not quick:
        return load_model(path), desc + f" (cached {path})"
    data = get_data("cifar10", batch_size=b["vgg_batch"], limit_train=b["vgg_train_images"], limit_eval=500)
    model = create_model("vgg16_cifar")
    cfg = FitConfig(epochs=b["vgg_epochs"], lr=0.05, nesterov=True, weight_decay=5e-4, eval_every=0, progress=False,
                    checkpoint_every_steps=20)
    t = time.perf_counter()
    fit(model, data.train, config=cfg, checkpoint_dir=None if quick else path.with_suffix(".ckpt"))
    desc += f", {time.perf_counter() - t:.0f} s"
    if not quick:
        save_model(model, path, input_size=INPUT, metadata={"budget": desc})
    return model, desc


def _latency(model, bs, repeats):
    return measure_latency(model, input_size=INPUT, batch_size=bs, threads=1, repeats=repeats,
                           min_time_s=0.2, with_peak=False).median_ms


def _not_classifier(num_classes=10):
    return lambda m, n: not (isinstance(m, nn.Linear) and m.out_features == num_classes)


def whole(name: str, model: nn.Module, origin: str, b: dict, rank="vbmf") -> dict:
    data = get_data("cifar10", batch_size=b["ft_batch"], limit_eval=b["eval_images"])
    model.eval()
    acc0 = evaluate(model, data.test)
    small, rep = decompose_with_report(model, "tucker", rank, _not_classifier(), input_size=INPUT)
    p0, p1 = profile(model, INPUT), profile(small, INPUT)
    lat = {}
    for bs in (1, 32):
        before, after = _latency(model, bs, b["lat_repeats"]), _latency(small, bs, b["lat_repeats"])
        lat[f"bs{bs}"] = {"before_ms": before, "after_ms": after, "speedup": before / after}
    rep.measure(threads=1, batch_size=1, repeats=b["lat_repeats"], min_time_s=0.05)
    acc1 = evaluate(small, data.test)
    if b.get("ft_epochs"):  # whole epochs of the 45k train split, bf16 autocast + NHWC (2x faster on this CPU)
        cfg = FitConfig(epochs=b["ft_epochs"], lr=0.01, nesterov=True, weight_decay=1e-4, eval_every=0,
                        progress=False, precision="bf16", channels_last=True)
        budget = f"{b['ft_epochs']} epochs x {len(data.train)} steps x batch {b['ft_batch']} (lr 0.01 cosine, bf16)"
    else:
        cfg = FitConfig(epochs=1, lr=0.01, nesterov=True, weight_decay=1e-4, max_steps_per_epoch=b["ft_steps"],
                        eval_every=0, progress=False)
        budget = f"{b['ft_steps']} steps x batch {b['ft_batch']} (lr 0.01 cosine)"
    t = time.perf_counter()
    fit(small, data.train, config=cfg)
    ft_s = time.perf_counter() - t
    acc2 = evaluate(small, data.test)
    return {"model": name, "rank": str(rank), "origin": origin, "params_before": p0.params, "params_after": p1.params,
            "macs_before": p0.macs, "macs_after": p1.macs, "size_ratio": p0.params / p1.params,
            "macs_ratio": p0.macs / p1.macs, "latency": lat, "top1_before": acc0["top1"],
            "top1_after": acc1["top1"], "top1_finetuned": acc2["top1"], "top5_before": acc0["top5"],
            "top5_after": acc1["top5"], "top5_finetuned": acc2["top5"], "eval_images": acc0["n"],
            "finetune": f"{budget}, {ft_s:.0f} s",
            "decompose_s": rep.seconds, "report": rep.to_dict()}


def cp_sweep(b: dict, quick: bool) -> dict:
    model, origin = resnet56_baseline()
    model.eval()
    layer_name = "layer3.1.conv1"
    data = get_data("cifar10", limit_eval=b["eval_images"])
    acc0 = evaluate(model, data.test)["top1"]
    rows = []
    for R in ([8, 32, 64] if quick else [4, 8, 16, 32, 48, 64, 96]):
        small, rep = decompose_with_report(model, "cp", R, [layer_name], input_size=INPUT, allow_growth=True)
        l = rep.layers[0]
        rep.measure(threads=1, batch_size=32, repeats=b["lat_repeats"], min_time_s=0.1)
        rows.append({"rank": R, "rel_error": l.rel_error, "theoretical_speedup": l.speedup,
                     "measured_speedup": l.measured_speedup, "latency_before_ms": l.latency_before_ms,
                     "latency_after_ms": l.latency_after_ms, "top1": evaluate(small, data.test)["top1"],
                     "decompose_s": l.seconds})
        print(rows[-1], flush=True)
    return {"model": "resnet56", "origin": origin, "layer": layer_name, "top1_before": acc0,
            "eval_images": b["eval_images"], "latency_batch": 32, "rows": rows}


def channel_vs_tucker(b: dict, quick: bool) -> dict:
    """Zhang et al. 2015: response reconstruction (through the ReLU) vs weight reconstruction, equal MACs."""
    model, origin = resnet56_baseline()
    model.eval()
    data = get_data("cifar10", limit_eval=b["eval_images"])
    n_calib = b.get("calibration", 128 if quick else 512)
    calib = data.calibration_batches(n_calib)
    convs = lambda m, n: isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) and m.in_channels > 4
    acc0 = evaluate(model, data.test)["top1"]
    rows = []
    for frac in b.get("fractions") or ([0.5] if quick else [0.75, 0.5, 0.25]):
        row = {"rank_fraction": frac}
        # the symmetric channel fit (inputs from the network before each layer), as these figures were
        # made; the asymmetric variant and zhang3d are compared in the `zhang` part
        for label, method, opts in [("tucker1 (weights)", "tucker1", {}),
                                    ("channel, linear (responses)", "channel", {"nonlinear": False, "asymmetric": False}),
                                    ("channel, ReLU (responses)", "channel", {"asymmetric": False})]:
            # rank R = frac * T per layer: a callable spec is not part of the API, so decompose per stage
            small = model
            t = time.perf_counter()
            for T in (16, 32, 64):
                sel = lambda m, n, T=T: convs(m, n) and m.out_channels == T
                small, rep = decompose_with_report(small, method, max(1, int(frac * T)), sel, linear_method=None,
                                                   input_size=INPUT, data=calib if method == "channel" else None,
                                                   options=opts)
            secs = time.perf_counter() - t
            p = profile(small, INPUT)
            row[label] = {"top1": evaluate(small, data.test)["top1"], "macs": p.macs, "seconds": secs}
        rows.append(row)
        print(row, flush=True)
    return {"origin": origin, "top1_before": acc0, "macs_before": profile(model, INPUT).macs,
            "calibration_images": n_calib, "eval_images": b["eval_images"], "rows": rows}


ZHANG_METHODS = [  # label, method, options
    ("tucker (weights)", "tucker", {}),
    ("tucker1 (weights)", "tucker1", {}),
    ("channel, symmetric", "channel", {"asymmetric": False}),
    ("channel, asymmetric", "channel", {}),
    ("zhang3d, asymmetric", "zhang3d", {}),
]


def _relu_bn_outputs(model: nn.Module, names: list[str], batches) -> dict:
    """relu(bn(conv(x))) of each named conv (its BatchNorm is the same name with conv -> bn)."""
    bns = [n.replace("conv", "bn") for n in names]
    out = {}
    hooks = [model.get_submodule(b).register_forward_hook(
        lambda mod, a, y, n=n: out.setdefault(n, []).append(torch.relu(y))) for n, b in zip(names, bns)]
    with torch.no_grad():
        for x in batches:
            model(x)
    for h in hooks:
        h.remove()
    return {n: torch.cat(v) for n, v in out.items()}


def zhang_vs_tucker(b: dict, quick: bool) -> dict:
    """Zhang et al. 2015 (channel, asymmetric, 3-D) against weight-reconstruction Tucker at equal MACs."""
    model = create_model("resnet20", pretrained=True).eval()
    data = get_data("cifar10", batch_size=128, limit_eval=b["eval_images"])
    n_calib, n_held = (64, 128) if quick else (128, 256)
    calib = data.calibration_batches(n_calib)
    held = data.calibration_batches(n_held, split="test")
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and n.startswith("layer")]
    ref = _relu_bn_outputs(model, names, held)
    acc0 = evaluate(model, data.test)["top1"]
    rows = []
    for x in b.get("mac_reductions") or ([2] if quick else [2, 3]):
        for label, method, opts in ZHANG_METHODS:
            t = time.perf_counter()
            # each layer gets the largest ranks with x-fold fewer MACs (zhang3d: the best energy split)
            small, rep = decompose_with_report(model, method, {"macs": x}, names, linear_method=None, input_size=INPUT,
                                               data=calib if METHODS.get(method).needs_data else None, options=opts)
            secs = time.perf_counter() - t
            ranks = {r.name: r.ranks for r in rep.layers}
            out = _relu_bn_outputs(small, names, held)
            errs = {n: float((out[n] - ref[n]).norm() / ref[n].norm()) for n in names}
            rep.measure(threads=1, batch_size=1, repeats=b["lat_repeats"], min_time_s=0.02)
            lat1 = rep.totals()
            rep.measure(threads=1, batch_size=32, repeats=b["lat_repeats"], min_time_s=0.02)
            lat32 = rep.totals()
            tot = rep.totals()
            row = {"mac_reduction": x, "label": label, "method": method, "options": opts,
                   "decomposed": tot["decomposed"], "layers": tot["layers"],
                   "macs_before": tot["macs_before"], "macs_after": tot["macs_after"],
                   "params_before": tot["params_before"], "params_after": tot["params_after"],
                   "network_macs": profile(small, INPUT).macs,
                   "mean_response_error": sum(errs.values()) / len(errs), "last_response_error": errs[names[-1]],
                   "response_errors": errs, "top1": evaluate(small, data.test)["top1"], "decompose_s": secs,
                   "latency_bs1": [lat1["latency_before_ms"], lat1["latency_after_ms"]],
                   "latency_bs32": [lat32["latency_before_ms"], lat32["latency_after_ms"]],
                   "ranks": {n: list(r) if r else None for n, r in ranks.items()}}
            rows.append(row)
            print({k: v for k, v in row.items() if k not in ("response_errors", "ranks")}, flush=True)
    return {"model": "resnet20", "origin": "create_model('resnet20', pretrained=True)", "top1_before": acc0,
            "network_macs_before": profile(model, INPUT).macs, "layers": names, "calibration_images": n_calib,
            "held_out_images": n_held, "eval_images": b["eval_images"], "rows": rows}


def _recipe_tucker(W, R3, R4):
    """The common recipe (jacobgil/pytorch-tensor-decompositions): TensorLy partial_tucker, init svd."""
    import tensorly as tl
    from tensorly.decomposition import partial_tucker

    with tl.backend_context("pytorch"):
        if R3 is None:
            (core, (last,)), _ = partial_tucker(W, rank=[R4], modes=[0], init="svd")
            return torch.einsum("rsij,tr->tsij", core, last)
        (core, (last, first)), _ = partial_tucker(W, rank=[R4, R3], modes=[0, 1], init="svd")
        return torch.einsum("rqij,tr,sq->tsij", core, last, first)


def recipe(quick: bool) -> dict:
    nets = {"torchvision:vgg16": "random init (no downloads)", "torchvision:resnet50": "random init (no downloads)"}
    out = {"tucker": [], "cp": []}
    models = [("resnet56", resnet56_baseline()[0], "trained")]
    for n, origin in nets.items():
        models.append((n, create_model(n), origin))
    for name, model, origin in models:
        convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)
                 and m.groups == 1]
        if quick:
            convs = convs[:4]
        t_ours = t_rec = t_ours10 = 0.0
        e_ours, e_rec, e_ours10 = [], [], []
        for n, m in convs:
            W = m.weight.detach()
            T, S = W.shape[:2]
            R3 = None if S <= 4 else math.ceil(S / 4)
            R4 = math.ceil(T / 4)
            t = time.process_time()
            w1 = tucker2_to_tensor(*tucker2(W, R3, R4)).float()
            t_ours += time.process_time() - t
            t = time.process_time()
            w3 = tucker2_to_tensor(*tucker2(W, R3, R4, n_iter=10)).float()
            t_ours10 += time.process_time() - t
            e_ours10.append(float((W - w3).norm() / W.norm()))
            t = time.process_time()
            w2 = _recipe_tucker(W, R3, R4)
            t_rec += time.process_time() - t
            e_ours.append(float((W - w1).norm() / W.norm()))
            e_rec.append(float((W - w2).norm() / W.norm()))
        out["tucker"].append({"model": name, "weights": origin, "layers": len(convs), "ours_cpu_s": t_ours,
                              "recipe_cpu_s": t_rec, "time_ratio": t_rec / max(t_ours, 1e-9),
                              "ours_mean_rel_error": sum(e_ours) / len(e_ours),
                              "recipe_mean_rel_error": sum(e_rec) / len(e_rec),
                              "ours_worse_layers": sum(a > b_ + 1e-4 for a, b_ in zip(e_ours, e_rec)),
                              "ours10_cpu_s": t_ours10, "ours10_mean_rel_error": sum(e_ours10) / len(e_ours10),
                              "ours10_worse_layers": sum(a > b_ + 1e-4 for a, b_ in zip(e_ours10, e_rec))})
        print(out["tucker"][-1], flush=True)
    model = models[0][1]
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)
             and m.in_channels > 4][:: (12 if quick else 4)]
    for solver in ("torch", "tensorly"):
        t, errs = 0.0, []
        for n, m in convs:
            W = m.weight.detach()
            R = W.shape[0]
            t0 = time.process_time()
            lam, f = parafac4(W, R, 100, solver=solver)
            t += time.process_time() - t0
            errs.append(float((W.double() - cp_to_tensor(lam, f)).norm() / W.norm()))
        out["cp"].append({"solver": solver, "layers": len(convs), "cpu_s": t, "mean_rel_error": sum(errs) / len(errs)})
        print(out["cp"][-1], flush=True)
    return out


def _md_whole(r: dict, layers: bool = True) -> str:
    lat = r["latency"]
    rows = [[r["model"], r["rank"], f"{r['size_ratio']:.2f}x", f"{r['macs_ratio']:.2f}x",
             f"{lat['bs1']['speedup']:.2f}x", f"{lat['bs32']['speedup']:.2f}x", r["top1_before"], r["top1_after"],
             r["top1_finetuned"], r["top5_before"] - r["top5_finetuned"]]]
    table = md_table(["model", "ranks", "size", "MACs", "measured bs 1", "measured bs 32", "top-1 before %",
                      "top-1 after %", "top-1 fine-tuned %", "top-5 loss (pts)"], rows)
    if not layers:
        return "\n".join([f"**{r['model']}, ranks {r['rank']}**, the same decomposition with fine-tuning "
                          f"{r['finetune']}; accuracy on {r['eval_images']} test images:", "", table])
    layers = [l for l in r["report"]["layers"]]
    lrows = [[l["name"], l["layer"], ",".join(map(str, l["ranks"] or [])) or "-", l["rel_error"] or 0.0,
              f"{l['compression']:.2f}x", f"{l['speedup']:.2f}x",
              "-" if l["measured_speedup"] is None else f"{l['measured_speedup']:.2f}x"] for l in layers]
    slower = sum(1 for l in layers if l["status"] == "decomposed" and (l["measured_speedup"] or 9) < 1)
    dec = sum(1 for l in layers if l["status"] == "decomposed")
    head = (f"**{r['model']}, ranks {r['rank']}** ({r['origin']}); accuracy on {r['eval_images']} test images; fine-tuning "
            f"{r['finetune']}; decomposition took {r['decompose_s']:.1f} s. Per layer (batch 1, 1 thread), "
            f"{slower} of {dec} decomposed layers measured slower than the original despite fewer MACs:")
    ones = sum(1 for l in layers if l["status"] == "decomposed" and l["ranks"] and max(l["ranks"]) == 1)
    if ones:
        head += (f" (in {ones} of {dec} layers every rank is 1: VBMF found no component above its noise "
                 "estimate; on weights this far from converged it sees mostly noise)") if r["rank"] == "vbmf" else ""
    if len(lrows) > 25:
        lrows = lrows[:12] + [["...", "", "", "", "", "", ""]] + lrows[-6:]
    return "\n".join([table, "", head, "", md_table(["layer", "shape", "ranks (R3,R4)", "rel. error", "M", "E",
                                                      "measured"], lrows)])


def _md_zhang(r: dict) -> str:
    rows = []
    for x in r["rows"]:
        b1, b32 = x["latency_bs1"], x["latency_bs32"]
        rows.append([f"{x['mac_reduction']}x", x["label"], f"{x['macs_before'] / 1e6:.1f} -> {x['macs_after'] / 1e6:.1f}",
                     f"{x['macs_before'] / x['macs_after']:.2f}x", f"{x['mean_response_error']:.3f}",
                     f"{x['last_response_error']:.3f}", x["top1"], f"{b1[0] / b1[1]:.2f}x", f"{b32[0] / b32[1]:.2f}x",
                     f"{x['decompose_s']:.1f}"])
    first = r["rows"][0]
    return "\n".join([
        "### Response reconstruction (Zhang et al. 2015) vs weight-reconstruction Tucker at equal MACs", "",
        f"ResNet-20 ({r['origin']}; top-1 {r['top1_before']:.2f} % on {r['eval_images']} test images, "
        f"{r['network_macs_before'] / 1e6:.1f} M MACs): its {len(r['layers'])} block convs (3x3, "
        f"{first['macs_before'] / 1e6:.1f} M MACs together) decomposed at once, each to at most 1/x of its MACs "
        "(rank `{'macs': x}`: per layer the largest ranks that fit, one common fraction of the full ranks; "
        "zhang3d splits its (K, R) by the energy product). No fine-tuning. "
        "tucker = Tucker-2 (1x1, 3x3, 1x1) and tucker1 = output mode only (3x3, 1x1; the same chain as channel) "
        "fit the weights; channel (3x3 S->R, 1x1) and zhang3d (3x1, 1x3, 1x1) fit the responses through the "
        f"BatchNorm and ReLU on {r['calibration_images']} training images, symmetric (inputs from the original "
        "network) or asymmetric (inputs from the network decomposed so far, Sec. 3.3). Response error: "
        "||relu(bn(conv)) - original|| / ||original|| of each layer inside the decomposed network on "
        f"{r['held_out_images']} test images (so it includes the error passed up from the layers below), the mean "
        f"over the layers and the last one ({r['layers'][-1]}). Measured: summed latency of the original layers "
        "over that of their chains, 1 thread:", "",
        md_table(["MACs / x", "method", "M MACs (layers)", "MACs ratio", "mean response err", "last layer err",
                  "top-1 %", "measured bs 1", "measured bs 32", "decompose s"], rows)])


def _migrate(res: dict) -> dict:
    """Runs of separate parts each record their command and budget; fill in any that predate that."""
    budgets = res.setdefault("budgets", {})
    for c in res.get("commands", []):
        budgets.setdefault(c, res.get("budget") or _budget(bool(res.get("quick"))))
    res.pop("budget", None)
    res["commands"] = list(budgets)
    return res


def render(res: dict) -> str:
    """The markdown fragment, from the JSON (so runs of separate parts merge into one section)."""
    md = ["## Low-rank decomposition (`benchmarks/bench_lowrank.py`)", ""]
    if res.get("quick"):
        md += ["_Quick mode: tiny subsets and budgets; not the reference figures._", ""]
    md += ["Commands (each with its budget; results of separate parts merged):", ""]
    md += [f"- `{c}`: {bud}" for c, bud in res.get("budgets", {}).items()]
    md += ["", "All timings: PyTorch eager, 1 thread, medians, before/after measured side by side in one run.", ""]
    if res.get("whole"):
        md += ["### One-shot whole-network Tucker-2 + SVD (Kim et al. 2016)", "",
               f"Paper: {KIM_ALEXNET}. Here: every conv (Tucker-2; first layer output mode only; 1x1 by SVD) "
               "and hidden FC (SVD); the 10-way classifier kept. Ranks by VBMF (Kim et al.) and by a fixed "
               "3x parameter target per layer.", ""]
        seen = set()  # the same decomposition fine-tuned on other budgets: its summary row only
        for r in sorted(res["whole"].values(), key=lambda r: (r["model"], r["rank"], r["finetune"])):
            md += [_md_whole(r, layers=(r["model"], r["rank"]) not in seen), ""]
            seen.add((r["model"], r["rank"]))
    if res.get("cp"):
        r = res["cp"]
        md += ["### CP decomposition of one layer at increasing rank (Lebedev et al. 2015)", "",
               f"Paper: {LEBEDEV}. Here: ResNet-56 `{r['layer']}` (conv3x3 64->64 at 8x8; {r['origin']}), "
               f"no fine-tuning, top-1 of the whole network on {r['eval_images']} test images "
               f"(before: {r['top1_before']:.2f} %); layer latency at batch {r['latency_batch']}:", "",
               md_table(["rank R", "rel. error", "E (MACs)", "measured speedup", "top-1 %", "CP-ALS s"],
                        [[x["rank"], f"{x['rel_error']:.3f}", x["theoretical_speedup"], x["measured_speedup"], x["top1"],
                          x["decompose_s"]] for x in r["rows"]]), ""]
    if res.get("channel"):
        r = res["channel"]
        labels = [k for k in r["rows"][0] if k != "rank_fraction"]
        md += ["### Response vs weight reconstruction at equal MACs (Zhang et al. 2015)", "",
               f"ResNet-56 ({r['origin']}; top-1 {r['top1_before']:.2f} % on {r['eval_images']} test images, "
               f"{r['macs_before'] / 1e6:.1f} M MACs): every 3x3 conv but the first becomes DxD S->R, 1x1 R->T with "
               f"R = fraction x T; no fine-tuning. `tucker1` fits the weights; `channel` fits the responses on "
               f"{r['calibration_images']} training images (linear PCA, and through the ReLU, Eqs. 6-11):", "",
               md_table(["R / T", "M MACs"] + [f"{l} top-1 %" for l in labels],
                        [[x["rank_fraction"], f"{x[labels[0]]['macs'] / 1e6:.1f}"] + [x[l]["top1"] for l in labels]
                         for x in r["rows"]]), ""]
    if res.get("zhang"):
        md += [_md_zhang(res["zhang"]), ""]
    if res.get("recipe"):
        r = res["recipe"]
        md += ["### Against the common TensorLy recipe, equal ranks (R3, R4) = (S/4, T/4)", "",
               "Recipe: `tensorly.decomposition.partial_tucker(W, rank, modes=[0, 1], init='svd')` (HOOI until "
               "tol 1e-4, at most 100 sweeps), as in pytorch-tensor-decompositions; ours: HOSVD from Gram-matrix "
               "eigh + 2 HOOI sweeps (the default), and + 10 sweeps. CPU seconds (process time, 1 thread) "
               "summed over every k>1 conv; torchvision models have random-init weights (no downloads):", "",
               md_table(["model", "weights", "layers", "recipe s", "ours s", "speedup", "recipe err", "ours err",
                         "ours worse (layers)", "ours-10 s", "ours-10 err", "ours-10 worse"],
                        [[x["model"], x["weights"], x["layers"], f"{x['recipe_cpu_s']:.3f}", f"{x['ours_cpu_s']:.3f}",
                          f"{x['time_ratio']:.1f}x", f"{x['recipe_mean_rel_error']:.4f}",
                          f"{x['ours_mean_rel_error']:.4f}", x["ours_worse_layers"], f"{x.get('ours10_cpu_s', float('nan')):.3f}",
                          f"{x.get('ours10_mean_rel_error', float('nan')):.4f}", x.get("ours10_worse_layers", "-")]
                         for x in r["tucker"]]), "",
               "(err: mean relative Frobenius error over the layers; worse: layers where the error exceeds the "
               "recipe's by more than 1e-4.) CP-ALS at rank R = T on ResNet-56 3x3 convs (at most 100 sweeps): "
               "ours vs tensorly.parafac:", "",
               md_table(["solver", "layers", "CPU s", "mean rel. error"],
                        [[x["solver"], x["layers"], x["cpu_s"], f"{x['mean_rel_error']:.4f}"] for x in r["cp"]]), ""]
    return "\n".join(md)


def main(argv=None) -> int:
    import json

    from benchmarks.common import RESULTS

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_device_arg(ap)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--parts", nargs="*", default=["whole", "cp", "recipe"])
    ap.add_argument("--models", nargs="*", default=["resnet56", "vgg16_cifar"])
    ap.add_argument("--ranks", nargs="*", default=list(RANKS))
    ap.add_argument("--fresh", action="store_true", help="discard earlier results of this mode")
    ap.add_argument("--render", action="store_true", help="only rebuild the markdown from the JSON")
    ap.add_argument("--eval-images", type=int, help="override the budget: test images for accuracy")
    ap.add_argument("--ft-steps", type=int, help="override the budget: fine-tuning steps")
    ap.add_argument("--ft-epochs", type=int, help="whole part: fine-tune this many full epochs (batch 128, bf16) "
                                                  "instead of --ft-steps")
    ap.add_argument("--fractions", type=float, nargs="*", help="channel part: R / T values")
    ap.add_argument("--calibration", type=int, help="channel part: calibration images")
    ap.add_argument("--mac-reductions", type=float, nargs="*", help="zhang part: MAC reduction factors x")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    b = _budget(args.quick)
    for k in ("eval_images", "ft_steps", "ft_epochs", "fractions", "calibration", "mac_reductions"):
        if getattr(args, k) is not None:
            b[k] = getattr(args, k)
    if b.get("ft_epochs"):
        b["ft_batch"] = 128
    topic = "lowrank" + ("-quick" if args.quick else "")
    if args.render:
        from benchmarks.common import RESULTS as R

        res = _migrate(json.loads((R / f"{topic}.json").read_text()))
        write_result(topic, res, render(res))
        return 0
    new: dict = {}
    if "whole" in args.parts:
        new["whole"] = {}
        for name in args.models:
            model, origin = resnet56_baseline() if name == "resnet56" else vgg16_trained(b, args.quick)
            for key in args.ranks:
                r = whole(name, model, origin, b, RANKS[key])
                new["whole"][f"{name}/{key}" + (f"/{b['ft_epochs']}ep" if b.get("ft_epochs") else "")] = r
                print({k: v for k, v in r.items() if k != "report"}, flush=True)
    if "cp" in args.parts:
        new["cp"] = cp_sweep(b, args.quick)
    if "channel" in args.parts:
        new["channel"] = channel_vs_tucker(b, args.quick)
    if "zhang" in args.parts:
        new["zhang"] = zhang_vs_tucker(b, args.quick)
    if "recipe" in args.parts:
        new["recipe"] = recipe(args.quick)
    path = RESULTS / f"{topic}.json"
    res = _migrate(json.loads(path.read_text())) if path.is_file() and not args.fresh else {}
    res["quick"] = args.quick
    res.pop("budget", None)
    res.setdefault("budgets", {})[command_line()] = b
    res["commands"] = list(res["budgets"])
    for k, v in new.items():
        if k == "whole":
            # rows of a model decomposed from another starting point (an older baseline) are stale
            fresh = {(r["model"], r["origin"]) for r in v.values()}
            models = {m for m, _ in fresh}
            res["whole"] = {key: r for key, r in res.get("whole", {}).items()
                            if r["model"] not in models or (r["model"], r["origin"]) in fresh}
            res["whole"].update(v)
        else:
            res[k] = v
    write_result(topic, res, render(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

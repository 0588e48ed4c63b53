"""`torchslim decompose MODEL --method tucker --rank vbmf [--data cifar10 --finetune-epochs N] -o DIR`."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from torchslim.cli.common import (add_data_args, add_model_args, check_input_fits, console, load_data_from_args,
                                  load_model_from_args)
from torchslim.cli.options import PREFIX, add_method_options, method_options
from torchslim.cli.train import FINETUNE_FLAGS, add_fit_args, fit_config_from_args
from torchslim.errors import InvalidInputError


def register(sub) -> None:
    from torchslim import methods

    p = sub.add_parser("decompose", help="low-rank decomposition (Tucker-2/VBMF, CP, SVD...) with a per-layer table")
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--method", default="tucker", choices=methods.names("decompose"),
                   help="decomposition (torchslim methods decompose)")
    p.add_argument("--layers", nargs="*", help="fnmatch patterns of layer names (default: all)")
    # DecomposeConfig's fields (torchslim.methods): --rank, --linear-method, --include-ends, --calibration-images, ...
    add_method_options(p, "decompose", exclude=("input_size",),
                       title="decomposition options (torchslim.lowrank.DecomposeConfig)")
    p.add_argument("--calibration", dest=PREFIX + "calibration_images", type=int, help=argparse.SUPPRESS)  # old name
    # the fine-tuning budget (FitConfig); fractional epochs cut the one epoch short
    add_fit_args(p, epochs=0, lr=0.01, flags=FINETUNE_FLAGS, epochs_type=float, nesterov=True)
    p.add_argument("--no-distill", action="store_true",
                   help="fine-tune on the labels alone (default: KD from the undecomposed model as well)")
    p.add_argument("--no-latency", action="store_true", help="skip the per-layer latency measurement")
    p.add_argument("--threads", type=int, default=1, help="threads for latency measurement")
    p.add_argument("--latency-runtime", default="fastest", choices=["fastest", "torch", "onnxruntime", "openvino"],
                   help="where the per-layer latency is measured (default: the installed runtime that runs the "
                        "whole model fastest here, measured first)")
    p.add_argument("-o", "--output", help="directory for model.safetensors and decompose.json")
    p.set_defaults(func=run)


def run(args) -> int:
    import dataclasses
    import math

    from rich.console import Console

    from torchslim.analysis import profile
    from torchslim.io import save_model
    import torchslim
    from torchslim import methods
    from torchslim.train import evaluate, fit

    spec = methods.get("decompose", args.method)
    opts = method_options(args, spec)
    model, input_size = load_model_from_args(args)
    data = load_data_from_args(args) if args.data else None
    if data is not None:
        input_size = data.input_size
        check_input_fits(model, input_size, f"{args.model} on {args.data}")
    if args.epochs and data is None:
        raise InvalidInputError("--finetune-epochs needs --data")
    rank_text = opts.get("rank", "vbmf")
    result: dict = {"model": args.model, "method": args.method, "rank": rank_text, "input_size": list(input_size)}
    if data is not None:
        result["before"] = evaluate(model, data.test)
    small = torchslim.decompose(model, spec.name, layers=args.layers, data=data if spec.needs_data else None,
                                input_size=input_size, progress=console.print, **opts)
    rep = torchslim.report_of(small)["decomposition"]
    if not args.no_latency:
        runtime = args.latency_runtime
        if runtime == "fastest":
            import torch

            from torchslim.runtimes import fastest_runtime

            runtime, _ = fastest_runtime(model.eval(), torch.randn(1, *input_size), threads=args.threads)
        rep.measure(threads=args.threads, runtime=runtime)
        result["latency_runtime"] = runtime
    p0, p1 = profile(model, input_size), profile(small, input_size)
    result.update(params_before=p0.params, params_after=p1.params, macs_before=p0.macs, macs_after=p1.macs,
                  size_ratio=p0.params / p1.params, macs_ratio=p0.macs / p1.macs)
    if data is not None:
        result["after"] = evaluate(small, data.test)
        if args.epochs:
            steps = args.max_steps_per_epoch
            if args.epochs < 1 and steps is None:
                steps = max(1, int(args.epochs * len(data.train)))
            cfg = fit_config_from_args(args, epochs=math.ceil(args.epochs))
            cfg = dataclasses.replace(cfg, max_steps_per_epoch=steps)
            from torchslim.distill import from_original

            res = fit(small, data.train, val_loader=data.val, config=cfg,
                      loss_fn=None if args.no_distill else from_original(model))
            result["finetune"] = {"epochs": args.epochs, "lr": cfg.lr, "max_steps": steps,
                                  "distill_from_original": not args.no_distill,
                                  "history": res.history}
            result["after_finetune"] = evaluate(small, data.test)
    result["report"] = rep.to_dict()
    Console(width=max(console.width, 160)).print(rep.table(f"{args.model}: {args.method}, rank {rank_text}"))
    line = (f"params {p0.params:,} -> {p1.params:,} ({result['size_ratio']:.2f}x), "
            f"MACs {p0.macs:,} -> {p1.macs:,} ({result['macs_ratio']:.2f}x)")
    for k in ("before", "after", "after_finetune"):
        if k in result:
            line += f"; top-1 {k.replace('_', ' ')} {result[k]['top1']:.2f} %"
    console.print(line)
    if args.output:
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        save_model(small, out / "model.safetensors", input_size=input_size,
                   metadata={"decompose": {k: v for k, v in result.items() if k != "report"}})
        tmp = out / "decompose.json.tmp"
        tmp.write_text(json.dumps(result, indent=2, default=str))
        tmp.replace(out / "decompose.json")
        console.print(f"-> {out / 'model.safetensors'}, {out / 'decompose.json'}")
    return 0

"""`torchslim auto MODEL --data NAME --target latency=0.5x --max-drop 1.0 -o DIR`: search per-layer actions."""
from __future__ import annotations

import json
from pathlib import Path

from torchslim.cli.common import (add_data_args, add_model_args, check_input_fits, console, load_data_from_args,
                                  load_model_from_args)
from torchslim.cli.train import add_fit_args, fit_config_from_args


def register(sub) -> None:
    p = sub.add_parser("auto", help="find per-layer compression actions that reach a target (latency, MACs...)")
    add_model_args(p)
    add_data_args(p, required=True)
    p.add_argument("--target", required=True, help="METRIC=FRACTIONx, METRIC in latency, macs, params, size, energy")
    p.add_argument("--max-drop", type=float, default=1.0, help="accuracy points the search may lose")
    p.add_argument("--runtime", default="onnxruntime", choices=["torch", "onnxruntime"], help="for latency targets")
    p.add_argument("--compressions", default="2,4", help="Tucker/SVD compression ratios to try per layer")
    p.add_argument("--eval-images", type=int, default=1000, help="validation images scoring each action")
    add_fit_args(p, epochs=1, lr=0.01)
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(func=run)


def run(args) -> int:
    import torch
    import yaml

    from torchslim.auto import Target, auto_compress, lowrank_actions
    from torchslim.io import save_model
    from torchslim.train import evaluate, fit

    target = Target.parse(args.target)
    data = load_data_from_args(args)
    model, _ = load_model_from_args(args)
    check_input_fits(model, data.input_size, args.model)
    compressions = tuple(float(v) for v in args.compressions.split(","))
    max_batches = max(1, args.eval_images // data.val.batch_size)
    result = auto_compress(
        model, lowrank_actions(model, data.input_size, compressions),
        evaluate=lambda m: evaluate(m, data.val, max_batches=max_batches)["top1"],
        example_input=next(iter(data.val))[0][:1], target=target, max_drop=args.max_drop, runtime=args.runtime,
        finetune=lambda m: fit(m, data.train, val_loader=data.val, config=fit_config_from_args(args)).history,
        log=console.print)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    save_model(result.model, out / "model.safetensors", input_size=data.input_size)
    recipe = {"name": "auto", "model": {"name": args.model}, "data": {"name": args.data},
              "stages": [dict(s, finetune={"epochs": args.epochs, "lr": args.lr}) for s in result.recipe_stages()]}
    (out / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    summary = {"target": vars(target), "base": {"metric": result.base.metric, "accuracy": result.base.accuracy},
               "metric": result.metric, "accuracy_before_finetune": result.accuracy_before_finetune,
               "accuracy": result.accuracy, "test": evaluate(result.model, data.test),
               "chosen": [f"{a.layer}: {a.name}" for a in result.chosen.actions],
               "path": [{"actions": len(p.actions), "metric": p.predicted_metric, "accuracy": p.predicted_accuracy}
                        for p in result.path],
               "measured": [{"layer": m.action.layer, "action": m.action.name, "metric": m.metric,
                             "accuracy": m.accuracy, "error": m.error} for m in result.measured]}
    (out / "auto.json").write_text(json.dumps(summary, indent=2))
    console.print(f"{target.metric}: {result.base.metric:.4g} -> {result.metric:.4g} "
                  f"({result.metric / result.base.metric:.2f}x); val top-1 {result.base.accuracy:.2f} -> "
                  f"{result.accuracy:.2f} %; {len(result.chosen.actions)} layers changed -> {out}")
    return 0

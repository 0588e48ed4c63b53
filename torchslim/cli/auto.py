"""`torchslim auto MODEL --data NAME --target latency=0.5x --max-drop 1.0 --actions prune,lowrank,quant -o DIR`."""
from __future__ import annotations

import json
from pathlib import Path

from torchslim.cli.common import (add_data_args, add_model_args, check_input_fits, console, load_data_from_args,
                                  load_model_from_args)
from torchslim.cli.train import add_fit_args, fit_config_from_args
from torchslim.errors import InvalidInputError



def register(sub) -> None:
    p = sub.add_parser("auto", help="find per-layer compression actions that reach a target (latency, MACs...)")
    add_model_args(p)
    add_data_args(p, required=True)
    p.add_argument("--target", required=True, help="METRIC=FRACTIONx, METRIC in latency, macs, params, size, energy")
    p.add_argument("--max-drop", type=float, default=1.0, help="accuracy points the search may lose")
    p.add_argument("--runtime", default="fastest", choices=["fastest", "torch", "onnxruntime", "openvino"],
                   help="where latency targets are measured (default: the installed runtime that runs the model "
                        "fastest here, measured first)")
    p.add_argument("--actions", default="prune,lowrank,quant",
                   help="candidate kinds: prune (channel groups), lowrank (Tucker-2/SVD per layer), quant (int8 "
                        "in ONNX Runtime or OpenVINO, for latency there and size targets)")
    p.add_argument("--prune-ratios", default="0.25,0.5", help="fractions of a group's channels a prune action removes")
    p.add_argument("--criterion", default="l1", help="prune criterion (a weight criterion: l1, l2, bn_scale)")
    p.add_argument("--compressions", default="2,4", help="Tucker/SVD compression ratios to try per layer")
    p.add_argument("--calib-images", type=int, default=256, help="train images calibrating int8")
    p.add_argument("--eval-images", type=int, default=1000, help="validation images scoring each action")
    p.add_argument("--best-effort", action="store_true",
                   help="if the target is out of reach within --max-drop, return the fastest point within it")
    add_fit_args(p, epochs=1, lr=0.01)
    p.add_argument("--no-distill", action="store_true",
                   help="fine-tune on the labels alone (default: KD from the original model, the recovery loss)")
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(func=run)


def _floats(text: str, flag: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise InvalidInputError(f"{flag} {text!r}: give comma-separated numbers, e.g. 0.25,0.5") from None


def summary_dict(result, *, test=None) -> dict:
    """auto.json: the per-action table, the predicted path and Pareto front, the checks and the choice."""
    def point(p):
        return {"actions": [f"{a.layer}: {a.name}" for a in p.actions], "metric": p.predicted_metric,
                "accuracy": p.predicted_accuracy}

    b = result.base
    return {"target": vars(result.target), "target_met": result.target_met, "verdict": result.verdict,
            "base": {"metric": b.metric, "accuracy": b.accuracy},
            "metric": result.metric, "ratio": result.metric / b.metric,
            "accuracy_before_finetune": result.accuracy_before_finetune,
            "accuracy_finetuned": result.accuracy_finetuned, "accuracy": result.accuracy, "test": test,
            "chosen": point(result.chosen), "stages": result.stages,
            "front": [point(p) for p in result.front], "checks": result.checks,
            "path": [{"actions": len(p.actions), "metric": p.predicted_metric, "accuracy": p.predicted_accuracy}
                     for p in result.path],
            "measured": [{"kind": m.action.kind, "layer": m.action.layer, "action": m.action.name,
                          "metric": m.metric, "ratio": m.metric / b.metric, "accuracy": m.accuracy,
                          "error": m.error} for m in result.measured]}


def run(args) -> int:
    import yaml
    from rich.table import Table

    from torchslim.auto import Target, auto_compress, build_actions
    from torchslim.io import save_model
    from torchslim.train import evaluate, fit

    target = Target.parse(args.target)
    data = load_data_from_args(args)
    model, _ = load_model_from_args(args)
    check_input_fits(model, data.input_size, args.model)
    kinds = tuple(k.strip() for k in args.actions.split(",") if k.strip())
    calib = data.calibration_batches(args.calib_images) if "quant" in kinds else None
    runtime, runtime_ms = args.runtime, {}
    if target.metric == "latency" and runtime == "fastest":
        from torchslim.runtimes import fastest_runtime

        runtime, runtime_ms = fastest_runtime(model.eval(), next(iter(data.val))[0][:1])
        console.print("latency measured on " + runtime + " (fastest here, fp32, 1 thread: "
                      + ", ".join(f"{k} {v:.3f} ms" for k, v in runtime_ms.items()) + ")", markup=False)
    actions = build_actions(model, data, target, kinds, runtime=runtime,
                            prune_ratios=_floats(args.prune_ratios, "--prune-ratios"), criterion=args.criterion,
                            compressions=_floats(args.compressions, "--compressions"), calib=calib,
                            calib_images=args.calib_images, log=console.print)
    max_batches = max(1, args.eval_images // data.val.batch_size)
    from torchslim.distill import from_original

    recovery_loss = None if args.no_distill else from_original(model)  # the original, before any action
    result = auto_compress(
        model, actions, evaluate=lambda m: evaluate(m, data.val, max_batches=max_batches)["top1"],
        example_input=next(iter(data.val))[0][:1], target=target, max_drop=args.max_drop, runtime=runtime,
        finetune=lambda m: fit(m, data.train, val_loader=data.val, config=fit_config_from_args(args),
                               loss_fn=recovery_loss).history,
        calib=calib, best_effort=args.best_effort, log=console.print)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    save_model(result.model, out / "model.safetensors", input_size=data.input_size)
    # the recipe's budget: the FitConfig fields a recipe budget takes (torchslim.recipe.Budget), as given
    from dataclasses import asdict

    from torchslim.recipe import Budget

    budget = {k: v for k, v in asdict(fit_config_from_args(args)).items()
              if k in Budget.model_fields and (v is not None or k in ("epochs", "lr"))}
    budget["distill_from_input"] = not args.no_distill
    if Path(args.model).exists():
        model_spec = {"path": str(Path(args.model).resolve())}
    else:
        model_spec = {"name": args.model, **({"pretrained": True} if args.pretrained else {}),
                      **({"weights": str(Path(args.weights).resolve())} if args.weights else {}),
                      **({"num_classes": args.num_classes} if args.num_classes else {}),
                      **({"kwargs": json.loads(args.model_kwargs)} if args.model_kwargs else {})}
    data_spec = {**({"path": data.source["path"]} if data.classes and not args.data.startswith("torchvision:")
                    else {"name": args.data}), "batch_size": args.batch_size,
                 **({"data_dir": str(Path(args.data_dir).resolve())} if args.data_dir else {}),
                 **({"limit_train": args.limit, "limit_eval": args.limit} if args.limit else {})}
    recipe = {"name": "auto", "seed": args.seed, "model": model_spec, "data": data_spec,
              "stages": result.recipe_stages(finetune=budget)}
    (out / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    summary = summary_dict(result, test=evaluate(result.model, data.test))
    if target.metric == "latency":
        summary["runtime"] = {"name": runtime, "setting": args.runtime, "fp32_ms": runtime_ms}
    (out / "auto.json").write_text(json.dumps(summary, indent=2))

    t = Table(title=f"predicted Pareto front ({target.metric}, val top-1 on {args.eval_images} images)")
    for col in ("actions", f"{target.metric} (x base)", "top-1"):
        t.add_column(col)
    for p in result.front:
        t.add_row(", ".join(f"{a.layer}: {a.name}" for a in p.actions) or "(base)",
                  f"{p.predicted_metric / result.base.metric:.3f}", f"{p.predicted_accuracy:.2f}")
    console.print(t)
    kinds_used = sorted({a.kind for a in result.chosen.actions})
    console.print(result.verdict if result.target_met else f"[yellow]{result.verdict}[/yellow]")
    console.print(f"chosen: {len(result.chosen.actions)} actions ({', '.join(kinds_used) or 'none'}); "
                  f"{target.metric}: {result.base.metric:.4g} -> {result.metric:.4g} "
                  f"({result.metric / result.base.metric:.2f}x); val top-1 {result.base.accuracy:.2f} -> "
                  f"{result.accuracy_before_finetune:.2f} (before fine-tuning) -> {result.accuracy:.2f} %; "
                  f"test top-1 {summary['test']['top1']:.2f} % -> {out} (auto.json, recipe.yaml)")
    return 0

"""`torchslim distill`: train a student to imitate a teacher (KD, attention transfer, FitNets hints)."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from torchslim.cli.common import LIMIT_HELP


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "distill", help="train a student model from a teacher (Hinton KD, attention transfer, hints)",
        description="Train STUDENT to imitate TEACHER on --data; writes DIR/model.safetensors and DIR/distill.json. "
                    "Example: torchslim distill --teacher resnet56 --teacher-pretrained --student resnet20 "
                    "--data cifar10 --epochs 30 --method kd at -o runs/kd")
    p.add_argument("--teacher", required=True, help="model name or saved torchslim model file")
    p.add_argument("--teacher-pretrained", action="store_true", help="load the teacher's reference checkpoint")
    p.add_argument("--teacher-weights", help="checkpoint file for a named teacher")
    p.add_argument("--student", required=True, help="model name (fresh init) or saved model file (e.g. a pruned model)")
    p.add_argument("--student-weights", help="checkpoint file for a named student")
    p.add_argument("--code", metavar="FILE.py:FACTORY",
                   help="the code of your own network, named again, for a saved teacher or student built from it")
    from torchslim import methods

    p.add_argument("--method", nargs="+", default=["kd"], choices=methods.names("distill"),
                   help="several add up; default kd")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adam", "adamw"])
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--max-steps", type=int, help="stop each epoch after this many batches (quick runs)")
    p.add_argument("--data", required=True, help="data set: digits, mnist or cifar10")
    p.add_argument("--data-dir", help="directory with <data>/{train,test}.npz")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--limit", type=int, help=LIMIT_HELP)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="auto")
    from torchslim.cli.train import add_precision_args

    add_precision_args(p)
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output directory")
    from torchslim.cli.options import add_method_options

    # temperature, alpha, beta, at_mode, cache_teacher, ...: the fields of DistillConfig (torchslim.methods)
    add_method_options(p, "distill", exclude=("checkpoint_dir",))
    p.set_defaults(func=run)


def _model(name: str, pretrained: bool, weights, data_dir, what: str, code=None):
    from torchslim.errors import InvalidInputError
    from torchslim.io import load_model
    from torchslim.models import create_model

    if Path(name).exists():
        if pretrained or weights:
            raise InvalidInputError(f"--{what} {name} is a saved model file; --{what}-weights/--{what}-pretrained "
                                    "apply to model names only")
        return load_model(name, code=code)
    return create_model(name, pretrained=pretrained, weights=weights, data_dir=data_dir)


def _check_classes(teacher, student, data, size) -> None:
    import torch

    from torchslim.errors import InvalidInputError

    x = torch.zeros(2, *size)
    for what, m in (("teacher", teacher), ("student", student)):
        try:
            with torch.no_grad():
                out = m.eval()(x)
        except Exception as e:
            raise InvalidInputError(f"the {what} does not run on {data.name} inputs of size {tuple(size)}: {e}") from None
        if out.ndim != 2 or out.shape[1] != data.num_classes:
            raise InvalidInputError(f"the {what} outputs {tuple(out.shape[1:])} on {data.name} inputs, which have "
                                    f"{data.num_classes} classes; distillation needs logits over the data's classes")


def _check_teacher_is_trained(top1: float, name: str, data, n: int) -> None:
    """A teacher at chance accuracy has nothing to teach: its soft targets are noise (a model name
    without --teacher-pretrained/--teacher-weights is a fresh random init). On a few test images a
    trained teacher can score near chance by luck: below 20 images a class it is a warning, not an error."""
    from torchslim.cli.common import console
    from torchslim.errors import InvalidInputError

    chance = 100.0 / data.num_classes
    if top1 < 1.5 * chance and n < 20 * data.num_classes:
        console.print(f"warning: the teacher {name} scores {top1:.2f} % top-1 on only {n} test images, near chance "
                      f"({chance:.1f} %): is it trained?")
    elif top1 < 1.5 * chance:
        raise InvalidInputError(
            f"the teacher {name} scores {top1:.2f} % top-1 on {data.name} test images, chance is {chance:.1f} %: "
            "it is untrained; give --teacher-pretrained, --teacher-weights FILE or a trained model file")


def run(args: argparse.Namespace) -> int:

    from torchslim.analysis import profile
    from torchslim.cli.common import console, load_data_from_args
    from torchslim.distill import DistillConfig, distill_fit
    from torchslim.io import save_model
    from torchslim.train import FitConfig, evaluate

    teacher = _model(args.teacher, args.teacher_pretrained, args.teacher_weights, args.data_dir, "teacher", args.code)
    student = _model(args.student, False, args.student_weights, args.data_dir, "student", args.code)
    from torchslim import methods
    from torchslim.cli.options import method_options

    options = method_options(args, methods.get("distill", args.method[0]))  # every method reads DistillConfig
    data = load_data_from_args(args, augment=not options.get("cache_teacher", False))
    size = data.input_size
    cfg = DistillConfig(
        fit=FitConfig(epochs=args.epochs, lr=args.lr, optimizer=args.optimizer, weight_decay=args.weight_decay,
                      device=args.device, max_steps_per_epoch=args.max_steps, progress=True,
                      precision=args.precision, channels_last=args.channels_last),
        checkpoint_dir=str(Path(args.output) / "checkpoint"), **options)
    _check_classes(teacher, student, data, size)
    t_eval = evaluate(teacher, data.test)
    t_acc = t_eval["top1"]
    _check_teacher_is_trained(t_acc, args.teacher, data, t_eval["n"])
    s_before = evaluate(student, data.test)["top1"]
    console.print(f"teacher top-1 {t_acc:.2f} %, student before {s_before:.2f} %; methods {' + '.join(args.method)}")
    result = distill_fit(student, teacher, data, args.method, cfg)
    s_after = evaluate(student, data.test)["top1"]
    tp, sp = profile(teacher, size), profile(student, size)
    figures = {
        "teacher": args.teacher, "student": args.student, "methods": args.method, "data": args.data,
        "teacher_top1": t_acc, "student_top1_before": s_before, "student_top1": s_after,
        "teacher_macs": tp.macs, "student_macs": sp.macs, "teacher_params": tp.params, "student_params": sp.params,
        "config": {k: v for k, v in vars(args).items() if k != "func"}, "history": result.fit.history,
    }
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    save_model(student.cpu().eval(), out / "model.safetensors", input_size=size,
               metadata={"distill": {k: figures[k] for k in ("teacher", "methods", "data", "student_top1")}})
    tmp = out / "distill.json.tmp"
    tmp.write_text(json.dumps(figures, indent=2, default=str))
    os.replace(tmp, out / "distill.json")
    console.print(f"student top-1 {s_before:.2f} % -> {s_after:.2f} % (teacher {t_acc:.2f} %); "
                  f"{sp.macs / 1e6:.1f} M MACs vs {tp.macs / 1e6:.1f} M; wrote {out / 'model.safetensors'}")
    return 0

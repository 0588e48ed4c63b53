"""`torchslim quantize MODEL --method kmeans --bits conv=8,fc=5 --data mnist -o DIR`.

Methods: int8-ptq (calibration; by default one QDQ model run in OpenVINO and ONNX Runtime, the faster
kept, in seconds; --compare also builds the ONNX Runtime QOperator and torch x86 int8 paths and evaluates
every path), int8-qat, int8-pt2e (a torch.export int8 program, DIR/model.pt2, for torch.compile; needs
torchao), kmeans, binary, ternary. Writes
DIR/model.safetensors (int8: the chosen path's model; ORT models carry their ONNX bytes), for kmeans,
binary and ternary also DIR/model.slim, and DIR/quantize.json with the figures.
"""
from __future__ import annotations

import json
from pathlib import Path

from torchslim.cli.common import (add_data_args, add_model_args, check_input_fits, console, load_data_from_args,
                                  load_model_from_args)
from torchslim.cli.options import add_method_options
from torchslim.cli.train import add_fit_args, fit_config_from_args
from torchslim.quant import parse_bits


def register(sub) -> None:
    from torchslim import methods
    from torchslim.quant import OBSERVERS, PATHS

    p = sub.add_parser("quantize", help="int8 (PTQ/QAT, real int8 execution), k-means, binary/ternary weights",
                       description=__doc__.splitlines()[0])
    add_model_args(p)
    add_data_args(p, required=True)
    add_fit_args(p, epochs=1, lr=1e-3)
    p.add_argument("--method", default="int8-ptq", choices=methods.names("quantize"))
    p.add_argument("--bits", help="kmeans bits per kind or layer, e.g. conv=8,fc=5 (default)")
    p.add_argument("--observer", default="mse", choices=OBSERVERS.names(), help="int8 activation range observer")
    p.add_argument("--path", default="auto", choices=["auto", *PATHS], help="int8 execution path (auto: fastest correct)")
    p.add_argument("--compare", action="store_true",
                   help="int8: build and evaluate every execution path and the fake-quant reference (minutes; "
                        "default: the QDQ model in OpenVINO and ONNX Runtime, only the faster one evaluated)")
    p.add_argument("--calib-images", type=int, default=256)
    p.add_argument("--threads", type=int, help="intra-op threads for latency measurements")
    # the other options of every method, from its config (torchslim.methods)
    add_method_options(p, "quantize", exclude=("bits", "observer", "path", "compare", "calib_images", "threads",
                                                "epochs", "mode"))
    p.add_argument("-o", "--output", required=True, help="output directory")
    p.set_defaults(func=run)


def run(args) -> int:
    from torchslim import methods
    from torchslim.cli.options import method_options
    from torchslim.quant import quantize

    data = load_data_from_args(args)
    model, size = load_model_from_args(args)
    check_input_fits(model, data.input_size, f"{args.model} on {args.data}")
    out = Path(args.output)  # made once there is something to write: a failure leaves no empty folder
    spec = methods.get("quantize", args.method)  # an alias (int8) runs as the method it names (int8-ptq)
    generated = method_options(args, spec, spec.accepted_names())
    # this command's own options and the generated ones, each routed to the config field (or the
    # nested config field, int8-qat's int8) that takes it; the others belong to other methods
    values = {"observer": args.observer, "path": args.path, "calib_images": args.calib_images,
              "threads": args.threads, "compare": args.compare, "epochs": args.epochs,
              "fit": fit_config_from_args(args), **generated}
    if args.bits:
        values["bits"] = parse_bits(args.bits)
    q = quantize(model, spec.name, data=data, eval_loader=data.test, **spec.route(values))
    figures: dict = {"model": args.model, "data": args.data, "method": spec.name}
    SAVE[spec.output](q, model, data, size, out, figures, args)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "quantize.json.tmp"
    tmp.write_text(json.dumps(figures, indent=2, default=str))
    tmp.replace(out / "quantize.json")
    return 0


# ---------------------------------------------------------------- report and save, by what the method returns
def _int8(q, model, data, size, out, figures, args) -> None:
    """A model run by an int8 runtime: the execution-path table; saved when ONNX Runtime/OpenVINO runs it."""
    from rich.table import Table

    from torchslim.io import save_model

    rep = figures["int8"] = q.quant_report
    t = Table(title=f"{args.model}: int8 execution paths (batch {rep['batch_size']}, {rep['threads']} threads)")
    for c in ("path", "median ms", "top-1", "rel. err", "correct"):
        t.add_column(c)
    for name, r in rep["paths"].items():
        t.add_row(name + (" *" if name == rep["chosen"] else ""), f"{r.get('median_ms', float('nan')):.2f}",
                  f"{r.get('top1', float('nan')):.2f}", f"{r.get('rel_l2_error', float('nan')):.3f}",
                  str(r.get("correct", r.get("error", ""))))
    console.print(t)
    vs = {"torch": "torch", "ort": "ONNX Runtime", "ov": "OpenVINO"}
    console.print(f"chosen: {rep['chosen']} (" + ", ".join(f"{rep[f'speedup_vs_fp32_{k}']:.2f}x vs fp32 {v}" for k, v
                                                          in vs.items() if f"speedup_vs_fp32_{k}" in rep)
                  + f"); fastest overall: {rep['fastest_overall']}")
    if rep["chosen"].startswith(("ort", "ov")):
        save_model(q, out / "model.safetensors", input_size=size, metadata={"int8": rep["chosen"]})
    else:
        console.print("torch x86 int8 modules are not saved by torchslim.io; use --path ort-qdq to save")


def _program(q, model, data, size, out, figures, args) -> None:
    """A torch.export program: saved as .pt2, run int8 under torch.compile."""
    import torch

    from torchslim.train import evaluate

    figures["test"], figures["test_before"] = evaluate(q, data.test), evaluate(model, data.test)
    x = torch.zeros(2, *size)
    out.mkdir(parents=True, exist_ok=True)
    torch.export.save(torch.export.export(q, (x,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},)),
                      out / "model.pt2")
    console.print(f"top-1 {figures['test_before']['top1']:.2f} % -> {figures['test']['top1']:.2f} % (eager "
                  f"reference numerics)  ->  {out / 'model.pt2'} (torch.export.load(...).module(), torch.compile)")


def _model(q, model, data, size, out, figures, args) -> None:
    from torchslim.io import save_model
    from torchslim.train import evaluate

    figures["test"] = evaluate(q, data.test, progress="test after")
    figures["test_before"] = evaluate(model, data.test, progress="test before")
    save_model(q, out / "model.safetensors", input_size=size)
    console.print(f"top-1 {figures['test_before']['top1']:.2f} % -> {figures['test']['top1']:.2f} %  ->  {out}")


def _coded(q, model, data, size, out, figures, args) -> None:
    """Shared centroids or binary/ternary signs: also the coded file (Huffman/CSR centroids, bit-packed signs)."""
    from torchslim import encode

    _model(q, model, data, size, out, figures, args)
    encode.save(q, out / "model.slim", input_size=size)
    rep = figures["storage"] = encode.storage_report(out / "model.slim")
    console.print(f".slim: {rep['file_bytes']} bytes, {rep['compression']:.1f}x smaller than fp32 parameters")


SAVE = {"int8": _int8, "program": _program, "model": _model, "coded": _coded}  # MethodSpec.output -> how

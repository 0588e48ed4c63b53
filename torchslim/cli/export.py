"""`torchslim export MODEL --format onnx|openvino -o FILE`: export any model and verify it in ONNX Runtime or
OpenVINO (IR: FILE.xml + FILE.bin)."""
from __future__ import annotations

from torchslim.cli.common import add_model_args, console, print_json


def register(sub) -> None:
    p = sub.add_parser("export", help="export a model (name or saved torchslim file) to ONNX or OpenVINO IR, checked "
                                      "in ONNX Runtime / OpenVINO",
                       description="Export MODEL to ONNX or OpenVINO IR (batch dimension dynamic), then run the file "
                                   "in ONNX Runtime or OpenVINO on a batch of random inputs and compare with "
                                   "PyTorch's outputs; fails (exit 2) when they differ beyond the tolerances.")
    add_model_args(p)
    p.add_argument("--format", default="onnx", choices=["onnx", "openvino"],
                   help="output format: onnx, or openvino (IR: FILE.xml and FILE.bin)")
    p.add_argument("-o", "--output", metavar="FILE", help="output file (default: <model>.onnx or <model>.xml)")
    p.add_argument("--rtol", type=float, default=1e-3, help="relative tolerance of the check (default 1e-3)")
    p.add_argument("--atol", type=float, default=1e-4,
                   help="absolute tolerance of the check (default 1e-4; int8 models need more, e.g. 0.05)")
    p.add_argument("--check-batch", type=int, default=4, help="batch size of the check (tests the dynamic batch)")
    p.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime / OpenVINO check")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    import torch

    from torchslim.cli.common import check_input_fits, load_model_from_args, output_folder
    from torchslim.errors import TorchslimError, UnsupportedModelError
    from torchslim.onnx_export import to_onnx, verify_onnx
    from torchslim.openvino_export import to_openvino, verify_openvino

    model, size = load_model_from_args(args)
    model = model.cpu().eval()
    check_input_fits(model, size, args.model)
    openvino = args.format == "openvino"
    export, verify, runtime = (to_openvino, verify_openvino, "OpenVINO") if openvino else (to_onnx, verify_onnx,
                                                                                             "ONNX Runtime")
    out = Path(args.output or f"{Path(args.model).stem.replace(':', '_')}.{'xml' if openvino else 'onnx'}")
    if openvino:
        out = out.with_suffix(".xml")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(max(args.check_batch, 1), *size, generator=g)
    with output_folder(out.parent):
        try:
            export(model, x[:1], out)
        except TorchslimError:
            raise
        except Exception as e:  # the exporter's own errors: one line naming the model and the cause
            out.unlink(missing_ok=True)
            first = (str(e).strip().splitlines() or [""])[0][:300]
            raise UnsupportedModelError(f"{args.model} cannot be exported to {'OpenVINO' if openvino else 'ONNX'}: "
                                        f"{type(e).__name__}: {first}") from e
    files = [out, out.with_suffix(".bin")] if openvino else [out]
    result = {"model": args.model, "format": args.format, "file": str(out),
              "bytes": sum(f.stat().st_size for f in files), "input_size": list(size)}
    if openvino:
        result["weights_file"] = str(files[1])
    if not args.no_check:
        result["check"] = verify(model, out, x, rtol=args.rtol, atol=args.atol)
    if args.json:
        print_json(result)
    else:
        msg = f"{out} ({result['bytes']:,} bytes)"
        if "check" in result:
            c = result["check"]
            msg += (f"; {runtime} matches PyTorch on a batch of {c['batch']}: max |diff| {c['max_abs_diff']:.2e} "
                    f"(atol {c['atol']}, rtol {c['rtol']})")
        console.print(msg, markup=False)
    return 0

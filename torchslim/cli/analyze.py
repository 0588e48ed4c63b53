"""`torchslim analyze MODEL`: the per-layer table and totals; `--latency` adds measured latency."""
from __future__ import annotations

from torchslim.cli.common import add_model_args, check_input_fits, console, load_model_from_args, print_json


def register(sub) -> None:
    p = sub.add_parser("analyze", help="per-layer parameters, MACs, bytes and activation memory")
    add_model_args(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--latency", action="store_true", help="also measure latency (torch and onnxruntime)")
    p.add_argument("--batch-size", type=int, default=1, help="batch for the latency measurement")
    p.add_argument("--threads", type=int, help="threads for the latency measurement")
    p.add_argument("--max-rows", type=int, help="show at most this many layers")
    p.set_defaults(func=run)


def run(args) -> int:
    from torchslim.analysis import measure_latency, profile, saved_size_bytes
    from torchslim.report.format import human

    model, input_size = load_model_from_args(args)
    check_input_fits(model, input_size, args.model)
    prof = profile(model, input_size)
    out = prof.to_dict() | {"model": args.model, "size_on_disk_bytes": saved_size_bytes(model)}
    if args.latency:
        out["latency"] = [measure_latency(model, input_size=input_size, batch_size=args.batch_size,
                                          runtime=rt, threads=args.threads).to_dict()
                          for rt in ("torch", "onnxruntime")]
    if args.json:
        print_json(out)
        return 0
    console.print(prof.table(title=f"{args.model} @ {'x'.join(map(str, input_size))}", max_rows=args.max_rows))
    console.print(f"parameters {human(prof.params)}   MACs {human(prof.macs)}   "
                  f"size on disk {human(out['size_on_disk_bytes'], 'B')}")
    for lat in out.get("latency", []):
        frac = lat["fraction_of_peak"]
        console.print(f"latency {lat['runtime']:<12} batch {lat['batch_size']}: median {lat['median_ms']:.2f} ms "
                      f"(p10 {lat['p10_ms']:.2f}, p90 {lat['p90_ms']:.2f}); "
                      f"{lat['achieved_gmacs']:.1f} GMAC/s = {frac:.0%} of this CPU's peak GEMM rate")
    return 0

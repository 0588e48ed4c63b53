"""`torchslim analyze MODEL`: the per-layer table and totals; `--latency` adds measured latency."""
from __future__ import annotations

from torchslim.cli.common import add_model_args, check_input_fits, console, load_model_from_args, print_json


def register(sub) -> None:
    p = sub.add_parser("analyze", help="per-layer parameters, MACs, bytes and activation memory")
    add_model_args(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--latency", action="store_true",
                   help="also measure latency on every installed runtime (torch, onnxruntime, openvino)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                   help="latency precision: bf16 where the runtime and the CPU have it, else fp32 (noted)")
    p.add_argument("--batch-size", type=int, default=1, help="batch for the latency measurement")
    p.add_argument("--threads", type=int, help="threads for the latency measurement")
    p.add_argument("--max-rows", type=int, help="show at most this many layers")
    p.add_argument("--energy", action="store_true",
                   help="add the per-layer energy estimate (Yang et al. / Eyeriss model, Horowitz 45 nm costs)")
    p.set_defaults(func=run)


def run(args) -> int:
    from torchslim.analysis import measure_latency, profile, saved_size_bytes
    from torchslim.report.format import human
    from torchslim.runtimes import installed_runtimes

    model, input_size = load_model_from_args(args)
    check_input_fits(model, input_size, args.model)
    prof = profile(model, input_size)
    out = prof.to_dict() | {"model": args.model, "size_on_disk_bytes": saved_size_bytes(model)}
    energy = None
    if args.energy:
        from torchslim.analysis import estimate_energy

        energy = estimate_energy(prof)
        out["energy"] = [e.to_dict() for e in energy]
        out["totals"]["energy_pj"] = sum(e.total_pj for e in energy)
    if args.latency:
        out["latency"] = [measure_latency(model, input_size=input_size, batch_size=args.batch_size,
                                          runtime=rt, precision=args.precision, threads=args.threads).to_dict()
                          for rt in installed_runtimes()]
    if args.json:
        print_json(out)
        return 0
    table = prof.table(title=f"{args.model} @ {'x'.join(map(str, input_size))}", max_rows=args.max_rows)
    if energy is not None:
        shown = energy[: args.max_rows] if args.max_rows else energy
        cells = [f"{e.total_pj / 1e6:.2f}" for e in shown] + ([""] if args.max_rows and len(energy) > len(shown) else [])
        cells += [""] * (len(table.rows) - 1 - len(cells)) + [f"[bold]{out['totals']['energy_pj'] / 1e6:.2f}"]
        table.add_column("energy µJ", justify="right")
        table.columns[-1]._cells = cells
    console.print(table)
    console.print(f"parameters {human(prof.params)}   MACs {human(prof.macs)}   "
                  f"size on disk {human(out['size_on_disk_bytes'], 'B')}")
    for lat in out.get("latency", []):
        frac = lat["fraction_of_peak"]
        console.print(f"latency {lat['runtime']:<12} {lat['precision']} batch {lat['batch_size']}: median "
                      f"{lat['median_ms']:.2f} ms (p10 {lat['p10_ms']:.2f}, p90 {lat['p90_ms']:.2f}); "
                      f"{lat['achieved_gmacs']:.1f} GMAC/s = {frac:.0%} of this CPU's peak GEMM rate"
                      + (f" ({lat['note']})" if lat["note"] else ""), markup=False)
    if out.get("latency"):
        flags = out["latency"][0]["machine"]["cpu_flags"]
        console.print(f"CPU: {out['latency'][0]['machine']['cpu']}; flags {' '.join(flags) or '-'} (int8 and bf16 units)",
                      markup=False)
    return 0

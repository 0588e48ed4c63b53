"""`torchslim encode MODEL -o model.slim`: write a model as a Huffman/CSR-coded, checksummed `.slim` file
and print the per-layer storage accounting (original / pruned / quantized / coded bytes, bits per weight
next to the entropy)."""
from __future__ import annotations

import json
from pathlib import Path

from torchslim.cli.common import add_model_args, console, load_model_from_args


def register(sub) -> None:
    p = sub.add_parser("encode", help="write a .slim file (Huffman-coded k-means, bit-packed binary/ternary weights) with storage accounting",
                       description=__doc__.splitlines()[0])
    add_model_args(p)
    p.add_argument("-o", "--output", required=True, help="the .slim file to write (or a directory)")
    p.add_argument("--json", action="store_true", help="print the storage report as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from rich.table import Table

    from torchslim import encode

    model, size = load_model_from_args(args)
    out = Path(args.output)
    if out.suffix != ".slim":
        out = out / "model.slim"
    encode.save(model, out, input_size=size)
    rep = encode.storage_report(out)
    if args.json:
        print(json.dumps(rep, indent=2, default=str))
        return 0
    if not rep["layers"]:
        console.print("no k-means shared or binary/ternary layers: weights stored raw "
                      "(run `torchslim quantize --method kmeans|binary|ternary` first)")
    t = Table(title=f"{out}: storage per layer (bytes)")
    for c in ("layer", "weights", "nonzero", "fp32", "pruned", "quantized", "coded", "idx bits/w", "entropy"):
        t.add_column(c, justify="right")
    for n, L in rep["layers"].items():  # low-bit layers: bits per weight of their sign/trit codes
        bits, ent = (L["index_bits_per_weight"], L["index_entropy_bits"]) if "index_bits_per_weight" in L else (
            L["code_bits_per_weight"], L["symbol_entropy_bits"])
        t.add_row(n + (f" ({L['mode']}, {L['coding']})" if "mode" in L else ""), str(L["numel"]), str(L["nonzero"]),
                  str(L["bytes_original"]), f"{L['bytes_pruned']:.0f}", f"{L['bytes_quantized']:.0f}",
                  str(L["bytes_coded"]), f"{bits:.2f}", f"{ent:.2f}")
    console.print(t)
    console.print(f"{out}: {rep['file_bytes']} bytes, {rep['compression']:.1f}x smaller than the fp32 parameters "
                  f"({rep['fp32_param_bytes']} bytes)")
    return 0

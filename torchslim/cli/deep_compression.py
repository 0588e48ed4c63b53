"""`torchslim deep-compression MODEL --data mnist -o DIR`: prune -> retrain -> k-means -> retrain
centroids -> Huffman-coded DIR/model.slim (Han et al. 2016); accuracy and storage after every stage in
DIR/deep_compression.json."""
from __future__ import annotations

import json
from pathlib import Path

from torchslim.cli.common import (add_data_args, add_model_args, check_input_fits, console, load_data_from_args,
                                  load_model_from_args)
from torchslim.cli.train import add_fit_args, fit_config_from_args


def register(sub) -> None:
    p = sub.add_parser("deep-compression", help="prune + k-means + Huffman (.slim), with retraining",
                       description=__doc__.splitlines()[0])
    add_model_args(p)
    add_data_args(p, required=True)
    add_fit_args(p, epochs=1, lr=0.01)
    p.add_argument("--sparsity", type=float, default=0.9, help="fraction of weights pruned")
    p.add_argument("--layer-sparsity", help='per-layer fractions as JSON, e.g. \'{"1": 0.92, "3": 0.91}\'')
    p.add_argument("--rounds", type=int, default=3, help="iterative pruning rounds (each retrains --epochs)")
    p.add_argument("--bits", default="conv=8,fc=5", help="k-means bits per kind or layer")
    p.add_argument("--kmeans-epochs", type=int, default=1, help="centroid fine-tuning epochs")
    p.add_argument("-o", "--output", required=True, help="output directory")
    p.set_defaults(func=run)


def run(args) -> int:
    from dataclasses import replace

    from torchslim.quant import parse_bits
    from torchslim.errors import InvalidInputError
    from torchslim.io import save_model
    from torchslim.quant.deep_compression import DeepCompressionConfig, deep_compression

    data = load_data_from_args(args)
    model, size = load_model_from_args(args)
    check_input_fits(model, data.input_size, f"{args.model} on {args.data}")
    sparsity = args.sparsity
    if args.layer_sparsity:
        try:
            sparsity = {str(k): float(v) for k, v in json.loads(args.layer_sparsity).items()}
        except (ValueError, AttributeError) as e:
            raise InvalidInputError(f"--layer-sparsity must be a JSON object of layer: fraction ({e})") from None
    fc = fit_config_from_args(args)
    cfg = DeepCompressionConfig(sparsity=sparsity, prune_rounds=args.rounds, prune_epochs=args.epochs,
                                bits=parse_bits(args.bits), kmeans_epochs=args.kmeans_epochs,
                                fit=replace(fc, weight_decay=0.0))
    out = Path(args.output)
    q, rep = deep_compression(model, data, cfg, output=out)
    save_model(q, out / "model.safetensors", input_size=size)
    for name, s in rep["stages"].items():
        console.print(f"{name:>14}: top-1 {s.get('top1', float('nan')):.2f} %")
    st = rep["storage"]
    console.print(f"{out / 'model.slim'}: {st['file_bytes']} bytes, {rep['compression']:.1f}x smaller than fp32 "
                  f"({st['fp32_param_bytes']} bytes)")
    tmp = out / "deep_compression.json.tmp"
    tmp.write_text(json.dumps(rep, indent=2, default=str))
    tmp.replace(out / "deep_compression.json")
    return 0

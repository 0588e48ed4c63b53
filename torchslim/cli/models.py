"""`torchslim models [PATTERN]`: the model names torchslim builds."""
from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("models", help="list model names (own reference models, torchvision:*, timm:*)")
    p.add_argument("pattern", nargs="?", default="*", help="glob, e.g. 'resnet*', 'torchvision:mobile*' or 'timm:mixnet*'")
    p.set_defaults(func=run)


def run(args) -> int:
    from torchslim.models import MODELS, list_models

    names = list_models(args.pattern)
    if not names:
        print(f"no model matches {args.pattern!r}; `torchslim models` lists them all", file=sys.stderr)
        return 1
    print(f"{'name':<32} {'input':<9} {'data':<8} {'pretrained':<10} description")
    for name in names:
        if name in MODELS:
            e = MODELS.get(name)
            doc = (e.build.__doc__ or "").strip().splitlines()[0] if e.build.__doc__ else ""
            print(f"{name:<32} {'x'.join(map(str, e.input_size)):<9} {e.dataset or '':<8} "
                  f"{'yes' if e.pretrained else 'no':<10} {doc}")
        else:  # torchvision's zoo: torchslim never downloads its weights (--weights FILE loads a local copy)
            size = "3x299x299" if name.endswith("inception_v3") else "3x224x224"
            print(f"{name:<32} {size:<9} {'imagenet':<8} {'no':<10} torchvision model, random init")
    return 0

"""`torchslim models [PATTERN]`: the model names torchslim builds."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("models", help="list model names (own reference models, torchvision:*, timm:*)")
    p.add_argument("pattern", nargs="?", default="*", help="glob, e.g. 'resnet*', 'torchvision:mobile*' or 'timm:mixnet*'")
    p.set_defaults(func=run)


def run(args) -> int:
    from torchslim.models import MODELS, list_models

    for name in list_models(args.pattern):
        if name in MODELS:
            e = MODELS.get(name)
            doc = (e.build.__doc__ or "").strip().splitlines()[0] if e.build.__doc__ else ""
            print(f"{name:<16} {'x'.join(map(str, e.input_size)):<9} {e.dataset or '':<8} {doc}")
        else:
            print(name)
    return 0

"""Entry point: `torchslim COMMAND ...`. Bad input prints one line and exits 2 (`--debug` for tracebacks)."""
from __future__ import annotations

import argparse
import functools
import importlib
import pkgutil
import sys

from torchslim.errors import TorchslimError

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    import torchslim
    import torchslim.cli as pkg

    parser = argparse.ArgumentParser(prog="torchslim", description=torchslim.__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"torchslim {torchslim.__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    from torchslim.cli.common import HelpFormatter

    # every subcommand's help shows its defaults (a command may still pass its own formatter_class)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND",
                                parser_class=functools.partial(argparse.ArgumentParser, formatter_class=HelpFormatter))
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if info.name in ("main", "common"):
            continue
        module = importlib.import_module(f"torchslim.cli.{info.name}")
        if hasattr(module, "register"):
            module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("torchslim: interrupted", file=sys.stderr)
        return 130
    except (TorchslimError, FileNotFoundError, PermissionError, IsADirectoryError) as e:
        if args.debug:
            raise
        print(f"torchslim {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())

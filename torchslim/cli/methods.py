"""`torchslim methods [FAMILY [NAME]]`: the method table, or one method's options with their defaults."""
from __future__ import annotations

from torchslim.cli.common import console


def register(sub) -> None:
    from torchslim import methods

    p = sub.add_parser("methods", help="list the compression methods (the table every command reads)",
                       description=__doc__.splitlines()[0])
    p.add_argument("family", nargs="?", choices=methods.FAMILIES, help="one family only")
    p.add_argument("name", nargs="?", help="one method: its config, code, paper and options")
    p.set_defaults(func=run)


def run(args) -> int:
    from rich.table import Table

    from torchslim import methods

    if args.name:
        s = methods.get(args.family, args.name)
        console.print(f"[bold]{s.key}[/bold]{' (aliases: ' + ', '.join(s.aliases) + ')' if s.aliases else ''}: "
                      f"torchslim.{s.verb}; config {s.config.__module__}.{s.config.__name__}; code {s.code}; "
                      f"docs {s.docs}",
                      markup=True)
        console.print(f"paper: {s.paper}", markup=False)
        console.print(f"needs data: {s.needs_data}; needs a fine-tuning budget: {s.needs_budget}; "
                      f"in place: {s.inplace}; returns: {s.output}", markup=False)
        t = Table(title="options")
        for c in ("option", "default", "help"):
            t.add_column(c)
        for o in s.options():
            t.add_row(o.name, repr(o.default), o.help)
        console.print(t)
        return 0
    t = Table(title="torchslim methods (torchslim/methods.py)")
    for c in ("family", "method", "aliases", "config", "data", "code"):
        t.add_column(c)
    for s in methods.methods(args.family):
        t.add_row(s.family, s.name, ", ".join(s.aliases), s.config.__name__, "yes" if s.needs_data else "", s.code)
    console.print(t)
    return 0

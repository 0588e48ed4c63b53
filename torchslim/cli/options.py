"""Command-line options generated from the method table: one `--field` per option of a family's configs.

A command calls `add_method_options(parser, family)` once; `method_options(args, spec)` gives back the
options the user set, checked against the chosen method's config (an option of another method is one
clear error). Help text and defaults come from the config dataclasses (torchslim.methods), so the CLI
keeps no list of its own.
"""
from __future__ import annotations

import argparse
import json

from torchslim.errors import InvalidInputError

PREFIX = "method_opt_"  # argparse dests of generated options
# fields that are not command-line values (objects, functions, the training budget: its own flags)
NOT_ON_CLI = {"fit", "filter_fn", "callbacks", "eval_fn", "costs", "int8", "options", "progress", "metadata"}


def _parse(type_text: str):
    def parse(text: str):
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        if isinstance(value, str) and "tuple" in type_text and "," in value:
            value = tuple(v.strip() for v in value.split(",") if v.strip())
        if isinstance(value, list) and "tuple" in type_text:
            value = tuple(value)
        return value
    return parse


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _defaults(entries) -> str:
    """The methods' defaults ("" when unset: None / False are not worth a line)."""
    values: dict[str, list[str]] = {}
    for spec, opt in entries:
        if opt.default is None or opt.default is False:
            continue
        text = opt.default if isinstance(opt.default, str) else repr(opt.default)
        values.setdefault(text, []).append(spec.name)
    if not values:
        return ""
    if len(values) == 1 and sum(map(len, values.values())) == len(entries):
        return f" (default: {next(iter(values))})"
    return " (default: " + "; ".join(f"{', '.join(m)}: {v}" for v, m in values.items()) + ")"


def add_method_options(parser: argparse.ArgumentParser, family: str, *, exclude=(), title: str | None = None) -> None:
    """One option per field of the family's method configs (a field a command already has as an option
    of its own, e.g. --epochs, is reached as --method-FIELD)."""
    from torchslim import methods

    fields: dict[str, list] = {}
    for spec in methods.methods(family):
        for opt in spec.options():
            if opt.name not in NOT_ON_CLI and opt.name not in exclude and "Callable" not in opt.type and "Config" not in opt.type:
                fields.setdefault(opt.name, []).append((spec, opt))
    group = parser.add_argument_group(title or f"{family} method options (each applies to the methods it names)")
    taken = set(parser._option_string_actions)
    for name, entries in sorted(fields.items()):
        flag = _flag(name) if _flag(name) not in taken else _flag(f"method_{name}")
        opt = entries[0][1]
        which = "" if len(entries) == len(methods.methods(family)) else \
            f"[{', '.join(sorted(s.name for s, _ in entries))}] "
        help_text = f"{which}{opt.help}{_defaults(entries)}".replace("%", "%%")
        if opt.type.replace(" ", "") in ("bool",):
            group.add_argument(flag, dest=PREFIX + name, action=argparse.BooleanOptionalAction, default=None,
                               help=help_text)
        else:
            group.add_argument(flag, dest=PREFIX + name, type=_parse(opt.type), default=None, metavar="VALUE",
                               help=help_text)


def given(args) -> dict:
    """The generated options the user set: {field: value}."""
    return {k[len(PREFIX):]: v for k, v in vars(args).items() if k.startswith(PREFIX) and v is not None}


def method_options(args, spec) -> dict:
    """The options set on the command line for `spec`'s method; one that does not apply fails."""
    values = given(args)
    wrong = sorted(set(values) - spec.option_names())
    if wrong:
        raise InvalidInputError(f"{', '.join(_flag(w) for w in wrong)} does not apply to {spec.family} method "
                                f"{spec.name!r}; its options: {', '.join(sorted(spec.option_names() - NOT_ON_CLI))}")
    return values

"""Command-line options generated from the method table: one `--field` per option of a family's configs.

A command calls `add_method_options(parser, family)` once; `method_options(args, spec)` gives back the
options the user set, checked against the chosen method's config (an option of another method is one
clear error). Help text and defaults come from the config dataclasses (torchslim.methods), so the CLI
keeps no list of its own.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from torchslim.errors import InvalidInputError

PREFIX = "method_opt_"  # argparse dests of generated options
TUPLES = "method_tuple_fields"  # the generated options that take several words
# fields that are not command-line values (objects, functions, the training budget: its own flags)
NOT_ON_CLI = {"fit", "filter_fn", "callbacks", "eval_fn", "costs", "int8", "options", "progress", "metadata"}


def _parse(type_text: str):
    """A command-line word as the field's value: JSON where it parses (0.3, true, {"a": 1}), a JSON file's
    contents for a dict field given a path (--layer-ratios sensitivity.json), else the text."""
    def parse(text: str):
        if "dict" in type_text and text.endswith(".json"):
            try:
                return json.loads(Path(text).read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise argparse.ArgumentTypeError(f"cannot read JSON file {text!r}: {e}") from None
        if _TEXT.fullmatch(type_text.replace(" ", "")) and not text.lstrip().startswith("["):
            return text  # a name or pattern stays text even when it reads as a number ("--skip 3")
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    return parse


_TEXT = re.compile(r"(str|tuple\[str,\.\.\.\])(\|None)?")  # field types whose words are text


def _as_tuple(words: list) -> tuple:
    """`--skip a b`, `--skip a,b` and `--skip '["a", "b"]'` all give ("a", "b")."""
    out: list = []
    for w in words:
        if isinstance(w, list):
            out += w
        elif isinstance(w, str):
            out += [v.strip() for v in w.split(",") if v.strip()]
        else:
            out.append(w)
    return tuple(out)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _defaults(entries) -> str:
    """The methods' defaults ("" when unset: None / False are not worth a line)."""
    values: dict[str, list[str]] = {}
    for spec, opt in entries:
        if opt.default is None or opt.default is False or opt.default in ((), {}, ""):
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

    specs = methods.methods(family)
    fields: dict[str, list] = {}
    for spec in specs:
        for opt in spec.options():
            if opt.name not in NOT_ON_CLI and opt.name not in exclude and "Callable" not in opt.type and "Config" not in opt.type:
                fields.setdefault(opt.name, []).append((spec, opt))
    group = parser.add_argument_group(title or f"{family} method options (each applies to the methods it names)")
    taken = set(parser._option_string_actions)
    for name, entries in sorted(fields.items()):
        flag = _flag(name) if _flag(name) not in taken else _flag(f"method_{name}")
        opt = entries[0][1]
        which = "" if len(entries) == len(specs) else \
            f"[{', '.join(sorted(s.name for s, _ in entries))}] "
        how = " (JSON, or a .json file)" if "dict" in opt.type else ""
        help_text = f"{which}{opt.help}{how}{_defaults(entries)}".replace("%", "%%")
        choices = opt.choices if all(o.choices == opt.choices for _, o in entries) else None
        if opt.type.replace(" ", "") in ("bool",):
            group.add_argument(flag, dest=PREFIX + name, action=argparse.BooleanOptionalAction, default=None,
                               help=help_text)
        elif choices:
            group.add_argument(flag, dest=PREFIX + name, choices=choices, default=None, help=help_text)
        elif "tuple" in opt.type:  # several words (or one, comma-separated)
            group.add_argument(flag, dest=PREFIX + name, type=_parse(opt.type), nargs="+", default=None,
                               metavar="VALUE", help=help_text)
        else:
            group.add_argument(flag, dest=PREFIX + name, type=_parse(opt.type), default=None, metavar="VALUE",
                               help=help_text)
    parser.set_defaults(**{TUPLES: {n for n, e in fields.items() if "tuple" in e[0][1].type} | set(
        parser.get_default(TUPLES) or ())})


def given(args) -> dict:
    """The generated options the user set: {field: value}."""
    tuples = getattr(args, TUPLES, ()) or ()
    out = {k[len(PREFIX):]: v for k, v in vars(args).items() if k.startswith(PREFIX) and v is not None}
    return {k: _as_tuple(v) if k in tuples and isinstance(v, list) else v for k, v in out.items()}


def method_options(args, spec, accepted: set[str] | None = None) -> dict:
    """The options set on the command line for `spec`'s method; one that does not apply fails. `accepted`:
    the names that apply (default the method's options; quantize adds its nested config's, `accepted_names`)."""
    values = given(args)
    accepted = spec.option_names() if accepted is None else accepted
    wrong = sorted(set(values) - accepted)
    if wrong:
        raise InvalidInputError(f"{', '.join(_flag(w) for w in wrong)} does not apply to {spec.family} method "
                                f"{spec.name!r}; its options: {', '.join(sorted(accepted - NOT_ON_CLI))}")
    return values

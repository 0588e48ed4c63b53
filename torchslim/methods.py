"""The one table of compression methods: every method once, with what each surface needs to know.

Each family keeps its own registry, where a method is registered next to its code (prune criteria,
sparsity methods, decompositions, quantizers, distillation terms, the coded file); this table reads
those registries, so a method registered there is in the table, the CLI, the recipe stages and the
docs without another list of names:

    >>> from torchslim.methods import methods, get
    >>> [m.key for m in methods("quantize")]            # ['quantize:binary', 'quantize:int8-pt2e', ...]
    >>> get("quantize", "int8").name                     # aliases resolve: 'int8-ptq'
    >>> [o.name for o in get("sparsify", "dns").options()]

A `MethodSpec` says: its family and verb, name and aliases, its config dataclass (the options, with
defaults and help), whether it needs data, whether it needs a fine-tuning budget to do anything,
whether its verb works in place, the paper it implements and the file its code lives in.
`python -m torchslim.methods` prints the table as markdown (docs/methods.md is that output).
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from torchslim.errors import InvalidInputError, UnknownNameError
from torchslim.registry import Registry
from torchslim.verbs import report_of  # noqa: F401  (what the verbs share lives in torchslim.verbs)

FAMILIES = ("prune", "sparsify", "decompose", "quantize", "distill", "encode")
DOCS = {"prune": "docs/prune.md", "sparsify": "docs/sparsity.md", "decompose": "docs/lowrank.md",
        "quantize": "docs/quantization.md", "distill": "docs/distillation.md", "encode": "docs/quantization.md"}
_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Option:
    """One option of a method: a field of its config dataclass."""

    name: str
    type: str
    default: Any
    help: str
    choices: tuple | None = None  # the values it allows (field metadata["choices"])


@dataclass(frozen=True)
class MethodSpec:
    family: str  # prune | sparsify | decompose | quantize | distill | encode
    name: str
    config: type  # the dataclass of its options
    verb: str  # what runs it: torchslim.<verb>
    aliases: tuple[str, ...] = ()
    needs_data: bool = False  # reads images (calibration, data-driven scores) or trains
    needs_budget: bool = False  # does nothing useful without a fine-tuning budget (epochs > 0)
    inplace: bool = False  # the verb changes the model it is given (False: returns a new one)
    paper: str = ""
    code: str = ""  # the file of its implementation, relative to the repository
    method_field: str | None = None  # the config field that names the method (prune: criterion)
    fixed: tuple[tuple[str, Any], ...] = ()  # config fields the method sets itself (binary: mode)
    # what the verb gives back, so a surface knows how to report and save it without naming methods:
    # "model" (an nn.Module of ordinary layers), "int8" (a model run by an int8 runtime, with its
    # execution-path report), "program" (a torch.export program), "coded" (weights that the .slim
    # file codes: shared centroids, binary/ternary signs)
    output: str = "model"

    @property
    def key(self) -> str:
        return f"{self.family}:{self.name}"

    @property
    def docs(self) -> str:
        """The page that explains its family (relative to the repository)."""
        return DOCS[self.family]

    def options(self) -> list[Option]:
        """The config's fields a user sets (the method's own name and fixed fields left out)."""
        skip = {self.method_field, *dict(self.fixed)}
        return [o for o in config_options(self.config) if o.name not in skip]

    def option_names(self) -> set[str]:
        return {o.name for o in self.options()}

    def coerce(self, options: dict) -> dict:
        """Options as the config takes them: a mapping given for a field whose default is itself a config
        (a recipe's `fit: {epochs: 1}`) updates that default (FitConfig(epochs=1, ...the method's own))."""
        nested = self.nested()
        out = dict(options)
        for k, v in options.items():
            if isinstance(v, dict) and k in nested:
                out[k] = dataclasses.replace(nested[k], **v)
            elif isinstance(v, dict) and k == "fit":  # every method's training budget (default None: its own)
                from torchslim.train import FitConfig

                out[k] = FitConfig(**v)
        return out

    def nested(self) -> dict[str, Any]:
        """{field: default config} of the fields whose default is itself a config (int8-qat's `int8`)."""
        defaults = {f.name: _default(f) for f in dataclasses.fields(self.config) if f.name in self.option_names()}
        return {k: d for k, d in defaults.items() if dataclasses.is_dataclass(d) and not isinstance(d, type)}

    def accepted_names(self) -> set[str]:
        """Its option names and those of its nested configs (what `route` places)."""
        return self.option_names() | {f.name for d in self.nested().values() for f in dataclasses.fields(d)}

    def route(self, values: dict) -> dict:
        """Options as this method's config takes them: a value for a field of the config is kept; one for
        a field of a nested config (int8-qat's `int8: Int8Config`) goes into that config; the rest are
        left out (they belong to other methods of the family)."""
        own = self.option_names()
        out = {k: v for k, v in values.items() if k in own}
        for name, d in self.nested().items():
            inner = {k: v for k, v in values.items() if k not in own and k in {f.name for f in dataclasses.fields(d)}}
            if inner and name not in values:
                out[name] = dataclasses.replace(d, **inner)
        return out

    def check_options(self, options: dict, where: str = "") -> None:
        """Unknown option names fail with one line listing the method's options."""
        unknown = sorted(set(options) - self.option_names())
        if unknown:
            raise InvalidInputError(f"{where}{self.family} method {self.name!r} has no option(s) {unknown}; "
                                    f"its options: {', '.join(sorted(self.option_names()))}")


# ------------------------------------------------------------------ options from a config dataclass
def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def _doc_help(cls: type) -> dict[str, str]:
    """`name: text` in the class docstring, for names that are fields (Args / Attributes lines, or several
    in one paragraph: "sparsity: ...; quality: ..."; `a, b: text` documents both)."""
    fields = {f.name for f in dataclasses.fields(cls)}
    doc = " ".join((cls.__doc__ or "").split())
    key = re.compile(r"(?:^|(?<=[.;:)]\s)|(?<=\s))`?([a-z_]\w*(?:`?\s*,\s*`?[a-z_]\w*)*)`?(?:\s*\([^)]*\))?:\s+")
    hits = [(m, [n.strip(" `") for n in m.group(1).split(",")]) for m in key.finditer(doc)]
    hits = [(m, names) for m, names in hits if all(n in fields for n in names)]
    out: dict[str, str] = {}
    for k, (m, names) in enumerate(hits):
        end = hits[k + 1][0].start() if k + 1 < len(hits) else len(doc)
        text = doc[m.end():end].strip().rstrip(";,").strip()
        for n in names:
            out.setdefault(n, text)
    return out


def _comment_help(cls: type) -> dict[str, str]:
    """`name: type = default  # text` comments in the class source."""
    try:
        src = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    return {m.group(1): m.group(2).strip()
            for m in re.finditer(r"^\s+([A-Za-z_]\w*)\s*:[^#\n]*#\s*(.+)$", src, re.M)}


@functools.lru_cache(maxsize=None)
def config_options(cls: type) -> tuple[Option, ...]:
    """Every field of a config dataclass as an `Option`; help from field metadata["help"], else the
    class docstring's `name: text` line, else the field's trailing comment. Read once per class: many
    methods share one config (every prune criterion, every decomposition), and reading the source for
    the comments is what the CLI's start-up spent its time on."""
    doc, comments = _doc_help(cls), _comment_help(cls)
    opts = []
    for f in dataclasses.fields(cls):
        if f.name.startswith("_") or not f.init:
            continue
        text = f.metadata.get("help") or doc.get(f.name) or comments.get(f.name, "")
        opts.append(Option(f.name, f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type)),
                           _default(f), text, f.metadata.get("choices")))
    return tuple(opts)


# ------------------------------------------------------------------ the families, read from their registries
def _code(obj) -> str:
    try:
        return Path(inspect.getsourcefile(obj)).resolve().relative_to(_ROOT).as_posix()
    except (TypeError, ValueError, OSError):
        return ""


def _paper(obj) -> str:
    """The obj's `paper`, else the first sentence of its module's docstring (which names the paper)."""
    if getattr(obj, "paper", ""):
        return obj.paper
    module = inspect.getmodule(obj)
    doc = " ".join((module.__doc__ or "").split("\n\n")[0].split()) if module else ""
    first = re.split(r"(?<!\bal)(?<!e\.g)(?<!i\.e)\.\s+(?=[A-Z])", doc)[0] if doc else ""
    return first.rstrip(".")


def _aliases(reg: Registry) -> dict[str, tuple[str, ...]]:
    out: dict[str, list[str]] = {}
    for n in reg.names():
        out.setdefault(reg.canonical(n), [])
        if reg.canonical(n) != n:
            out[reg.canonical(n)].append(n)
    return {k: tuple(v) for k, v in out.items()}


def _prune() -> Iterator[MethodSpec]:
    from torchslim.prune.api import PruneConfig
    from torchslim.prune.criteria import CRITERIA, criterion_needs_data

    for name, aliases in _aliases(CRITERIA).items():
        fn = CRITERIA.get(name)
        yield MethodSpec("prune", name, PruneConfig, "prune", aliases, needs_data=criterion_needs_data(name),
                         paper=_paper(fn), code=_code(fn), method_field="criterion")


def _sparsify() -> Iterator[MethodSpec]:
    from torchslim.sparsity.api import METHODS

    for name, aliases in _aliases(METHODS).items():
        config, fn = METHODS.get(name)
        yield MethodSpec("sparsify", name, config, "sparsify", aliases, needs_data=getattr(fn, "needs_data", True),
                         paper=_paper(fn), code=_code(fn))


def _decompose() -> Iterator[MethodSpec]:
    from torchslim.lowrank import METHODS, DecomposeConfig

    for name, aliases in _aliases(METHODS).items():
        m = METHODS.get(name)
        yield MethodSpec("decompose", name, DecomposeConfig, "decompose", aliases, needs_data=m.needs_data,
                         paper=_paper(m), code=_code(type(m)), method_field="method")


def _quantize() -> Iterator[MethodSpec]:
    from torchslim.quant import METHODS

    for name, aliases in _aliases(METHODS).items():
        fn = METHODS.get(name)
        yield MethodSpec("quantize", name, fn.config, "quantize", aliases, needs_data=fn.needs_data,
                         paper=_paper(fn.implementation), code=_code(fn.implementation),
                         fixed=tuple(getattr(fn, "fixed", {}).items()), output=fn.output)


def _distill() -> Iterator[MethodSpec]:
    from torchslim.distill import METHODS, DistillConfig

    for name, aliases in _aliases(METHODS).items():
        term = METHODS.get(name).term
        yield MethodSpec("distill", name, DistillConfig, "distill", aliases, needs_data=True, needs_budget=True,
                         inplace=True, paper=_paper(term), code=_code(term))


def _encode() -> Iterator[MethodSpec]:
    from torchslim.encode import EncodeConfig, save

    yield MethodSpec("encode", "slim", EncodeConfig, "encode.save", paper=_paper(save), code=_code(save))


_READERS: dict[str, Callable[[], Iterator[MethodSpec]]] = {
    "prune": _prune, "sparsify": _sparsify, "decompose": _decompose, "quantize": _quantize, "distill": _distill,
    "encode": _encode}


def table() -> Registry[MethodSpec]:
    """The whole table, `family:name` -> MethodSpec (aliases as `family:alias`), read afresh from the
    family registries (so a method a user registers there appears here too)."""
    reg: Registry[MethodSpec] = Registry("method")
    for family in FAMILIES:
        for spec in _READERS[family]():
            reg.register(spec.key)(spec)
            for a in spec.aliases:
                reg.register(f"{family}:{a}")(spec)
    return reg


def methods(family: str | None = None) -> list[MethodSpec]:
    """Every method (of one family), each once, sorted by family then name."""
    if family is not None and family not in FAMILIES:
        raise UnknownNameError(f"unknown method family {family!r}; known: {', '.join(FAMILIES)}")
    fams = FAMILIES if family is None else (family,)
    return [s for f in fams for s in sorted(_READERS[f](), key=lambda s: s.name)]


def names(family: str) -> list[str]:
    """A family's method names and aliases (what a `--method` option accepts)."""
    return sorted(n for s in methods(family) for n in (s.name, *s.aliases))


def get(family: str, name: str) -> MethodSpec:
    """The method `name` (or an alias) of `family`; an unknown name fails with the known ones."""
    for s in methods(family):
        if name == s.name or name in s.aliases:
            return s
    raise UnknownNameError(f"unknown {family} method {name!r}; known: {', '.join(names(family))}")


# ------------------------------------------------------------------ the table as markdown (docs/methods.md)
def markdown() -> str:
    rows = ["# Methods", "",
            "Generated from the method table (`torchslim/methods.py`) by `python -m torchslim.methods > docs/methods.md`;",
            "`tests/test_methods.py` checks it is current. Each name leads to its code; its options are the",
            "fields of its config (`torchslim methods FAMILY` prints them with their defaults and help).", ""]
    for family in FAMILIES:
        specs = methods(family)
        rows += [f"## {family}", "", f"`torchslim.{specs[0].verb}`; explained in [{DOCS[family]}](../{DOCS[family]}).", "",
                 "| method | aliases | config | data | budget | in place | code | paper |",
                 "|---|---|---|---|---|---|---|---|"]
        for s in specs:
            rows.append(f"| `{s.name}` | {', '.join(f'`{a}`' for a in s.aliases)} | `{s.config.__module__}."
                        f"{s.config.__name__}` | {'yes' if s.needs_data else ''} | {'yes' if s.needs_budget else ''} | "
                        f"{'yes' if s.inplace else ''} | [{s.code}](../{s.code}) | {s.paper.replace('|', '/')} |")
        rows.append("")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown())

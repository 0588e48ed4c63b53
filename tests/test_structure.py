"""The shape of torchslim's import graph, checked from the source text.

Every ``torchslim/**/*.py`` is parsed with ``ast``; each import (top level or inside a function,
``import a.b``, ``from a import b``, ``from . import b``) becomes an edge to the torchslim module
it names: ``from pkg import name`` names ``pkg/name.py`` when that is a module, else the package's
``pkg/__init__.py``; so a submodule importing its own package's ``__init__`` counts like any other
import. Importing ``a.b.c`` also runs ``a/__init__`` and ``a/b/__init__``; those implicit parent
edges are not counted (every module would otherwise import ``torchslim/__init__``).

Imports under ``if TYPE_CHECKING:`` are skipped: they never run, so they cannot make a cycle at
import time. The cost: a type-only import may hide a conceptual dependency the wrong way round, so
keep such blocks for annotations only.

Checked:
(a) the module graph has no cycles (each cycle is reported as a chain of ``file:line`` imports);
(b) nothing outside ``torchslim/cli`` imports ``torchslim.cli``, and no module imports another
    module's private (``_name``) helper: a helper that is shared is public where it lives;
(c) benchmarks import nothing private from torchslim or from each other (no ``_name``, no
    ``_module``, no ``module._name`` attribute on an imported module), and nothing from the CLI.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Imports allowed to break the rules below (none left since the method table of issue #15 landed);
# an entry must name a live import (test_allowlist_holds_only_live_imports).
KNOWN_UNTIL_15_TABLE: frozenset[tuple[str, str]] = frozenset()


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name of the importing file
    imported: str  # dotted module name it names
    names: tuple[str, ...]  # the names taken by ``from x import ...`` (empty for ``import x``)
    path: Path
    line: int

    def where(self, root: Path) -> str:
        return f"{self.path.relative_to(root).as_posix()}:{self.line}"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_imports(tree: ast.AST):
    """Every import node that can run: all of them but those under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _resolve_from(node: ast.ImportFrom, importer: str, is_package: bool) -> str | None:
    if node.level == 0:
        return node.module
    base = importer.split(".")
    if not is_package:
        base = base[:-1]  # a module's relative imports start from its package
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(path: Path, root: Path, package: str, modules: set[str]) -> list[Import]:
    """The imports in ``path`` that name a module of ``package`` (a module in ``modules``)."""
    importer = module_name(path, root)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[Import] = []
    for node in _runtime_imports(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    found.append(Import(importer, alias.name, (), path, node.lineno))
            continue
        source = _resolve_from(node, importer, path.name == "__init__.py")
        if source is None or not (source == package or source.startswith(package + ".")):
            continue
        for alias in node.names:
            submodule = f"{source}.{alias.name}"
            target = submodule if submodule in modules else source
            if target in modules:
                found.append(Import(importer, target, (alias.name,), path, node.lineno))
    return found


def module_graph(root: Path, package: str = "torchslim") -> dict[str, list[Import]]:
    """``{module: [its imports of other modules of package]}`` for every file under root/package."""
    files = sorted((root / package).rglob("*.py"))
    modules = {module_name(f, root) for f in files}
    return {module_name(f, root): imports_of(f, root, package, modules) for f in files}


def find_cycles(graph: dict[str, list[Import]],
                ignore: frozenset[tuple[str, str]] = frozenset()) -> list[list[Import]]:
    """One shortest cycle per strongly connected component of the graph (Tarjan, then BFS)."""
    edges = {m: [i for i in imps if (i.importer, i.imported) not in ignore and i.imported != m]
             for m, imps in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[set[str]] = []

    def connect(v: str) -> None:  # recursive Tarjan: the graph is a few hundred modules
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for imp in edges[v]:
            w = imp.imported
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(edges):
        if v not in index:
            connect(v)

    cycles = []
    for component in components:
        start = min(component)
        # Breadth-first from start back to start within the component: the shortest chain.
        paths: dict[str, list[Import]] = {start: []}
        queue = [start]
        cycle = None
        while queue and cycle is None:
            v = queue.pop(0)
            for imp in edges[v]:
                w = imp.imported
                if w not in component:
                    continue
                if w == start:
                    cycle = paths[v] + [imp]
                    break
                if w not in paths:
                    paths[w] = paths[v] + [imp]
                    queue.append(w)
        cycles.append(cycle)
    return cycles


def describe(cycle: list[Import], root: Path) -> str:
    chain = " -> ".join(f"{imp.importer} ({imp.where(root)})" for imp in cycle)
    return f"{chain} -> {cycle[0].importer}"


def cli_imports(graph: dict[str, list[Import]], package: str = "torchslim") -> list[Import]:
    cli = f"{package}.cli"
    inside = lambda name: name == cli or name.startswith(cli + ".")  # noqa: E731
    return [imp for imps in graph.values() for imp in imps
            if inside(imp.imported) and not inside(imp.importer)]


def private_imports(path: Path, packages: tuple[str, ...] = ("torchslim", "benchmarks")) -> list[str]:
    """``file:line name`` for each private name or module of `packages` a (benchmark) file takes."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    private = lambda dotted: any(p.startswith("_") and p != "__init__"  # noqa: E731
                                 for p in dotted.split("."))
    ours = lambda dotted: any(dotted == p or dotted.startswith(p + ".") for p in packages)  # noqa: E731
    found: list[str] = []
    bound: set[str] = set()  # local names bound to torchslim modules
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if ours(alias.name):
                    if private(alias.name):
                        found.append(f"{path.name}:{node.lineno} {alias.name}")
                    bound.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and ours(node.module or ""):
            for alias in node.names:
                dotted = f"{node.module}.{alias.name}"
                if private(dotted):
                    found.append(f"{path.name}:{node.lineno} {dotted}")
                bound.add(alias.asname or alias.name)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                and not node.attr.startswith("__") and isinstance(node.value, ast.Name)
                and node.value.id in bound):
            found.append(f"{path.name}:{node.lineno} {node.value.id}.{node.attr}")
    return sorted(set(found))


# --- the checks on torchslim itself ----------------------------------------------------------

@pytest.fixture(scope="module")
def graph():
    return module_graph(REPO)


def test_no_import_cycles(graph):
    cycles = find_cycles(graph, ignore=KNOWN_UNTIL_15_TABLE)
    assert not cycles, "import cycles:\n" + "\n".join(describe(c, REPO) for c in cycles)


def test_nothing_outside_the_cli_imports_it(graph):
    offenders = [imp for imp in cli_imports(graph)
                 if (imp.importer, imp.imported) not in KNOWN_UNTIL_15_TABLE]
    assert not offenders, "\n".join(f"{imp.where(REPO)} imports {imp.imported}"
                                    for imp in offenders)


def benchmark_imports(root: Path = REPO, package: str = "torchslim") -> list[Import]:
    """The imports of torchslim modules in benchmarks/*.py."""
    modules = {module_name(f, root) for f in (root / package).rglob("*.py")}
    return [imp for f in sorted((root / "benchmarks").glob("*.py"))
            for imp in imports_of(f, root, package, modules)]


def private_names_across_modules(graph: dict[str, list[Import]]) -> list[Import]:
    """Imports of a ``_name`` defined in another module (``from x import _helper``)."""
    return [imp for imps in graph.values() for imp in imps
            if any(n.startswith("_") and not n.startswith("__") for n in imp.names)]


def test_no_module_imports_another_modules_private_helper(graph):
    offenders = [imp for imp in private_names_across_modules(graph)
                 if (imp.importer, f"{imp.imported}.{imp.names[0]}") not in KNOWN_UNTIL_15_TABLE]
    assert not offenders, "\n".join(f"{imp.where(REPO)} imports {imp.imported}.{imp.names[0]}"
                                    for imp in offenders)


def test_allowlist_holds_only_live_imports(graph):
    # An allowlisted import that is gone must leave the list, so the list cannot go stale.
    imports = [imp for imps in [*graph.values(), benchmark_imports()] for imp in imps]
    live = {(imp.importer, imp.imported) for imp in imports}
    live |= {(imp.importer, f"{imp.imported}.{n}") for imp in imports for n in imp.names}
    assert KNOWN_UNTIL_15_TABLE <= live, KNOWN_UNTIL_15_TABLE - live


def test_benchmarks_import_nothing_private():
    offenders = [hit for f in sorted((REPO / "benchmarks").glob("*.py"))
                 for hit in private_imports(f)]
    assert not offenders, "private names in benchmarks:\n" + "\n".join(offenders)


def test_benchmarks_do_not_import_the_cli():
    offenders = [imp for imp in benchmark_imports()
                 if imp.imported.startswith("torchslim.cli")
                 and (imp.importer, imp.imported) not in KNOWN_UNTIL_15_TABLE]
    assert not offenders, "\n".join(f"{imp.where(REPO)} imports {imp.imported}" for imp in offenders)


# --- the checks can fail -----------------------------------------------------------------------

def _plant(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_planted_cycle_is_found_and_described(tmp_path):
    root = _plant(tmp_path, {
        "torchslim/__init__.py": "",
        "torchslim/a.py": "from torchslim.sub.b import f\n",
        "torchslim/sub/__init__.py": "",
        "torchslim/sub/b.py": "def f():\n    from ..c import g\n",  # function-local, relative
        "torchslim/c.py": "import os\nimport torchslim.a\n",  # `import a.b` form
        "torchslim/ok.py": "from torchslim import a\n",  # names the module a, not __init__
    })
    cycles = find_cycles(module_graph(root))
    assert len(cycles) == 1
    assert describe(cycles[0], root) == (
        "torchslim.a (torchslim/a.py:1) -> torchslim.sub.b (torchslim/sub/b.py:2) -> "
        "torchslim.c (torchslim/c.py:2) -> torchslim.a")
    # Leaving out one edge of the cycle breaks it.
    assert find_cycles(module_graph(root), ignore=frozenset({("torchslim.c", "torchslim.a")})) == []


def test_a_submodule_importing_its_package_init_is_a_cycle(tmp_path):
    root = _plant(tmp_path, {
        "torchslim/__init__.py": "",
        "torchslim/data/__init__.py": "from .core import Bundle\n",
        "torchslim/data/core.py": "from . import helper\n",  # names data/helper.py: fine
        "torchslim/data/helper.py": "from . import Bundle\n",  # names data/__init__.py
    })
    cycles = find_cycles(module_graph(root))
    assert [describe(c, root) for c in cycles] == [
        "torchslim.data (torchslim/data/__init__.py:1) -> torchslim.data.core "
        "(torchslim/data/core.py:1) -> torchslim.data.helper (torchslim/data/helper.py:1) -> "
        "torchslim.data"]


def test_type_checking_imports_are_skipped(tmp_path):
    root = _plant(tmp_path, {
        "torchslim/__init__.py": "",
        "torchslim/a.py": "from torchslim import b\n",
        "torchslim/b.py": ("from typing import TYPE_CHECKING\n"
                           "if TYPE_CHECKING:\n    from torchslim.a import X\n"
                           "else:\n    import torchslim.c\n"),
        "torchslim/c.py": "",
    })
    graph = module_graph(root)
    assert find_cycles(graph) == []
    assert [imp.imported for imp in graph["torchslim.b"]] == ["torchslim.c"]


def test_cli_imports_from_outside_are_found(tmp_path):
    root = _plant(tmp_path, {
        "torchslim/__init__.py": "",
        "torchslim/cli/__init__.py": "",
        "torchslim/cli/common.py": "from torchslim import lib\n",  # cli may import the library
        "torchslim/lib.py": "def f():\n    from torchslim.cli.common import console\n",
    })
    found = cli_imports(module_graph(root))
    assert [(imp.importer, imp.imported, imp.line) for imp in found] == [
        ("torchslim.lib", "torchslim.cli.common", 2)]


def test_private_helpers_imported_across_modules_are_found(tmp_path):
    root = _plant(tmp_path, {
        "torchslim/__init__.py": "",
        "torchslim/a.py": "def _helper():\n    pass\n",
        "torchslim/b.py": "from torchslim.a import _helper\nfrom torchslim import a\n",
    })
    found = private_names_across_modules(module_graph(root))
    assert [(imp.importer, imp.imported, imp.names, imp.line) for imp in found] == [
        ("torchslim.b", "torchslim.a", ("_helper",), 1)]


def test_private_benchmark_imports_are_found(tmp_path):
    bench = tmp_path / "bench_x.py"
    bench.write_text(
        "import torchslim.analysis.latency as latency\n"
        "from torchslim.lowrank.core import _macs, original_cost\n"
        "from torchslim.analysis import _hidden\n"
        "from benchmarks.common import _helper, md_table\n"
        "import numpy._core\n"  # not ours: not this test's business
        "def run():\n"
        "    from torchslim.analysis import latency as lat\n"
        "    return latency._threads(1), lat.measure_latency, lat.__name__\n")
    assert private_imports(bench) == [
        "bench_x.py:2 torchslim.lowrank.core._macs",
        "bench_x.py:3 torchslim.analysis._hidden",
        "bench_x.py:4 benchmarks.common._helper",
        "bench_x.py:8 latency._threads",
    ]

"""The import graph of ``sis_stream``: no cycle, layers point one way, no private name crosses a
subpackage.

Imports are read with :mod:`ast` from the source (nothing is imported); imports under
``if TYPE_CHECKING:`` are left out, since they never run. Both module-level and function-level
imports count: a lazy import still ties two modules together.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "sis_stream"
ROOT = "sis_stream"

# Layers, top to bottom: a module may import its own layer and any layer below, never one above.
# cli -> server -> (client, engines) -> protocol -> audio -> the base modules.
LAYERS: dict[str, int] = {
    "cli": 6,
    "__main__": 7,
    "server": 5,
    "loadtest": 5,
    "bridges": 5,
    "client": 4,
    "engines": 4,
    "protocol": 3,
    "text": 2,
    "audio": 2,
    "errors": 1,
    "_backend": 1,
    "_native": 0,
    "_reference": 0,
}


def _module_name(path: Path) -> tuple[str, bool]:
    rel = path.relative_to(PACKAGE_DIR.parent).with_suffix("")
    parts = list(rel.parts)
    is_pkg = parts[-1] == "__init__"
    if is_pkg:
        parts = parts[:-1]
    return ".".join(parts), is_pkg


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, except those inside ``if TYPE_CHECKING:`` blocks."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for sub in child.orelse:
                    visit_stmt(sub)
                continue
            visit_stmt(child)

    def visit_stmt(node: ast.AST) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        visit(node)

    visit(tree)
    return found


class Graph:
    def __init__(self) -> None:
        self.modules: dict[str, bool] = {}
        self.trees: dict[str, ast.AST] = {}
        for path in sorted(PACKAGE_DIR.rglob("*.py")):
            name, is_pkg = _module_name(path)
            self.modules[name] = is_pkg
            self.trees[name] = ast.parse(path.read_text(encoding="utf-8"), str(path))
        # edges: importer -> {imported module: [(line, imported names)]}
        self.edges: dict[str, dict[str, list[tuple[int, str]]]] = {m: {} for m in self.modules}
        for name, tree in self.trees.items():
            for node in _imports(tree):
                for target, imported in self._targets(name, node):
                    self.edges[name].setdefault(target, []).append((node.lineno, imported))

    def _resolve(self, importer: str, level: int, module: str | None) -> str:
        if level == 0:
            return module or ""
        base = importer.split(".")
        if not self.modules[importer]:
            base = base[:-1]
        base = base[: len(base) - (level - 1)]
        return ".".join(base + ([module] if module else []))

    def _owner(self, dotted: str) -> str | None:
        """The module of the project that `dotted` names or lies inside."""
        while dotted:
            if dotted in self.modules:
                return dotted
            dotted = dotted.rpartition(".")[0]
        return None

    def _targets(self, importer: str, node: ast.Import | ast.ImportFrom):
        if isinstance(node, ast.Import):
            for alias in node.names:
                owner = self._owner(alias.name)
                if owner and alias.name.split(".")[0] == ROOT:
                    yield owner, ""
            return
        base = self._resolve(importer, node.level, node.module)
        if base.split(".")[0] != ROOT:
            return
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            if sub in self.modules:  # `from pkg import submodule`
                yield sub, ""
            else:
                owner = self._owner(base)
                if owner:
                    yield owner, alias.name

    def cycles(self) -> list[list[str]]:
        """Strongly connected components with more than one module (Tarjan)."""
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        stack: list[str] = []
        on_stack: set[str] = set()
        out: list[list[str]] = []
        counter = [0]

        def strong(v: str) -> None:
            index[v] = low[v] = counter[0]
            counter[0] += 1
            stack.append(v)
            on_stack.add(v)
            for w in self.edges[v]:
                if w == v:
                    continue
                if w not in index:
                    strong(w)
                    low[v] = min(low[v], low[w])
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))

        for v in sorted(self.modules):
            if v not in index:
                strong(v)
        return out


@pytest.fixture(scope="module")
def graph() -> Graph:
    return Graph()


def _layer(module: str) -> tuple[str, int]:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else ""
    if top not in LAYERS:
        pytest.fail(f"{module}: its top-level place {top!r} has no layer in LAYERS; add it")
    return top, LAYERS[top]


def test_every_module_is_read(graph):
    # The reader must see the layers it checks (a moved package would otherwise pass vacuously).
    for pkg in ("sis_stream.audio", "sis_stream.client", "sis_stream.cli", "sis_stream.server",
                "sis_stream.protocol", "sis_stream.engines"):
        assert graph.modules.get(pkg) is True, pkg
    assert sum(1 for m in graph.modules if m.startswith("sis_stream.server.")) > 10


def test_no_import_cycle(graph):
    cycles = graph.cycles()
    detail = "\n".join(
        " <-> ".join(c) + "\n" + "\n".join(
            f"    {a} imports {b} (lines {', '.join(str(ln) for ln, _ in graph.edges[a][b])})"
            for a in c for b in graph.edges[a] if b in c and b != a)
        for c in cycles)
    assert not cycles, f"import cycles in sis_stream:\n{detail}"


def test_server_has_no_cycle(graph):
    server = [c for c in graph.cycles() if any(m.startswith("sis_stream.server") for m in c)]
    assert not server, server


def test_layers_point_one_way(graph):
    wrong = []
    for importer, targets in graph.edges.items():
        if importer == ROOT:
            continue  # the public face re-exports every layer
        top_i, layer_i = _layer(importer)
        for target in targets:
            if target == ROOT:
                if importer.count(".") >= 1 and not graph.modules[importer]:
                    # `from .. import __version__` style reads of the root face
                    continue
                continue
            top_t, layer_t = _layer(target)
            if top_t == top_i:
                continue
            if layer_t > layer_i or (layer_t == layer_i and top_t != top_i):
                wrong.append(f"{importer} ({top_i}, layer {layer_i}) imports {target} "
                             f"({top_t}, layer {layer_t})")
    assert not wrong, "imports that run against the layers:\n" + "\n".join(sorted(wrong))


def _subpackage(module: str, graph: Graph) -> str:
    return module if graph.modules[module] else module.rpartition(".")[0]


def test_no_private_name_crosses_a_subpackage(graph):
    """A ``_private`` name is imported only from a private helper module of the importer's own
    subpackage (``cli/_common.py``, ``audio/_filters.py``); a private module only from its own
    subpackage, or the root's kernel selection. What two modules share is public."""
    wrong = []
    for importer, targets in graph.edges.items():
        for target, uses in targets.items():
            same_pkg = _subpackage(importer, graph) == _subpackage(target, graph)
            target_private = target.rpartition(".")[2].startswith("_") and not graph.modules[target]
            for line, name in uses:
                if name.startswith("_") and not name.startswith("__"):
                    if not (same_pkg and target_private):
                        wrong.append(f"{importer}:{line} imports {name} from {target}")
                elif target_private and not same_pkg and not _private_module_allowed(target):
                    wrong.append(f"{importer}:{line} imports the private module {target}")
    assert not wrong, "private names imported across modules:\n" + "\n".join(sorted(wrong))


def _private_module_allowed(target: str) -> bool:
    # sis_stream._backend, ._native and ._reference are the package root's private helpers;
    # every subpackage of the root may use them (they select the kernels).
    return target.split(".")[1] in ("_backend", "_native", "_reference")


def test_the_reader_sees_a_planted_cycle(tmp_path, monkeypatch):
    """The cycle finder on a tiny made-up graph: a -> b -> c -> a is one cycle, d is not in it."""
    g = Graph.__new__(Graph)
    g.modules = {"p.a": False, "p.b": False, "p.c": False, "p.d": False}
    g.edges = {"p.a": {"p.b": []}, "p.b": {"p.c": []}, "p.c": {"p.a": [], "p.d": []}, "p.d": {}}
    assert g.cycles() == [["p.a", "p.b", "p.c"]]


def test_type_checking_imports_are_ignored():
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .x import y\n"
                     "else:\n    from .z import w\ndef f():\n    from .q import r\n")
    got = sorted(n.module for n in _imports(tree) if n.module != "typing")
    assert got == ["q", "z"]

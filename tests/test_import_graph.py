"""No import cycles inside ``collector``, inside ``exporters``, or between the two.

The graph is built from the source (AST) of every module of both packages, with module-level AND function-level
imports (a function-level import is still a dependency; it only hides a cycle until the function runs). Importing
``a.b.c`` runs ``a`` and ``a.b`` first, so it counts as a dependency on each of them (except on the importer's own
enclosing packages, which are already running). Imports under
``if TYPE_CHECKING:`` are for the type checker only and never run, so they are not edges. ``collector`` finds
destinations through the ``ccbridge.destinations`` entry points (``importlib.metadata``), not through an import.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("collector", "exporters")


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every module of :data:`PACKAGES`."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement at any depth, except those under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _with_parents(name: str, importer: str, known: dict[str, Path]) -> set[str]:
    """``name`` and the packages importing it runs first, except the importer's own enclosing packages (they are
    already being initialised when the importer runs; ``pkg/__init__`` importing ``pkg.sub`` is no cycle)."""
    parts = name.split(".")
    mine = importer.split(".")
    ancestors = {".".join(mine[:i]) for i in range(1, len(mine))}
    parents = {".".join(parts[:i]) for i in range(1, len(parts))} - ancestors
    return {m for m in (*parents, name) if m in known}


def graph(known: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules of :data:`PACKAGES` it imports (directly, at any depth of its code)."""
    edges: dict[str, set[str]] = {}
    for name, path in known.items():
        is_pkg = path.name == "__init__.py"
        deps: set[str] = set()
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = name.split(".") if is_pkg else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                # ``from pkg import sub`` imports the submodule when ``sub`` is one
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
            for t in targets:
                deps |= _with_parents(t, name, known)
        deps.discard(name)
        edges[name] = deps
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def a_cycle(edges: dict[str, set[str]], component: list[str]) -> list[str]:
    """One concrete loop through ``component`` (for the failure message)."""
    members = set(component)
    start = component[0]
    path = [start]
    seen = {start}
    node = start
    while True:
        nxt = sorted(edges[node] & members)
        back = [n for n in nxt if n == start]
        if back and len(path) > 1:
            return [*path, start]
        fresh = [n for n in nxt if n not in seen]
        node = fresh[0] if fresh else nxt[0]
        if node in seen:
            return [*path[path.index(node) :], node]
        path.append(node)
        seen.add(node)


def test_no_import_cycles_in_or_between_collector_and_exporters() -> None:
    edges = graph(modules())
    found = cycles(edges)
    loops = [" -> ".join(a_cycle(edges, c)) for c in found]
    assert not found, "import cycles:\n" + "\n".join(loops)


def test_the_graph_sees_function_level_imports_and_finds_a_cycle(tmp_path: Path) -> None:
    """The checker itself: a cycle closed by a function-level import is found; a TYPE_CHECKING one is not."""
    (tmp_path / "collector" / "sub").mkdir(parents=True)
    (tmp_path / "exporters").mkdir()
    (tmp_path / "collector" / "__init__.py").write_text("")
    (tmp_path / "collector" / "sub" / "__init__.py").write_text("")
    (tmp_path / "collector" / "config.py").write_text("def f():\n    from exporters import registry\n")
    (tmp_path / "collector" / "sub" / "server.py").write_text("from .. import config\n")
    (tmp_path / "exporters" / "__init__.py").write_text("from collector.sub import server\n")
    (tmp_path / "collector" / "typed.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from collector.sub.server import x\n"
    )
    (tmp_path / "collector" / "sub" / "uses_typed.py").write_text("import collector.typed\n")
    edges = graph(modules(tmp_path))
    assert cycles(edges) == [["collector.config", "collector.sub.server", "exporters"]]
    assert "collector.sub.server" not in edges["collector.typed"]


def test_collector_never_imports_exporters() -> None:
    """Imports point one way: exporters use ``collector.delivery.api``; collector finds them by entry point."""
    edges = graph(modules())
    back = {m: sorted(d for d in deps if d.split(".")[0] == "exporters") for m, deps in edges.items()}
    offenders = {m: d for m, d in back.items() if m.split(".")[0] == "collector" and d}
    assert not offenders, f"collector modules importing exporters: {offenders}"


def test_every_destination_type_is_registered_by_entry_point() -> None:
    from collector.delivery.registry import registry

    types = registry()
    assert set(types) == {"http", "splunk_hec", "datadog", "prometheus"}
    assert all(cls.type_name == name for name, cls in types.items())

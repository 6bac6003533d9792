"""The library's import structure: no import cycles, no private names imported across modules."""

from __future__ import annotations

import ast
from pathlib import Path

LIB = Path(__file__).resolve().parent.parent / "lib"

# None known; an entry here would be a debt to pay, with its reason.
KNOWN_CYCLES: list[list[str]] = []
KNOWN_PRIVATE: list[str] = []


def modules() -> dict[str, Path]:
    """Module name -> file, for every module of ``llmkit``."""
    out = {}
    for path in sorted((LIB / "llmkit").rglob("*.py")):
        parts = list(path.relative_to(LIB).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def import_graph() -> tuple[dict[str, set[str]], list[str]]:
    """``(graph, private)``: each module's ``llmkit`` imports (function-level ones included),
    and every ``from llmkit.x import _name`` of a private name from another module."""
    mods = modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    private = []
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                graph[mod] |= {a.name for a in node.names if a.name in mods} - {mod}
            elif isinstance(node, ast.ImportFrom):
                target = node.module or ""
                if node.level:  # relative: from .x import y
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                if target not in mods:
                    continue
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    graph[mod].add(sub if sub in mods else target)
                    if alias.name.startswith("_") and sub not in mods and target != mod:
                        private.append(f"{mod} imports {target}.{alias.name}")
        graph[mod].discard(mod)
    return graph, private


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_no_import_cycles():
    assert cycles(import_graph()[0]) == KNOWN_CYCLES


def test_no_private_names_imported_across_modules():
    assert sorted(import_graph()[1]) == KNOWN_PRIVATE


def test_checkpoint_never_imports_train():
    graph, _ = import_graph()
    seen, todo = set(), ["llmkit.checkpoint"]
    while todo:
        mod = todo.pop()
        if mod not in seen:
            seen.add(mod)
            todo.extend(graph[mod])
    assert "llmkit.train" not in seen

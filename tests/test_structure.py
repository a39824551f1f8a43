"""The package's module graph has no import cycles, not even through function-level imports.

Every `import` anywhere in a module (top level or inside a function) is an edge; a cycle means
two modules each need the other, which the layering (commands -> stages -> tables/files) forbids.
"""

from __future__ import annotations

import ast
from pathlib import Path

import llm_phi_gguf

PACKAGE = Path(llm_phi_gguf.__file__).parent
NAME = "llm_phi_gguf"


def _target(module: str | None, level: int, alias: str, modules: set[str]) -> str | None:
    """The package module an import names, or None for anything outside the package."""
    if level == 0:
        if module is None or not (module == NAME or module.startswith(NAME + ".")):
            return None
        parts = module.split(".")[1:]
    elif level == 1:
        parts = module.split(".") if module else []
    else:
        return None
    if not parts:  # `from . import x`: a submodule, or a name defined in __init__
        return alias if alias in modules else "__init__"
    return parts[0]


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    modules = {p.stem for p in package.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in package.glob("*.py"):
        edges = set()
        for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
            if isinstance(node, ast.ImportFrom):
                edges |= {_target(node.module, node.level, a.name, modules) for a in node.names}
            elif isinstance(node, ast.Import):
                edges |= {_target(a.name, 0, "", modules) for a in node.names}
        graph[path.stem] = {e for e in edges if e and e != path.stem and e in modules}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (depth-first search with colours)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_sees_function_level_imports(tmp_path):
    """The checker itself: a cycle hidden inside a function is found, a clean tree passes."""
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "a.py").write_text("from .b import x\n")
    (tmp_path / "b.py").write_text("def f():\n    from . import c\n")
    (tmp_path / "c.py").write_text("import os\n")
    assert find_cycle(import_graph(tmp_path)) is None
    (tmp_path / "c.py").write_text("def g():\n    from llm_phi_gguf.a import y\n")
    assert find_cycle(import_graph(tmp_path)) == ["a", "b", "c", "a"]

"""Every package llm_phi_gguf imports (at module level or inside a function) is declared in
pyproject.toml, and every declared dependency is used: nothing may arrive only because another
package happens to depend on it."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "llm_phi_gguf"
# declared but never imported by name, with the reason it is declared anyway
DECLARED_UNIMPORTED = {
    "pluggy": "the plugin hook system: llm.hookimpl markers are pluggy's, and llm loads us through it",
}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_top_level(folder: Path, local: set[str]) -> dict[str, set[str]]:
    """Top-level module name -> files importing it, for absolute imports outside the stdlib."""
    found: dict[str, set[str]] = {}
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in local:
                    found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def declared(group: str | None = None) -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] if group is None else project["optional-dependencies"][group]
    return {canonical(re.match(r"[A-Za-z0-9._-]+", r)[0]) for r in requirements}


def distributions(module: str) -> set[str]:
    return {canonical(d) for d in importlib.metadata.packages_distributions().get(module, [])}


def test_the_scan_sees_function_level_imports():
    # llama_cpp and numpy are imported only inside functions (import llm_phi_gguf stays cheap)
    found = imported_top_level(PACKAGE, {"llm_phi_gguf"})
    assert {"llm", "jinja2", "llama_cpp", "numpy", "huggingface_hub", "httpx"} <= set(found)


def test_every_imported_package_is_declared():
    deps = declared()
    missing = {}
    for module, files in sorted(imported_top_level(PACKAGE, {"llm_phi_gguf"}).items()):
        dists = distributions(module)
        assert dists, f"{module} (imported by {sorted(files)}) belongs to no installed distribution"
        if not dists & deps:
            missing[module] = (sorted(dists), sorted(files))
    assert not missing, f"imported but not in pyproject.toml's dependencies: {missing}"


def test_every_declared_dependency_is_imported():
    used = set()
    for module in imported_top_level(PACKAGE, {"llm_phi_gguf"}):
        used |= distributions(module)
    unused = declared() - used - set(DECLARED_UNIMPORTED)
    assert not unused, f"declared in pyproject.toml but never imported by llm_phi_gguf: {sorted(unused)}"

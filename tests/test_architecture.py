"""The shape of the code: no import cycle, small files, tests on public names only.

The import graph is read from the source with `ast`, every import counted: those at the top
of a module and those inside functions (a cycle closed by a function-level import is still
a cycle), and those under `TYPE_CHECKING`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.ingest_helpers import REPO

PACKAGES = ("pipelines", "transforms", "connectors")
MAX_LINES = 300
_SKIPPED_DIRS = {"tests", ".venv", ".git", "__pycache__", "build", "dist"}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    """{dotted name: file} of every module of the packages."""
    return {
        module_name(path): path
        for package in PACKAGES
        for path in sorted((REPO / package).rglob("*.py"))
        if "__pycache__" not in path.parts
    }


def imported_names(tree: ast.AST, module: str, is_package: bool) -> Iterator[str]:
    """The dotted names `tree` imports anywhere, relative imports resolved; for `from X import Y`
    both `X.Y` (Y may be a module) and `X`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                anchor = parts if is_package else parts[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def import_graph() -> dict[str, set[str]]:
    """{module: the package modules it imports}."""
    modules = package_modules()
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = imported_names(tree, name, path.name == "__init__.py")
        graph[name] = {target for target in imported if target in modules and target != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def source_files() -> Iterator[Path]:
    """Every Python file of the project outside tests/."""
    for path in sorted(REPO.rglob("*.py")):
        relative = path.relative_to(REPO).parts
        if not any(part in _SKIPPED_DIRS or part.endswith(".egg-info") for part in relative[:-1]):
            yield path


def test_the_cycle_finder_finds_a_cycle_closed_inside_a_function():
    tree = ast.parse("import pipelines.b\n\ndef later():\n    from pipelines import a\n")
    assert set(imported_names(tree, "pipelines.b", False)) >= {"pipelines.b", "pipelines.a"}
    graph = {"pipelines.a": {"pipelines.b"}, "pipelines.b": {"pipelines.a"}, "pipelines.c": {"pipelines.a"}}
    assert cycles(graph) == [["pipelines.a", "pipelines.b"]]


def test_no_import_cycle_between_modules():
    assert cycles(import_graph()) == []


def test_no_source_file_over_300_lines():
    longer = {
        str(path.relative_to(REPO)): lines
        for path in source_files()
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert longer == {}


def test_tests_import_only_public_names():
    private = []
    for path in sorted((REPO / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PACKAGES:
                private += [
                    f"{path.name}: {node.module}.{alias.name}" for alias in node.names if alias.name[0] == "_"
                ]
    assert private == []

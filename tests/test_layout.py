"""The package's layout stays as documented: imports point one way, never in a cycle.

The module graph is read from the source (``ast``), so a cycle is caught even
when one of its imports sits inside a function.  Imports under
``if TYPE_CHECKING:`` are left out: they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vheight"

#: The pure core: no file I/O libraries, no pydicom, no streamlit.
PURE_CORE = ("calibration", "geometry", "morphometry", "comparison", "errors")


def _module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


MODULES = _module_names()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(name: str, path: Path) -> list[tuple[str, str]]:
    """``(module, imported name)`` of every import in a module that runs."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, str]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, "") for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.extend((module, alias.name) for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def _internal_target(name: str, module: str, imported: str) -> str | None:
    """The vheight module an import depends on, or None for a library."""
    candidate = f"{module}.{imported}" if imported else module
    if candidate not in MODULES:
        candidate = module
    while candidate and candidate not in MODULES:
        candidate = candidate.rpartition(".")[0]
    # Importing a submodule always imports its packages first: not an arrow back.
    if not candidate or candidate == name or name.startswith(candidate + "."):
        return None
    return candidate


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        targets = (_internal_target(name, m, i) for m, i in _imported(name, path))
        graph[name] = {t for t in targets if t is not None}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                connect(target)
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
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return components


def test_no_module_imports_in_a_cycle():
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_private_name_is_imported_from_another_module():
    offenders = [
        f"{name}: from {module} import {imported}"
        for name, path in MODULES.items()
        for module, imported in _imported(name, path)
        if module.startswith("vheight") and imported.startswith("_") and imported != "__version__"
    ]
    assert offenders == []


@pytest.mark.parametrize("module", PURE_CORE)
def test_the_pure_core_imports_no_io_or_ui_library(module):
    name = f"vheight.{module}"
    libraries = {m.partition(".")[0] for m, _ in _imported(name, MODULES[name])}
    assert not libraries & {"pydicom", "highdicom", "streamlit", "cv2", "PIL", "pandas"}


def test_only_the_ui_imports_streamlit():
    outside = [
        name
        for name, path in MODULES.items()
        if not name.startswith("vheight.ui")
        and any(m.partition(".")[0] == "streamlit" for m, _ in _imported(name, path))
    ]
    assert outside == []


def test_cli_and_the_core_arrows_point_one_way():
    graph = _graph()
    upward = [
        f"{name} -> {target}"
        for name, targets in graph.items()
        if not name.startswith(("vheight.cli", "vheight.ui")) and name != "vheight.__main__"
        for target in targets
        if target.startswith(("vheight.cli", "vheight.ui"))
    ]
    assert upward == []

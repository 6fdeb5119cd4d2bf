"""The import graph of ``src/scalemix``: no cycles, counting every import statement.

Every ``import`` and ``from ... import`` in a module counts, wherever it stands: at
module level, inside functions and under ``if TYPE_CHECKING:``. ``from .a import b``
is an edge to the module ``a.b`` when that is a module, else to ``a``; importing a
module also runs the ``__init__`` of every package above it except the root (which is
always initialised first), so those packages are edges too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "scalemix"


def _modules() -> dict[str, tuple[Path, bool]]:
    mods = {}
    for path in (SRC / ROOT).rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        mods[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return mods


def _targets(
    name: str, node: ast.Import | ast.ImportFrom, is_pkg: bool, mods: set[str]
) -> set[str]:
    if isinstance(node, ast.Import):
        found = {a.name for a in node.names if a.name in mods}
    else:
        base = node.module or ""
        if node.level:
            package = name.split(".") if is_pkg else name.split(".")[:-1]
            package = package[: len(package) - node.level + 1]
            base = ".".join([*package, *([node.module] if node.module else [])])
        found = set()
        for alias in node.names:
            full = f"{base}.{alias.name}"
            found.add(full if full in mods else base)
    out = set()
    for target in found & mods:
        parts = target.split(".")
        out |= {".".join(parts[:k]) for k in range(2, len(parts) + 1)}  # parent packages
    return out & mods


def import_graph() -> dict[str, set[str]]:
    """Module name -> the scalemix modules it imports (any import statement)."""
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for name, (path, is_pkg) in mods.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges |= _targets(name, node, is_pkg, set(mods))
        edges.discard(name)
        # a package's own __init__ is not an import of its submodules by its submodules
        graph[name] = {e for e in edges if not name.startswith(e + ".")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_finder_sees_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_graph_sees_function_level_imports(tmp_path: Path) -> None:
    tree = ast.parse("def f():\n    from .scheduler import DDPMScheduler\n")
    (node,) = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert _targets("scalemix.hub", node, False, {"scalemix", "scalemix.scheduler"}) == {
        "scalemix.scheduler"
    }


def test_no_import_cycles() -> None:
    graph = import_graph()
    assert len(graph) > 50
    cycle = find_cycle(graph)
    if cycle is not None:
        pytest.fail("import cycle in src/scalemix: " + " -> ".join(cycle))


def test_shared_types_import_nothing_of_scalemix() -> None:
    assert import_graph()["scalemix.types"] == set()

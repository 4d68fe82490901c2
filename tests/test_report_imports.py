"""No import circle in bench/report: every module's imports of other bench/report modules, at module level or
inside a function, read with `ast` (nothing is imported), form an acyclic graph."""

from __future__ import annotations

import ast
from pathlib import Path

REPORT = Path(__file__).resolve().parents[1] / "bench" / "report"
PACKAGE = "bench.report"


def _targets(node: ast.AST, module: str, names: set[str]) -> set[str]:
    """The bench/report modules one import statement names (`import bench.report.x`, `from bench.report.x
    import y`, `from bench.report import x`, `from . import x`, `from .x import y`)."""
    found = set()
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name.startswith(f"{PACKAGE}."):
                found.add(alias.name.split(".")[2])
        return found & names
    if not isinstance(node, ast.ImportFrom):
        return found
    if node.level:  # relative: from the package bench.report itself
        base = ".".join(f"{PACKAGE}.{module}".split(".")[:-node.level])
        source = f"{base}.{node.module}" if node.module else base
    else:
        source = node.module or ""
    if source == PACKAGE:
        found |= {alias.name for alias in node.names}
    elif source.startswith(f"{PACKAGE}."):
        found.add(source.split(".")[2])
    return found & names


def import_graph() -> dict[str, set[str]]:
    """Module name -> the bench/report modules it imports anywhere in its body (functions included)."""
    names = {path.stem for path in REPORT.glob("*.py")}
    graph = {}
    for name in sorted(names):
        tree = ast.parse((REPORT / f"{name}.py").read_text(), filename=f"{name}.py")
        graph[name] = set().union(*(_targets(node, name, names) for node in ast.walk(tree))) - {name}
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of the graph (its modules in order, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_reader_sees_imports_inside_functions_and_relative_ones(tmp_path):
    source = ("import bench.report.stats\nfrom bench.report import claims\nfrom . import compare\n"
              "from .latex import x\ndef f():\n    from bench.report.tables import y\n")
    tree = ast.parse(source)
    names = {"stats", "claims", "compare", "latex", "tables", "me"}
    found = set().union(*(_targets(node, "me", names) for node in ast.walk(tree)))
    assert found == {"stats", "claims", "compare", "latex", "tables"}
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_bench_report_has_no_import_circle():
    graph = import_graph()
    assert {"tables", "latex", "convergence", "paradigms"} <= set(graph)
    found = cycle(graph)
    assert found is None, "import circle in bench/report: " + " -> ".join(found or [])

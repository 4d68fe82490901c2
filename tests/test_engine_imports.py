"""The engine never imports upward: no module under bench/ has an import statement (at module level or inside a
function, read with `ast`: nothing is imported) naming `methods` or a module under it. The engine reaches
methods only by name, resolved at run time: registry targets ("module:Class" in bench/catalog.py), a family's
report module (`bench.report.tables.family_report`) and the SGCL backbone's model (bench/backbones.py)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def upward_imports(root: Path = ROOT, package: str = "bench", upper: str = "methods") -> dict[str, list[str]]:
    """Module path -> the modules under `upper` that its import statements name (relative imports stay inside
    `package`, so only absolute ones can name it)."""
    found: dict[str, list[str]] = {}
    for path in sorted((root / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        names = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names.append(node.module)
        upward = [name for name in names if name == upper or name.startswith(f"{upper}.")]
        if upward:
            found[path.relative_to(root).as_posix()] = upward
    return found


def test_no_engine_module_imports_methods():
    assert upward_imports() == {}


def test_the_check_sees_an_upward_import(tmp_path):
    (tmp_path / "bench" / "sub").mkdir(parents=True)
    (tmp_path / "bench" / "ok.py").write_text("from bench.errors import BenchError\nfrom . import methods\n")
    (tmp_path / "bench" / "sub" / "bad.py").write_text("def f():\n    from methods.backbones.cf import RecBoleCF\n")
    assert upward_imports(tmp_path) == {"bench/sub/bad.py": ["methods.backbones.cf"]}

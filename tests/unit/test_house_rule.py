"""The one rule of the house, literal: stylecore imports nothing of the orchestration stack, at import time or
lazily inside a function (ray, mlflow, dvc, fsspec, pipelines); it reaches them only through entry points."""

import ast
from pathlib import Path

FORBIDDEN = {"ray", "mlflow", "dvc", "fsspec", "s3fs", "pipelines"}
STYLECORE = Path(__file__).resolve().parents[2] / "stylecore"


def imported_roots(source: str) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_stylecore_imports_nothing_of_the_orchestration_stack():
    offenders = {str(path.relative_to(STYLECORE.parent)): sorted(imported_roots(path.read_text()) & FORBIDDEN)
                 for path in STYLECORE.rglob("*.py")}
    assert {path: found for path, found in offenders.items() if found} == {}


def test_the_check_sees_lazy_imports_inside_functions():
    assert imported_roots("def f():\n    import fsspec\n    from mlflow.tracking import X\n") == {"fsspec", "mlflow"}

"""Our own modules are imported at module level only: a function-local import that dodges a cycle
hides a misplaced module (STYLE.md). The one exception is Django's: an `AppConfig.ready()` may
import what needs the models loaded. The direction of imports itself is import-linter's contracts
(pyproject.toml, `make lint`)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OUR_PACKAGES = ("project", "users", "inventory", "orders")


def sources() -> list[Path]:
    return sorted(
        path for package in OUR_PACKAGES for path in (ROOT / package).rglob("*.py") if "migrations" not in path.parts
    )


def imported_by(node: ast.AST) -> set[str]:
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return {node.module}
    return set()


def local_imports_of_ours(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if path.name == "apps.py" and function.name == "ready":
            continue
        for node in ast.walk(function):
            found += [m for m in imported_by(node) if m.split(".")[0] in OUR_PACKAGES]
    return sorted(set(found))


def test_the_check_sees_a_function_local_import(tmp_path):
    module = tmp_path / "module.py"
    module.write_text("def f():\n    from orders import services\n")
    assert local_imports_of_ours(module) == ["orders"]


@pytest.mark.parametrize("path", sources(), ids=lambda path: str(path.relative_to(ROOT)))
def test_our_modules_are_imported_at_module_level(path):
    assert local_imports_of_ours(path) == []

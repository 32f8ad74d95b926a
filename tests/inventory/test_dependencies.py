"""How the inventory app depends on the others: it never imports orders, and it imports our own
modules at module level only (a function-local import that dodges a cycle hides a misplaced module)."""

import ast
from pathlib import Path

import inventory

INVENTORY = Path(inventory.__file__).parent
OUR_PACKAGES = {"project", "users", "inventory", "orders"}


def sources() -> list[Path]:
    return sorted(path for path in INVENTORY.rglob("*.py") if "migrations" not in path.parts)


def imported_by(node: ast.AST) -> set[str]:
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return {node.module}
    return set()


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at module level or inside a function."""
    return {
        module for node in ast.walk(ast.parse(path.read_text(), filename=str(path))) for module in imported_by(node)
    }


def imported_in_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    functions = [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)]
    return {module for function in functions for node in ast.walk(function) for module in imported_by(node)}


def test_no_inventory_module_imports_orders():
    offenders = {
        str(path.relative_to(INVENTORY.parent)): sorted(
            m for m in imported_modules(path) if m.split(".")[0] == "orders"
        )
        for path in sources()
    }
    assert {path: modules for path, modules in offenders.items() if modules} == {}


def test_inventory_imports_our_own_modules_at_module_level_only():
    offenders = {
        str(path.relative_to(INVENTORY.parent)): sorted(
            m for m in imported_in_functions(path) if m.split(".")[0] in OUR_PACKAGES
        )
        for path in sources()
    }
    assert {path: modules for path, modules in offenders.items() if modules} == {}

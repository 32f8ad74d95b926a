"""Stock must not know orders: no module of the inventory app imports the orders app."""

import ast
from pathlib import Path

import inventory

INVENTORY = Path(inventory.__file__).parent


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at module level or inside a function."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
    return modules


def test_no_inventory_module_imports_orders():
    offenders = {
        str(path.relative_to(INVENTORY.parent)): sorted(
            m for m in imported_modules(path) if m.split(".")[0] == "orders"
        )
        for path in sorted(INVENTORY.rglob("*.py"))
    }
    assert {path: modules for path, modules in offenders.items() if modules} == {}

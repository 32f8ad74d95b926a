"""Invariant checks of DESIGN.md §3 for tests (the reconcile job checks the same in production)."""

from inventory.selectors import purchase_order_breaches, stock_ledger_breaches
from orders.selectors import order_stock_breaches


def assert_ledger_invariants() -> None:
    """Invariants 1 and 2 only: for tests that reserve stock without orders."""
    breaches = stock_ledger_breaches()
    assert breaches == [], f"ledger breaches: {breaches}"


def assert_stock_invariants() -> None:
    """Invariants 1-7: levels within bounds, ledger sums (purchase order receipts too), live
    allocations, line coverage, keys, shipments, buckets."""
    breaches = {"ledger": stock_ledger_breaches(), **order_stock_breaches(), "purchases": purchase_order_breaches()}
    assert all(not rows for rows in breaches.values()), f"invariant breaches: {breaches}"

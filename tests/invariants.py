"""Invariant checks of DESIGN.md §3 for tests (the reconcile job checks the same in production)."""

from inventory.selectors import stock_ledger_breaches


def assert_stock_invariants() -> None:
    breaches = stock_ledger_breaches()
    assert breaches == [], f"stock invariant breaches: {breaches}"

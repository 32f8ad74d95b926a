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


def breaches_in(database_url: str) -> int:
    """Rows breaching invariants 1-6 in another database (a live server's: the benchmark's, an
    older release's), read in one snapshot over a connection of its own."""
    import psycopg

    from inventory.selectors import LEDGER_BREACHES_SQL
    from orders.selectors import (
        KEYS_WITH_SEVERAL_ORDERS_SQL,
        LINES_VS_ALLOCATIONS_SQL,
        RESERVED_VS_ALLOCATIONS_SQL,
        SHIPMENTS_VS_LINES_SQL,
    )

    queries = (
        LEDGER_BREACHES_SQL,
        RESERVED_VS_ALLOCATIONS_SQL,
        LINES_VS_ALLOCATIONS_SQL,
        KEYS_WITH_SEVERAL_ORDERS_SQL,
        SHIPMENTS_VS_LINES_SQL,
    )
    with psycopg.connect(database_url) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        return sum(len(conn.execute(query).fetchall()) for query in queries)

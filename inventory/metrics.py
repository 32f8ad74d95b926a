"""The inventory app's metrics (Prometheus), created with their known labels in
InventoryConfig.ready(). docs/operating.md lists them."""

from prometheus_client import Counter

from inventory.models import StockMovement

STOCK_CHANGES = Counter("stockroom_stock_changes_total", "Ledger rows written, by reason", ["reason"])
IMPORT_ROWS = Counter("stockroom_import_rows_total", "Rows of stock imports applied, by result", ["result"])


def initialise_series() -> None:
    for reason in StockMovement.Reason.values:
        STOCK_CHANGES.labels(reason=reason)
    for result in ("ok", "failed"):
        IMPORT_ROWS.labels(result=result)


def record_stock_changes(reason: str, count: int) -> None:
    """For ledger rows written in SQL (orders/placement/placement.sql, orders/expiry.sql, the import), which
    inventory.services cannot count one by one."""
    if count:
        STOCK_CHANGES.labels(reason=reason).inc(count)

"""Business metrics (Prometheus). Work in gunicorn's multiprocess mode and in workers alike."""

from prometheus_client import Counter

LOCK_RETRIES = Counter(
    "stockroom_lock_retries_total",
    "Services re-run after a lock timeout, deadlock or a changed read",
    ["service", "cause"],
)
STOCK_CHANGES = Counter("stockroom_stock_changes_total", "Ledger rows written, by reason", ["reason"])


def record_retry(service: str, cause: str) -> None:
    LOCK_RETRIES.labels(service=service, cause=cause).inc()

"""Business metrics (Prometheus) and the small hooks that feed them. docs/operating.md lists them.

Every metric here is an ordinary prometheus_client metric, so it works in each kind of process:

- web (gunicorn): multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set by gunicorn.conf.py); `/metrics`
  sums the files of every worker;
- Celery worker: prefork children write to the worker's own multiprocess folder (bin/worker sets
  it); the main process serves them on WORKER_METRICS_PORT (project.task_metrics);
- outbox relay: one process, its own registry, served on RELAY_METRICS_PORT (project.outbox_metrics).

Label values known in advance are created at start-up (`initialise_series`), so a series exists
with 0 before its first event: a rate() over it works, and an alert on it is not silently empty.

No metric is read from the database at scrape time: the pool's statistics are copied into
gauges when requests end (project.db_pool_metrics), the outbox backlog is measured by the relay
on a timer and cached there (project.outbox_metrics). A scrape never waits for PostgreSQL.
"""

import functools
import logging
import time
from collections.abc import Callable

from prometheus_client import Counter, Histogram

logger = logging.getLogger("stockroom.orders.placement")

# --- orders ------------------------------------------------------------------------------------

ORDER_OUTCOMES = ("created", "replayed", "insufficient_stock", "conflict", "invalid", "lock_timeout", "error")
ORDERS_PLACED = Counter(
    "stockroom_orders_placed_total",
    "Order placements by outcome: created, replayed (an Idempotency-Key answered again), insufficient_stock, "
    "conflict (key reused or in flight), invalid, lock_timeout (503 after retries), error (anything else)",
    ["outcome"],
)
# Lock timeout is 3 s and the service retries up to 4 times: the top buckets catch that tail.
ORDER_PLACEMENT_SECONDS = Histogram(
    "stockroom_order_placement_seconds",
    "Time in orders.services.order_place (key claim, reservation transaction and its retries), by outcome",
    ["outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15),
)
EXPIRED_RESERVATIONS = Counter(
    "stockroom_expired_reservations_total", "Unpaid orders expired by the sweep, their stock released"
)

# --- stock and locks -----------------------------------------------------------------------------

LOCK_RETRIES = Counter(
    "stockroom_lock_retries_total",
    "Services re-run after a lock timeout, deadlock or a changed read",
    ["service", "cause"],
)
STOCK_CHANGES = Counter("stockroom_stock_changes_total", "Ledger rows written, by reason", ["reason"])
LOCK_WAIT_SECONDS = Histogram(
    "stockroom_lock_wait_seconds",
    "Duration of statements that take row or advisory locks and may wait for them, by table and kind "
    "(select_for_update without SKIP LOCKED/NOWAIT, update, advisory, function: a locking SQL function such as "
    "orders_place_order). A single-row statement's time is almost all waiting; a batch UPDATE's or a "
    "function's includes its work.",
    ["table", "kind"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
SLOW_QUERIES = Counter(
    "stockroom_slow_queries_total", "Statements slower than SLOW_QUERY_MS (each is logged)", ["alias"]
)

# --- Celery tasks (project.task_metrics feeds these from Celery's signals) ---------------------------

TASK_RUNS = Counter(
    "stockroom_task_runs_total",
    "Task runs finished, by task and Celery state (success, failure, retry, ...)",
    ["task", "state"],
)
TASK_FAILURES = Counter("stockroom_task_failures_total", "Task runs that raised, by task", ["task"])
TASK_SECONDS = Histogram(
    "stockroom_task_duration_seconds",
    "Task run time (task_prerun to task_postrun), by task",
    ["task"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
)


def record_retry(service: str, cause: str) -> None:
    LOCK_RETRIES.labels(service=service, cause=cause).inc()


def record_stock_changes(reason: str, count: int) -> None:
    """For ledger rows written in SQL (orders/placement.sql, orders/expiry.sql), which inventory.services
    cannot count."""
    if count:
        STOCK_CHANGES.labels(reason=reason).inc(count)


def record_expired(count: int) -> None:
    """Called once per committed expiry chunk (orders.jobs), so a rolled-back chunk is not counted."""
    if count:
        EXPIRED_RESERVATIONS.inc(count)


def placement_outcome(exc: BaseException) -> str:
    from inventory.errors import InsufficientStock
    from project.errors import DomainError, InvalidInput, LockTimeout

    if isinstance(exc, InsufficientStock):
        return "insufficient_stock"
    if isinstance(exc, LockTimeout):
        return "lock_timeout"
    if isinstance(exc, InvalidInput):
        return "invalid"
    if isinstance(exc, DomainError) and 400 <= exc.status_code < 500:
        return "conflict"  # RequestInFlight (409), IdempotencyKeyReused (422)
    return "error"


def observe_order_placement(place: Callable) -> Callable:
    """Decorate orders.services.order_place: count each placement by outcome, time it, and log it
    (one JSON line with the request id). Costs two clock reads and one log line per order."""

    @functools.wraps(place)
    def observed(*args, **kwargs):
        started = time.perf_counter()
        try:
            result = place(*args, **kwargs)
        except BaseException as exc:
            outcome = placement_outcome(exc)
            _placed(outcome, time.perf_counter() - started, detail=getattr(exc, "code", type(exc).__name__))
            raise
        outcome = "replayed" if result.replayed else "created"
        number = result.body.get("number") if isinstance(result.body, dict) else None
        _placed(outcome, time.perf_counter() - started, number=number)
        return result

    return observed


def _placed(outcome: str, seconds: float, *, number: str | None = None, detail: str | None = None) -> None:
    ORDERS_PLACED.labels(outcome=outcome).inc()
    ORDER_PLACEMENT_SECONDS.labels(outcome=outcome).observe(seconds)
    level = logging.ERROR if outcome == "error" else logging.INFO
    logger.log(
        level,
        "order placement %s%s",
        outcome,
        f" {number}" if number else "",
        extra={"outcome": outcome, "order_number": number, "detail": detail, "duration_ms": round(seconds * 1000, 1)},
    )


# --- series that exist before their first event ---------------------------------------------------


def initialise_series() -> None:
    """Create the label combinations known at start-up with value 0 (called from ProjectConfig.ready).

    Other modules' counters (rate limiter, relay, imports) are initialised here too, so their
    owners need no start-up code of their own.
    """
    from inventory.models import StockMovement
    from project import ratelimit, relay

    for outcome in ORDER_OUTCOMES:
        ORDERS_PLACED.labels(outcome=outcome)
        ORDER_PLACEMENT_SECONDS.labels(outcome=outcome)
    for reason in StockMovement.Reason.values:
        STOCK_CHANGES.labels(reason=reason)
    # The order service's retries, the ones the dashboard watches first.
    # (project.db.retry_cause: `Retry`, or PostgreSQL's error; orders_place_order is the
    # one-round-trip placement of orders/placement.sql.)
    for service in ("_create_order", "orders_place_order"):
        for cause in ("LockNotAvailable", "DeadlockDetected", "Retry"):
            LOCK_RETRIES.labels(service=service, cause=cause)
    SLOW_QUERIES.labels(alias="default")
    for group in ratelimit.GROUPS:
        ratelimit.LIMITED.labels(group=group)
        ratelimit.REDIS_FAILURES.labels(group=group)
    for cause in ("broker", "database"):
        relay.OUTBOX_RELAY_FAILURES.labels(cause=cause)
    try:
        from inventory.imports import IMPORT_ROWS
    except ImportError:  # the import app is optional for the metrics; never block start-up on it
        return
    for result in ("ok", "failed"):
        IMPORT_ROWS.labels(result=result)


def initialise_task_series(task_names) -> None:
    """A zero series per registered task (the worker calls this at start)."""
    for name in task_names:
        TASK_RUNS.labels(task=name, state="success")
        TASK_FAILURES.labels(task=name)
        TASK_SECONDS.labels(task=name)

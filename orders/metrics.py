"""The orders app's metrics (Prometheus), created with their known labels in OrdersConfig.ready().
docs/operating.md lists them; project.observability.metrics says how each process serves them."""

import functools
import logging
import time
from collections.abc import Callable

from prometheus_client import Counter, Histogram

from inventory.errors import InsufficientStock
from project.errors import DomainError, InvalidInput, LockTimeout
from project.observability.metrics import initialise_retry_series

logger = logging.getLogger("stockroom.orders.placement")

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
    "Time in orders.placement.order_place (key claim, reservation transaction and its retries), by outcome",
    ["outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15),
)
EXPIRED_RESERVATIONS = Counter(
    "stockroom_expired_reservations_total", "Unpaid orders expired by the sweep, their stock released"
)
# The services whose lock retries the dashboard watches first: the ORM placement's transaction and
# the one-round-trip placement of orders/placement/placement.sql.
WATCHED_RETRY_SERVICES = ("_create_order", "orders_place_order")
# SQL functions that run a whole locking transaction step in one statement (their time is observed
# as a lock wait of kind `function`, project.observability.queries).
LOCKING_SQL_FUNCTIONS = ("orders_place_order",)


def initialise_series() -> None:
    for outcome in ORDER_OUTCOMES:
        ORDERS_PLACED.labels(outcome=outcome)
        ORDER_PLACEMENT_SECONDS.labels(outcome=outcome)
    initialise_retry_series(WATCHED_RETRY_SERVICES)


def record_expired(count: int) -> None:
    """Called once per committed expiry chunk (orders.jobs), so a rolled-back chunk is not counted."""
    if count:
        EXPIRED_RESERVATIONS.inc(count)


def placement_outcome(exc: BaseException) -> str:
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
    """Decorate orders.placement.order_place: count each placement by outcome, time it, and log it
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

"""Batch services of the orders app, run by Celery tasks (orders.tasks) and admin actions.

Each batch service commits per chunk, so progress is visible and a crash loses one chunk at most,
and is safe to run twice at once: chunks are claimed with FOR UPDATE SKIP LOCKED, singletons take
a transaction-scoped advisory lock. Lock order inside a chunk is the system's: order rows, then
every stock level the chunk touches, by pk, in one statement, before any of them changes.
"""

import csv
import io
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, F, Sum
from django.utils import timezone

from inventory import locks as stock_locks
from inventory.exports import inert
from inventory.metrics import record_stock_changes
from inventory.models import StockLevel, StockMovement
from inventory.selectors import purchase_order_breaches, stock_ledger_breaches
from orders import locks
from orders.emails import SEND_ORDER_EMAIL
from orders.metrics import record_expired
from orders.models import Allocation, BulkFulfilment, IdempotencyKey, Order, OrderLine, ReconciliationRun, SalesReport
from orders.selectors import order_stock_breaches
from orders.services import SHIPPABLE, order_fulfil
from project.db.transactions import atomic_with_retry, raise_statement_timeout, try_advisory_xact_lock
from project.errors import InvalidInput
from project.observability.logs import request_id_var
from project.outbox.services import notify_relay, outbox_enqueue
from project.values import is_whole_number

logger = logging.getLogger("stockroom.orders.jobs")

Status = Order.Status
BULK_FULFIL_TASK = "orders.bulk_fulfil"
BULK_FULFIL_MAX_ORDERS = 10_000
RECONCILE_LOCK = "orders:reconcile_stock"
PRUNE_CHUNK = 5000


def order_ids_checked(order_ids, *, limit: int = BULK_FULFIL_MAX_ORDERS) -> list[int]:
    """A sorted, de-duplicated list of positive order ids, or InvalidInput."""
    if not isinstance(order_ids, (list, tuple)) or not order_ids:
        raise InvalidInput(fields={"order_ids": ["A non-empty list of order ids is required."]})
    if len(order_ids) > limit:  # counted before any id is looked at
        raise InvalidInput(fields={"order_ids": [f"At most {limit} orders at once."]})
    bad = [i for i in order_ids if not is_whole_number(i, minimum=1)]
    if bad:
        raise InvalidInput(fields={"order_ids": [f"Not order ids: {bad[:10]!r}."]})
    ids = sorted(set(order_ids))
    if len(ids) > limit:
        raise InvalidInput(fields={"order_ids": [f"At most {limit} orders at once."]})
    return ids


def _lock_levels_of(allocations: Iterable[tuple[int, int, int, str]]) -> None:
    # Every level of the chunk in one pk-ordered statement, before the per-order primitives
    # lock their subsets again: order by order alone would take a lower pk after a higher one.
    stock_locks.lock_stock_levels({level_id for _, level_id, _, _ in allocations})


def _allocations_by_order(order_ids: Sequence[int]) -> list[tuple[int, int, int, str]]:
    return list(
        Allocation.objects.filter(line__order_id__in=order_ids)
        .order_by("pk")
        .values_list("line__order_id", "stock_level_id", "quantity", "line__product__sku")
    )


# --- expiry ------------------------------------------------------------------------------------


@atomic_with_retry
def _expire_chunk(*, limit: int, order_ids: Sequence[int] | None, after: tuple) -> tuple[int, tuple]:
    """Expire one chunk in one call of orders_expire_chunk (orders/expiry.sql); returns how many
    and the (expires_at, id) to continue after."""
    raise_statement_timeout(settings.BATCH_STATEMENT_TIMEOUT_MS)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT * FROM orders_expire_chunk(%s, %s, %s, %s, %s, %s, %s)",
            [timezone.now(), limit, *after, order_ids, SEND_ORDER_EMAIL, request_id_var.get() or ""],
        )
        expired, last_expires, last_id, ledger_rows, _skus = cursor.fetchone()
    if not expired:
        return 0, after
    notify_relay()
    record_stock_changes(StockMovement.Reason.EXPIRY, ledger_rows)
    return expired, (last_expires, last_id)


def expire_reservations(*, order_ids: Iterable[int] | None = None, chunk_size: int | None = None) -> int:
    """Expire every reserved order whose time to pay has run out, releasing its stock.

    Chunks of `chunk_size` (EXPIRY_CHUNK_SIZE) orders, each claimed with FOR UPDATE SKIP LOCKED
    and committed on its own: several sweepers (beat, the admin, a second worker) share the
    backlog and each order is released exactly once: its status set to `expired` (claimed rows,
    still `reserved`), its units released with its own `expiry` ledger rows (one per level it
    held, reference: its number), its email enqueued (outbox). `order_ids`
    limits the sweep to those orders (the admin's selection). Returns the orders expired.
    """
    limit = chunk_size or settings.EXPIRY_CHUNK_SIZE
    ids = order_ids_checked(list(order_ids)) if order_ids is not None else None
    total, after = 0, (datetime.min.replace(tzinfo=UTC), 0)  # before every (expires_at, id)
    while True:
        expired, after = _expire_chunk(limit=limit, order_ids=ids, after=after)
        total += expired
        record_expired(expired)  # after the chunk committed: a rolled-back chunk is not counted
        if expired < limit:  # the rest, if any, is held by another sweeper
            return total


# --- bulk fulfilment ------------------------------------------------------------------------------


@dataclass
class ChunkOutcome:
    fulfilled: list[int] = field(default_factory=list)
    locked: list[int] = field(default_factory=list)
    not_paid: list[int] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)


def bulk_fulfilment_request(*, order_ids, actor=None) -> BulkFulfilment:
    """Record a request to fulfil these orders and enqueue its job, in one transaction (outbox).
    InvalidInput if the ids are not a non-empty list of ids (at most 10,000)."""
    ids = order_ids_checked(order_ids)
    with transaction.atomic():
        run = BulkFulfilment.objects.create(order_ids=ids, requested_by=actor)
        outbox_enqueue(task=BULK_FULFIL_TASK, kwargs={"order_ids": ids, "run_id": run.pk})
    return run


@atomic_with_retry
def _fulfil_chunk(*, run_id: int, ids: list[int], actor) -> ChunkOutcome:
    outcome = ChunkOutcome()
    taken = locks.lock_orders_skip_locked(ids)
    taken_ids = {order.pk for order in taken}
    existing = set(Order.objects.filter(pk__in=ids).values_list("pk", flat=True))
    outcome.missing = [i for i in ids if i not in existing]
    outcome.locked = [i for i in ids if i in existing and i not in taken_ids]
    paid = [order for order in taken if order.status in SHIPPABLE]  # paid, or partly shipped
    outcome.not_paid = [order.pk for order in taken if order.status not in SHIPPABLE]
    if paid:
        _lock_levels_of(_allocations_by_order([order.pk for order in paid]))
    for order in paid:
        order_fulfil(order_id=order.pk, actor=actor)  # a savepoint in this chunk's transaction
        outcome.fulfilled.append(order.pk)
    # The report grows in the chunk's own transaction: a crash loses the chunk and its lines together.
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE orders_bulkfulfilment
               SET fulfilled = fulfilled || %s::jsonb, locked = locked || %s::jsonb,
                   not_paid = not_paid || %s::jsonb, missing = missing || %s::jsonb
             WHERE id = %s
            """,
            [_json(outcome.fulfilled), _json(outcome.locked), _json(outcome.not_paid), _json(outcome.missing), run_id],
        )
    return outcome


def _json(ids: list[int]) -> str:
    return "[" + ",".join(str(int(i)) for i in ids) + "]"


def bulk_fulfil(*, order_ids, run_id: int | None = None, actor=None, chunk_size: int | None = None) -> BulkFulfilment:
    """Fulfil the paid orders among `order_ids`, a chunk per transaction, and report the others.

    Each chunk locks its ids in pk order with SKIP LOCKED: an order held by another transaction
    is not waited for but reported in `locked`; orders not in `paid` go to `not_paid`, unknown
    ids to `missing`. Results are recorded on the BulkFulfilment row `run_id` (created when not
    given) in the chunk's transaction. Idempotent: a run that is done is returned as it is, and
    a run interrupted half-way resumes with the ids it has not decided yet.
    """
    ids = order_ids_checked(order_ids)
    limit = chunk_size or settings.BULK_FULFIL_CHUNK_SIZE
    if run_id is None:
        run = BulkFulfilment.objects.create(order_ids=ids, requested_by=actor)
    else:
        run = BulkFulfilment.objects.filter(pk=run_id).first()
        if run is None:
            raise InvalidInput(fields={"run_id": [f"No bulk fulfilment #{run_id}."]})
        if run.state == BulkFulfilment.State.DONE:
            return run
    BulkFulfilment.objects.filter(pk=run.pk).update(state=BulkFulfilment.State.RUNNING)
    run.refresh_from_db()
    decided = set(run.fulfilled) | set(run.locked) | set(run.not_paid) | set(run.missing)
    todo = [i for i in ids if i not in decided]
    for start in range(0, len(todo), limit):
        _fulfil_chunk(run_id=run.pk, ids=todo[start : start + limit], actor=actor)
    BulkFulfilment.objects.filter(pk=run.pk).update(state=BulkFulfilment.State.DONE, finished_at=timezone.now())
    run.refresh_from_db()
    logger.info(
        "bulk fulfilment %s: %d fulfilled, %d locked, %d not paid, %d missing",
        run.pk,
        len(run.fulfilled),
        len(run.locked),
        len(run.not_paid),
        len(run.missing),
        extra={"locked": run.locked[:100], "not_paid": run.not_paid[:100], "missing": run.missing[:100]},
    )
    return run


# --- daily sales report ------------------------------------------------------------------------------

CSV_HEADER = ["sku", "name", "orders", "units", "revenue"]


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """The first instant of `day` and of the next day, in settings.TIME_ZONE (DST-aware)."""
    zone = ZoneInfo(settings.TIME_ZONE)
    start = datetime.combine(day, time.min, tzinfo=zone)
    return start, datetime.combine(day + timedelta(days=1), time.min, tzinfo=zone)


def yesterday() -> date:
    return timezone.now().astimezone(ZoneInfo(settings.TIME_ZONE)).date() - timedelta(days=1)


def sales_report_generate(*, day: date) -> SalesReport:
    """The CSV of one day's sales: orders paid that day (in TIME_ZONE), less those cancelled
    (refunded) since, one row per SKU and a total. Idempotent: the day's row is replaced."""
    start, end = day_bounds(day)
    sold = Order.objects.filter(paid_at__gte=start, paid_at__lt=end).exclude(status=Status.CANCELLED)
    rows = (
        OrderLine.objects.filter(order__in=sold)
        .values("product__sku", "product__name")
        .annotate(
            orders=Count("order", distinct=True), units=Sum("quantity"), revenue=Sum(F("quantity") * F("unit_price"))
        )
        .order_by("product__sku")
    )
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_HEADER)
    units, revenue = 0, Decimal("0.00")
    for row in rows:
        writer.writerow(
            [inert(row["product__sku"]), inert(row["product__name"]), row["orders"], row["units"], row["revenue"]]
        )
        units += row["units"]
        revenue += row["revenue"]
    order_count = sold.count()
    writer.writerow(["TOTAL", "", order_count, units, revenue])
    report, _ = SalesReport.objects.update_or_create(
        day=day,
        defaults={
            "time_zone": settings.TIME_ZONE,
            "orders": order_count,
            "units": units,
            "revenue": revenue,
            "currency": settings.SHOP_CURRENCY,
            "csv": out.getvalue(),
            "generated_at": timezone.now(),
        },
    )
    return report


# --- housekeeping ----------------------------------------------------------------------------------


def idempotency_keys_prune(*, older_than_hours: int | None = None) -> int:
    """Delete idempotency keys older than IDEMPOTENCY_KEEP_HOURS, a chunk per transaction.
    After that a client's retry with an old key places a new order, which the API documents."""
    hours = older_than_hours if older_than_hours is not None else settings.IDEMPOTENCY_KEEP_HOURS
    if not is_whole_number(hours, minimum=1):
        raise InvalidInput(fields={"older_than_hours": ["Must be a whole number of hours, at least 1."]})
    cutoff = timezone.now() - timedelta(hours=hours)
    total = 0
    while True:
        with transaction.atomic():
            chunk = list(
                IdempotencyKey.objects.filter(created_at__lt=cutoff)
                .order_by("pk")
                .values_list("pk", flat=True)[:PRUNE_CHUNK]
            )
            deleted, _ = IdempotencyKey.objects.filter(pk__in=chunk, created_at__lt=cutoff).delete()
        total += deleted
        if len(chunk) < PRUNE_CHUNK:
            return total


# --- reconciliation -------------------------------------------------------------------------------

ORDER_CHECKS = {
    "reserved_vs_allocations": 3,
    "lines_vs_allocations": 4,
    "idempotency_key_orders": 5,
    "shipments_vs_lines": 6,
}


def _jsonable(row: dict) -> dict:
    clean = {}
    for key, value in row.items():
        if isinstance(value, Decimal):
            value = int(value) if value == value.to_integral_value() else str(value)
        elif isinstance(value, (datetime, date)):
            value = value.isoformat()
        clean[key] = value
    return clean


def _breaches(ledger: list[dict], orders: dict[str, list[dict]], purchases: list[dict]) -> list[dict]:
    found = []
    for row in ledger:
        if row["reserved"] < 0 or row["on_hand"] < row["reserved"]:
            found.append({"invariant": 1, "check": "level_bounds", "row": _jsonable(row)})
        if not 0 <= row["backordered"] <= row["backorder_cap"]:
            found.append({"invariant": 1, "check": "backorder_cap", "row": _jsonable(row)})
        if (
            row["on_hand"] != row["ledger_on_hand"]
            or row["reserved"] != row["ledger_reserved"]
            or row["backordered"] != row["ledger_backordered"]
        ):
            found.append({"invariant": 2, "check": "ledger_sums", "row": _jsonable(row)})
    for check, invariant in ORDER_CHECKS.items():
        found += [{"invariant": invariant, "check": check, "row": _jsonable(row)} for row in orders.get(check, [])]
    # The ledger explains what each purchase order line received (invariant 2's receipts).
    found += [{"invariant": 2, "check": "purchase_order_receipts", "row": _jsonable(row)} for row in purchases]
    return found


def reconcile_stock(*, requested_by=None) -> ReconciliationRun | None:
    """Check every invariant of DESIGN §3 in one REPEATABLE READ READ ONLY snapshot and record
    the run with each breach and its row. Singleton: returns None while another run holds the
    advisory lock. Locks no row (a snapshot read); must be called outside any transaction.
    """
    if connection.in_atomic_block:
        raise RuntimeError("reconcile_stock opens its own snapshot transaction; call it outside one")
    started = timezone.now()
    with transaction.atomic():
        with connection.cursor() as cursor:
            # Must be the transaction's first statement: every check below sees one snapshot.
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        raise_statement_timeout(settings.BATCH_STATEMENT_TIMEOUT_MS)
        if not try_advisory_xact_lock(RECONCILE_LOCK):
            logger.info("reconciliation skipped: another run is in progress")
            return None
        levels = StockLevel.objects.count()
        breaches = _breaches(stock_ledger_breaches(), order_stock_breaches(), purchase_order_breaches())
    run = ReconciliationRun.objects.create(
        started_at=started,
        finished_at=timezone.now(),
        outcome=ReconciliationRun.Outcome.BREACHES if breaches else ReconciliationRun.Outcome.CLEAN,
        breach_count=len(breaches),
        breaches=breaches,
        levels_checked=levels,
        requested_by=requested_by,
    )
    log = logger.error if breaches else logger.info
    log("reconciliation %s: %d breaches over %d stock levels", run.pk, len(breaches), levels)
    return run

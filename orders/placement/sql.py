"""Placing an order in one round trip: the `conditional` strategy with ORDER_PLACEMENT_IN_SQL.

One call of orders_place_order (placement.sql beside this module, installed by the orders
migrations) claims the idempotency key, then takes the same steps, checks, ledger rows and lock
order as the ORM path (orders.placement.orm), in one transaction.
"""

import json
from collections.abc import Sequence
from contextlib import nullcontext
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.utils import timezone

from inventory.errors import InsufficientStock
from inventory.metrics import record_stock_changes
from orders.emails import SEND_ORDER_EMAIL
from orders.errors import IdempotencyKeyReused, RequestInFlight
from orders.idempotency import store_refusal
from orders.placement.body import sql_body
from orders.placement.request import OrderLineRequest, PlacementResult, check_line_shape, new_order_number
from project.db.transactions import Retry, retry_lock_errors
from project.errors import InvalidInput
from project.observability.logs import request_id_var
from project.outbox.services import outbox_notify_channel

# Plans per order call of orders_place_order before it gives up and the caller retries.
PLACEMENT_ATTEMPTS = 20
PLACE_ORDER_SQL = "SELECT orders_place_order(%s, %s, %s, %s::jsonb, %s::jsonb" + ", %s" * 10 + ")"


def place_in_one_round_trip(
    *,
    user,
    lines: Sequence[OrderLineRequest],
    shipping_address: dict,
    reference: str,
    idempotency_key: str | None,
    fingerprint: str,
) -> PlacementResult:
    """The whole placement as one call of orders_place_order: the key's claim, then the same
    steps, checks, ledger rows and lock order as the ORM path, in one transaction and one round
    trip. Runs in autocommit, or in a savepoint inside a caller's transaction. Retries lock
    timeouts, deadlocks and lost races (SR503) with jitter, then LockTimeout; an order number
    drawn twice is drawn again."""
    check_line_shape(lines)
    now = timezone.now()
    arguments = [
        user.pk, user.email, None,
        json.dumps([{"sku": line.sku, "quantity": line.quantity} for line in lines]),
        json.dumps(shipping_address), reference, settings.SHOP_CURRENCY,
        now + timedelta(minutes=settings.ORDER_RESERVATION_MINUTES),
        request_id_var.get() or "", SEND_ORDER_EMAIL, outbox_notify_channel(), PLACEMENT_ATTEMPTS,
        idempotency_key, fingerprint, now + timedelta(seconds=settings.IDEMPOTENCY_LEASE_SECONDS),
    ]  # fmt: skip

    def place() -> dict:
        arguments[2] = new_order_number()
        try:
            with transaction.atomic() if connection.in_atomic_block else nullcontext(), connection.cursor() as cursor:
                cursor.execute(PLACE_ORDER_SQL, arguments)
                return json.loads(cursor.fetchone()[0])  # Django has psycopg hand jsonb over as text
        except IntegrityError as exc:
            if "orders_order_number_key" in str(exc):
                raise Retry("An order number was drawn twice.") from exc
            raise
        except DatabaseError as exc:
            sqlstate = getattr(exc.__cause__, "sqlstate", None)
            if sqlstate == "SR410":
                raise RequestInFlight("This Idempotency-Key was completed by another request.") from None
            if sqlstate == "SR503":
                raise Retry("Availability kept changing while the order was planned.") from exc
            raise

    result = retry_lock_errors(place, name="orders_place_order")
    claim = result.get("claim")
    if claim == "replay":
        return PlacementResult(result["status"], result["body"], replayed=True)
    if claim == "reused":
        raise IdempotencyKeyReused()
    if claim == "in_flight":
        raise RequestInFlight()
    refusal = result.get("refusal")
    if refusal is not None:
        error = InvalidInput(fields=result["fields"]) if refusal == "invalid" else InsufficientStock(result["items"])
        if result["claim_id"] is not None:  # committed with the refusal: store it for replays
            store_refusal(result["claim_id"], error)
        raise error
    body = result["body"]
    # What inventory.services does for the ORM path: the ledger rows the SQL function wrote are counted.
    record_stock_changes("reservation", sum(len(line["allocations"]) for line in body["lines"]))
    return PlacementResult(201, sql_body(body), replayed=False)

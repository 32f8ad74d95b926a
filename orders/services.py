"""Every write of the orders app: placing orders (idempotent) and their lifecycle.

Lock order: the order row first, then stock levels by pk through the inventory primitives.
Each service called from an edge runs in one transaction with bounded retries on lock timeouts
and deadlocks (then 503 `lock_timeout`). Every stock effect writes its ledger rows.
"""

import json
import secrets
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from inventory import services as stock
from inventory.cache import catalogue_changed
from inventory.errors import InsufficientStock
from inventory.metrics import record_stock_changes
from inventory.models import Product, StockLevel, StockMovement, Warehouse
from orders import locks
from orders.emails import order_email_enqueue
from orders.errors import IdempotencyKeyReused, InvalidTransition, RequestInFlight, ReservationExpired
from orders.metrics import observe_order_placement
from orders.models import Allocation, IdempotencyKey, Order, OrderLine
from project.db.transactions import Retry, atomic_with_retry, retry_lock_errors
from project.errors import DomainError, InvalidInput, NotFound, PreconditionFailed, envelope

Status = Order.Status
# Plans per order call of orders_place_order before it gives up and the caller retries.
PLACEMENT_ATTEMPTS = 20
NUMBER_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"  # no 0/O, 1/I: read aloud on the phone


@dataclass(frozen=True)
class OrderLineRequest:
    sku: str
    quantity: int


@dataclass
class PlacementResult:
    """What the client gets: a new order (201) or the first response again (`replayed`)."""

    status: int
    body: dict
    replayed: bool
    placed: Order | None = None

    @property
    def order(self) -> Order | None:
        """The order this response is about (loaded on first use: the hot path does not need it)."""
        if self.placed is None and isinstance(self.body, dict) and "number" in self.body:
            self.placed = Order.objects.filter(number=self.body["number"]).first()
        return self.placed


def new_order_number() -> str:
    body = "".join(secrets.choice(NUMBER_ALPHABET) for _ in range(8))
    return f"SR-{body[:4]}-{body[4:]}"


# --- idempotency ------------------------------------------------------------------------------


def _claim_idempotency_key(*, user, key: str, fingerprint: str) -> tuple[int | None, PlacementResult | None]:
    """Phase one, committed before the order transaction: claim the key or learn its fate.

    Returns (claim id, None) when this request may proceed, or (None, replay) with the stored
    first response. Raises IdempotencyKeyReused (another body) or RequestInFlight (its twin is
    still running and its lease has not run out). A lease left by a crashed request is taken over.
    """
    now = timezone.now()
    lease = now + timedelta(seconds=settings.IDEMPOTENCY_LEASE_SECONDS)
    # One autocommit statement on the happy path: the claim is committed before the order starts.
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO orders_idempotencykey (user_id, key, fingerprint, state, lease_expires_at, created_at)
            VALUES (%s, %s, %s, %s, %s, %s)
            ON CONFLICT (user_id, key) DO NOTHING
            RETURNING id
            """,
            [user.pk, key, fingerprint, IdempotencyKey.State.IN_FLIGHT, lease, now],
        )
        claimed = cursor.fetchone()
        if claimed is not None:
            return claimed[0], None
        existing = IdempotencyKey.objects.filter(user=user, key=key).first()
        if existing is None:  # pruned between the insert and the read: claim again
            return _claim_idempotency_key(user=user, key=key, fingerprint=fingerprint)
        if existing.fingerprint != fingerprint:
            raise IdempotencyKeyReused()
        if existing.state == IdempotencyKey.State.COMPLETE:
            return None, PlacementResult(existing.response_status, existing.response_body, replayed=True)
        taken_over = IdempotencyKey.objects.filter(
            pk=existing.pk, state=IdempotencyKey.State.IN_FLIGHT, lease_expires_at__lt=now
        ).update(lease_expires_at=lease)
        if not taken_over:
            raise RequestInFlight()
        return existing.pk, None


def _store_refusal(claim_id: int, error: DomainError) -> None:
    body = envelope(error.code, error.detail, error.fields, **error.extra)
    IdempotencyKey.objects.filter(pk=claim_id, state=IdempotencyKey.State.IN_FLIGHT).update(
        state=IdempotencyKey.State.COMPLETE, response_status=int(error.status_code), response_body=body
    )


def _drop_claim(claim_id: int) -> None:
    IdempotencyKey.objects.filter(pk=claim_id, state=IdempotencyKey.State.IN_FLIGHT).delete()


# --- placing ----------------------------------------------------------------------------------


def _check_line_count(lines: Sequence[OrderLineRequest]) -> None:
    """One line per SKU, 1 to ORDER_MAX_LINES lines (both placement paths, before any query)."""
    skus = [line.sku for line in lines]
    if len(set(skus)) != len(skus):
        raise InvalidInput(fields={"lines": ["Each SKU may appear on one line only."]})
    if not lines or len(lines) > settings.ORDER_MAX_LINES:
        raise InvalidInput(fields={"lines": [f"An order has 1 to {settings.ORDER_MAX_LINES} lines."]})


def _quantity_errors(line: OrderLineRequest) -> dict:
    quantity = line.quantity
    if not isinstance(quantity, bool) and isinstance(quantity, int) and 1 <= quantity <= settings.ORDER_MAX_QUANTITY:
        return {}
    return {"quantity": [f"Must be a whole number from 1 to {settings.ORDER_MAX_QUANTITY}."]}


def _products_for(lines: Sequence[OrderLineRequest]) -> list[tuple[Product, int]]:
    _check_line_count(lines)
    products = {p.sku: p for p in Product.objects.filter(sku__in=[line.sku for line in lines])}
    problems, found = [], []
    for line in lines:
        product = products.get(line.sku)
        errors = {}
        if product is None:
            errors["sku"] = [f"Unknown SKU {line.sku!r}."]
        elif not product.active:
            errors["sku"] = [f"{line.sku!r} is no longer sold."]
        errors.update(_quantity_errors(line))
        problems.append(errors)
        found.append((product, line.quantity))
    if any(problems):
        raise InvalidInput(fields={"lines": problems})
    return found


def _attach_for_rendering(order, user, order_lines, products, rows, allocations) -> None:
    """Fill the relation caches the serializer reads, so rendering inside the transaction
    (while stock rows are locked) costs no query."""
    product_by_id = {product.pk: product for product, _ in products}
    per_line: dict[int, list[Allocation]] = {line.pk: [] for line in order_lines}
    for row, allocation in zip(rows, allocations, strict=True):
        warehouse = Warehouse(pk=allocation.warehouse_id, code=allocation.warehouse_code)
        row.stock_level = StockLevel(pk=allocation.level_id, warehouse=warehouse)
        per_line[row.line_id].append(row)
    for line in order_lines:
        line.product = product_by_id[line.product_id]
        line._prefetched_objects_cache = {"allocations": per_line[line.pk]}
    order.user = user
    order._prefetched_objects_cache = {"lines": order_lines}


@atomic_with_retry
def _create_order(
    *, user, lines: Sequence[OrderLineRequest], shipping_address: dict, reference: str, claim_id: int | None, render
) -> tuple[Order, dict]:
    products = _products_for(lines)
    now = timezone.now()
    order = Order(
        number=new_order_number(),
        user=user,
        total=sum((product.price * quantity for product, quantity in products), Decimal("0.00")),
        currency=settings.SHOP_CURRENCY,
        reference=reference,
        expires_at=now + timedelta(minutes=settings.ORDER_RESERVATION_MINUTES),
        **{f"shipping_{field}": value for field, value in shipping_address.items()},
    )
    order.save()  # a number collision (32^8 numbers) raises IntegrityError: order_place runs again
    order_lines = OrderLine.objects.bulk_create(
        [
            OrderLine(order=order, product=product, quantity=quantity, unit_price=product.price)
            for product, quantity in products
        ]
    )
    order_email_enqueue(order_id=order.pk, kind="placed")  # outbox row: commits with the order or not at all
    # Stock levels are locked last (the system's lock order) and held for as short as possible.
    allocations = stock.reserve_stock(lines=products, reference=order.number, actor=user)
    line_for_product = {line.product_id: line for line in order_lines}
    rows = Allocation.objects.bulk_create(
        [
            Allocation(line=line_for_product[a.product_id], stock_level_id=a.level_id, quantity=a.quantity)
            for a in allocations
        ]
    )
    _attach_for_rendering(order, user, order_lines, products, rows, allocations)
    body = render(order)
    if claim_id is not None:
        completed = IdempotencyKey.objects.filter(pk=claim_id, state=IdempotencyKey.State.IN_FLIGHT).update(
            state=IdempotencyKey.State.COMPLETE, response_status=201, response_body=body, order=order
        )
        if not completed:
            raise RequestInFlight("This Idempotency-Key was completed by another request.")
    return order, body


ORDER_FIELDS = (
    "number", "status", "customer", "reference", "lines", "total", "currency", "paid_amount", "shipping_address",
    "version", "expires_at", "created_at", "updated_at", "paid_at", "fulfilled_at", "returned_at", "cancelled_at",
    "expired_at",
)  # fmt: skip
LINE_FIELDS = ("sku", "name", "quantity", "unit_price", "allocations")


def _check_line_shape(lines: Sequence[OrderLineRequest]) -> None:
    """The checks of _products_for that need no database (the SQL function checks the SKUs)."""
    _check_line_count(lines)
    problems = [_quantity_errors(line) for line in lines]
    if any(problems):
        raise InvalidInput(fields={"lines": problems})


PLACE_ORDER_SQL = "SELECT orders_place_order(%s, %s, %s, %s::jsonb, %s::jsonb" + ", %s" * 10 + ")"


def _place_in_one_round_trip(
    *,
    user,
    lines: Sequence[OrderLineRequest],
    shipping_address: dict,
    reference: str,
    idempotency_key: str | None,
    fingerprint: str,
) -> PlacementResult:
    """The `conditional` strategy's whole placement as one call of orders_place_order
    (orders/placement.sql): the key's claim, then the same steps, checks, ledger rows and lock
    order as _create_order, in one transaction and one round trip. Runs in autocommit, or in a
    savepoint inside a caller's transaction. Retries lock timeouts, deadlocks and lost races
    (SR503) with jitter, then LockTimeout; an order number drawn twice is drawn again."""
    from orders.emails import SEND_ORDER_EMAIL
    from project.observability.logs import request_id_var
    from project.outbox.services import outbox_notify_channel

    _check_line_shape(lines)
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
            _store_refusal(result["claim_id"], error)
        raise error
    body = result["body"]
    # What inventory.services does for the ORM path: the ledger rows the SQL function wrote are
    # counted, and the cached availability of what it reserved is replaced after commit.
    record_stock_changes("reservation", sum(len(line["allocations"]) for line in body["lines"]))
    catalogue_changed([line.sku for line in lines])
    body["lines"] = [{key: line[key] for key in LINE_FIELDS} for line in body["lines"]]
    return PlacementResult(201, {key: body[key] for key in ORDER_FIELDS}, replayed=False)


@observe_order_placement
def order_place(
    *,
    user,
    lines: Sequence[OrderLineRequest],
    shipping_address: dict,
    render: Callable[[Order], dict],
    reference: str = "",
    idempotency_key: str | None = None,
    fingerprint: str = "",
) -> PlacementResult:
    """Place an order: reserve every line across warehouses by priority, or reserve nothing.

    Idempotent per (user, key): the order and the key's stored response commit together. Domain
    refusals (4xx) are stored and replayed; anything else leaves no claim, so a retry runs again.
    The `conditional` strategy claims the key inside its one transaction (orders/placement.sql);
    the others claim and commit it first, and drop the claim on failure. Raises
    InsufficientStock (409), InvalidInput (400), IdempotencyKeyReused (422), RequestInFlight
    (409), LockTimeout (503).
    """
    if settings.ORDER_PLACEMENT_IN_SQL and settings.STOCK_RESERVATION_STRATEGY == "conditional":
        return _place_in_one_round_trip(
            user=user,
            lines=lines,
            shipping_address=shipping_address,
            reference=reference,
            idempotency_key=idempotency_key,
            fingerprint=fingerprint,
        )
    claim_id = None
    if idempotency_key is not None:
        claim_id, replay = _claim_idempotency_key(user=user, key=idempotency_key, fingerprint=fingerprint)
        if replay is not None:
            return replay
    try:
        for attempt in range(3):
            try:
                order, body = _create_order(
                    user=user,
                    lines=lines,
                    shipping_address=shipping_address,
                    reference=reference,
                    claim_id=claim_id,
                    render=render,
                )
                break
            except IntegrityError as exc:  # an order number drawn twice: draw again
                if attempt == 2 or "orders_order_number_key" not in str(exc):
                    raise
    except DomainError as error:
        if claim_id is not None:
            if 400 <= error.status_code < 500:
                _store_refusal(claim_id, error)
            else:
                _drop_claim(claim_id)
        raise
    except BaseException:
        if claim_id is not None:
            _drop_claim(claim_id)
        raise
    return PlacementResult(201, body, replayed=False, placed=order)


# --- lifecycle --------------------------------------------------------------------------------


def _allocations_of(order: Order) -> tuple[list[tuple[int, int]], list[str]]:
    rows = Allocation.objects.filter(line__order=order).values_list("stock_level_id", "quantity", "line__product__sku")
    return [(level, quantity) for level, quantity, _ in rows], sorted({sku for _, _, sku in rows})


def _locked_for_transition(order_id: int, *, allowed: set[str], expected_version: int | None) -> Order:
    order = locks.lock_order(order_id)
    if order is None:
        raise NotFound("No such order.")
    if expected_version is not None and order.version != expected_version:
        raise PreconditionFailed(extra={"current_version": order.version})
    if order.status not in allowed:
        raise InvalidTransition(f"A {order.status} order cannot do this.", extra={"status": order.status})
    return order


def _move(order: Order, status: str, *, stamp: str, **values) -> Order:
    """Compare-and-set on status and version, under the order's row lock."""
    now = timezone.now()
    updated = Order.objects.filter(pk=order.pk, status=order.status, version=order.version).update(
        status=status, version=F("version") + 1, updated_at=now, **{stamp: now}, **values
    )
    if not updated:  # cannot happen while we hold the row lock; refuse rather than overwrite
        raise InvalidTransition("The order changed while moving it.")
    order.refresh_from_db()
    return order


@atomic_with_retry
def order_pay(*, order_id: int, expected_version: int | None = None) -> Order:
    """Simulated payment of the whole total. Only a `reserved` order whose time has not run out:
    `expires_at` is checked under the lock, so paying late is refused even before the sweep runs."""
    order = _locked_for_transition(order_id, allowed={Status.RESERVED}, expected_version=expected_version)
    if order.expires_at <= timezone.now():
        raise ReservationExpired()
    order_email_enqueue(order_id=order.pk, kind="paid")
    return _move(order, Status.PAID, stamp="paid_at", paid_amount=order.total)


@atomic_with_retry
def order_cancel(*, order_id: int, actor=None, expected_version: int | None = None) -> Order:
    """Cancel a reserved or paid order and release its stock (a paid one is refunded, simulated)."""
    order = _locked_for_transition(order_id, allowed={Status.RESERVED, Status.PAID}, expected_version=expected_version)
    order_email_enqueue(order_id=order.pk, kind="cancelled")
    allocations, skus = _allocations_of(order)
    stock.release_stock(allocations=allocations, reference=order.number, skus=skus, actor=actor)
    return _move(order, Status.CANCELLED, stamp="cancelled_at")


@atomic_with_retry
def order_fulfil(*, order_id: int, actor=None, expected_version: int | None = None) -> Order:
    """Ship a paid order: its reserved units leave the shelves (on_hand and reserved both drop)."""
    order = _locked_for_transition(order_id, allowed={Status.PAID}, expected_version=expected_version)
    order_email_enqueue(order_id=order.pk, kind="fulfilled")
    allocations, skus = _allocations_of(order)
    stock.consume_stock(allocations=allocations, reference=order.number, skus=skus, actor=actor)
    return _move(order, Status.FULFILLED, stamp="fulfilled_at")


@atomic_with_retry
def order_return(*, order_id: int, actor=None, expected_version: int | None = None) -> Order:
    """Take a fulfilled order back: its units return to the levels they left from."""
    order = _locked_for_transition(order_id, allowed={Status.FULFILLED}, expected_version=expected_version)
    allocations, skus = _allocations_of(order)
    stock.restock(allocations=allocations, reference=order.number, skus=skus, actor=actor)
    return _move(order, Status.RETURNED, stamp="returned_at")


@atomic_with_retry
def order_expire(*, order_id: int) -> Order | None:
    """Expire one unpaid reservation whose time ran out, releasing its stock; None if it moved on."""
    order = locks.lock_order(order_id)
    if order is None or order.status != Status.RESERVED or order.expires_at > timezone.now():
        return None
    order_email_enqueue(order_id=order.pk, kind="expired")
    allocations, skus = _allocations_of(order)
    stock.release_stock(allocations=allocations, reference=order.number, skus=skus, reason=StockMovement.Reason.EXPIRY)
    return _move(order, Status.EXPIRED, stamp="expired_at")

"""Every write of the orders app: placing orders and their lifecycle.

Placing an order lives in orders.placement (its two paths and their switch) and idempotency keys
in orders.idempotency; `order_place` and its types are this module's too, so views, the API,
admin and tasks find every order write here. The lifecycle below (pay, cancel, fulfil, return,
expire) locks the order row first, then stock levels by pk through the inventory primitives.
Each service called from an edge runs in one transaction with bounded retries on lock timeouts
and deadlocks (then 503 `lock_timeout`). Every stock effect writes its ledger rows.
"""

from django.db.models import F
from django.utils import timezone

from inventory import services as stock
from inventory.models import StockMovement
from orders import locks
from orders.emails import order_email_enqueue
from orders.errors import InvalidTransition, ReservationExpired
from orders.models import Allocation, Order
from orders.placement import OrderLineRequest, PlacementResult, order_place
from project.db.transactions import atomic_with_retry
from project.errors import NotFound, PreconditionFailed

__all__ = [
    "OrderLineRequest",
    "PlacementResult",
    "order_cancel",
    "order_expire",
    "order_fulfil",
    "order_pay",
    "order_place",
    "order_return",
]

Status = Order.Status


# --- lifecycle --------------------------------------------------------------------------------


def _allocations_of(order: Order) -> list[tuple[int, int]]:
    return list(Allocation.objects.filter(line__order=order).values_list("stock_level_id", "quantity"))


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
    allocations = _allocations_of(order)
    stock.release_stock(allocations=allocations, reference=order.number, actor=actor)
    return _move(order, Status.CANCELLED, stamp="cancelled_at")


@atomic_with_retry
def order_fulfil(*, order_id: int, actor=None, expected_version: int | None = None) -> Order:
    """Ship a paid order: its reserved units leave the shelves (on_hand and reserved both drop)."""
    order = _locked_for_transition(order_id, allowed={Status.PAID}, expected_version=expected_version)
    order_email_enqueue(order_id=order.pk, kind="fulfilled")
    allocations = _allocations_of(order)
    stock.consume_stock(allocations=allocations, reference=order.number, actor=actor)
    return _move(order, Status.FULFILLED, stamp="fulfilled_at")


@atomic_with_retry
def order_return(*, order_id: int, actor=None, expected_version: int | None = None) -> Order:
    """Take a fulfilled order back: its units return to the levels they left from."""
    order = _locked_for_transition(order_id, allowed={Status.FULFILLED}, expected_version=expected_version)
    allocations = _allocations_of(order)
    stock.restock(allocations=allocations, reference=order.number, actor=actor)
    return _move(order, Status.RETURNED, stamp="returned_at")


@atomic_with_retry
def order_expire(*, order_id: int) -> Order | None:
    """Expire one unpaid reservation whose time ran out, releasing its stock; None if it moved on."""
    order = locks.lock_order(order_id)
    if order is None or order.status != Status.RESERVED or order.expires_at > timezone.now():
        return None
    order_email_enqueue(order_id=order.pk, kind="expired")
    allocations = _allocations_of(order)
    stock.release_stock(allocations=allocations, reference=order.number, reason=StockMovement.Reason.EXPIRY)
    return _move(order, Status.EXPIRED, stamp="expired_at")

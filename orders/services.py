"""Every write of the orders app: placing orders and their lifecycle.

Placing an order lives in orders.placement (its two paths and their switch) and idempotency keys
in orders.idempotency; `order_place` and its types are this module's too, so views, the API,
admin and tasks find every order write here. The lifecycle below (pay, cancel, fulfil, return,
expire) locks the order row first, then stock levels by pk through the inventory primitives.
Each service called from an edge runs in one transaction with bounded retries on lock timeouts
and deadlocks (then 503 `lock_timeout`). Every stock effect writes its ledger rows.
"""

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from django.db import connection
from django.db.models import F
from django.utils import timezone

from inventory import locks as stock_locks
from inventory import services as stock
from inventory.models import StockMovement, Warehouse
from orders import locks
from orders.errors import InvalidTransition, NotReturnable, NotShippable, ReservationExpired
from orders.events import order_event
from orders.idempotency import complete_claim
from orders.models import (
    Allocation,
    Order,
    OrderReturn,
    ReturnLine,
    Shipment,
    ShipmentLine,
    return_reference,
    shipment_reference,
)
from orders.placement import OrderLineRequest, PlacementResult, order_place
from orders.selectors import LineProgress, shipping_progress
from project.db.transactions import atomic_with_retry
from project.errors import InvalidInput, NotFound, PreconditionFailed
from project.values import is_whole_number

__all__ = [
    "OrderLineRequest",
    "PlacementResult",
    "ReturnLineRequest",
    "ShipmentLineRequest",
    "order_cancel",
    "order_expire",
    "order_fulfil",
    "order_pay",
    "order_place",
    "order_return",
    "return_create",
    "shipment_cancel",
    "shipment_create",
    "shipment_ship",
]

Status = Order.Status


# --- lifecycle --------------------------------------------------------------------------------


def _allocations_of(order: Order) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(level id, units still reserved) of each allocation of the order (shipped units are gone),
    and (level id, units backordered) of those still waiting for stock."""
    rows = Allocation.objects.filter(line__order=order).values_list(
        "stock_level_id", "quantity", "shipped", "backordered"
    )
    reserved = [(level_id, q - shipped - bo) for level_id, q, shipped, bo in rows if q - shipped - bo > 0]
    return reserved, [(level_id, bo) for level_id, _, _, bo in rows if bo > 0]


def _locked_for_transition(order_id: int, *, allowed: set[str], expected_version: int | None) -> Order:
    order = locks.lock_order(order_id)
    if order is None:
        raise NotFound("No such order.")
    if expected_version is not None and order.version != expected_version:
        raise PreconditionFailed(extra={"current_version": order.version})
    if order.status not in allowed:
        raise InvalidTransition(f"A {order.status} order cannot do this.", extra={"status": order.status})
    return order


def _move(order: Order, status: str, *, stamp: str | None = None, **values) -> Order:
    """Compare-and-set on status and version, under the order's row lock (a move to the same
    status, such as a second shipment of a partially fulfilled order, bumps the version only)."""
    now = timezone.now()
    if stamp is not None:
        values[stamp] = now
    updated = Order.objects.filter(pk=order.pk, status=order.status, version=order.version).update(
        status=status, version=F("version") + 1, updated_at=now, **values
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
    order = _move(order, Status.PAID, stamp="paid_at", paid_amount=order.total)
    order_event(order, "paid")
    return order


@atomic_with_retry
def order_cancel(*, order_id: int, actor=None, expected_version: int | None = None) -> Order:
    """Cancel a reserved or paid order and release its stock (a paid one is refunded, simulated)."""
    order = _locked_for_transition(order_id, allowed={Status.RESERVED, Status.PAID}, expected_version=expected_version)
    # A paid order has shipped nothing (its first shipment makes it partially fulfilled or
    # fulfilled); what pending shipments promised is released with the rest.
    _cancel_pending(Shipment.objects.filter(order=order))
    allocations, backordered = _allocations_of(order)
    # The order moves and its event is written before its levels are locked (the lock order is
    # the same: the order row is held already), so the levels are held for the release alone.
    order = _move(order, Status.CANCELLED, stamp="cancelled_at")
    order_event(order, "cancelled")
    stock.release_stock(allocations=allocations, backordered=backordered, reference=order.number, actor=actor)
    return order


@atomic_with_retry
def order_fulfil(*, order_id: int, actor=None, expected_version: int | None = None) -> Order:
    """Ship everything left of a paid or partially fulfilled order: its pending shipments, then one
    new shipment per warehouse for the units no shipment has promised. The order ends fulfilled."""
    order = _locked_for_transition(order_id, allowed=SHIPPABLE, expected_version=expected_version)
    progress = shipping_progress(order_id=order.pk)
    waiting = {line.sku: line.backordered for line in progress.values() if line.backordered}
    if waiting:
        raise NotShippable(
            "Some units are backordered: the order ships whole once stock arrives.", extra={"backordered": waiting}
        )
    pending = list(
        Shipment.objects.filter(order=order, status=Shipment.Status.PENDING).prefetch_related("lines").order_by("pk")
    )
    per_warehouse: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for line in progress.values():
        for at in line.warehouses:
            if at.left > 0:
                per_warehouse[at.warehouse_id].append((line.line_id, at.left))
    for warehouse_id, lines in sorted(per_warehouse.items()):
        shipment = Shipment.objects.create(order=order, warehouse_id=warehouse_id, created_by=_user(actor))
        ShipmentLine.objects.bulk_create(
            [ShipmentLine(shipment=shipment, line_id=line_id, quantity=quantity) for line_id, quantity in lines]
        )
        pending.append(shipment)
    _ship(order, pending, progress, actor=actor)
    order = _move(order, Status.FULFILLED, stamp="fulfilled_at")
    order_event(order, "fulfilled")
    return order


@atomic_with_retry
def order_return(*, order_id: int, actor=None, expected_version: int | None = None) -> Order:
    """Take back everything shipped and not yet returned, restocked into the warehouses it
    shipped from (a return with reason "whole order"; its refund is recorded)."""
    order = _locked_for_transition(order_id, allowed=RETURNABLE, expected_version=expected_version)
    progress = shipping_progress(order_id=order.pk)
    requests = []
    for line in progress.values():
        left = line.returnable
        for at in line.warehouses:
            take = min(left, at.shipped)
            if take > 0:
                requests.append((line, at.warehouse_id, take, ReturnLine.Disposition.RESTOCK))
                left -= take
    if not requests:
        raise NotReturnable("Everything shipped has come back already.")
    record = _record_return(order, progress, requests, reason="whole order", actor=actor)
    order = _move(
        order, Status.RETURNED, stamp="returned_at", refunded_amount=F("refunded_amount") + record.refund_amount
    )
    order_event(order, "returned")
    return order


@atomic_with_retry
def order_expire(*, order_id: int) -> Order | None:
    """Expire one unpaid reservation whose time ran out, releasing its stock; None if it moved on."""
    order = locks.lock_order(order_id)
    if order is None or order.status != Status.RESERVED or order.expires_at > timezone.now():
        return None
    allocations, backordered = _allocations_of(order)
    order = _move(order, Status.EXPIRED, stamp="expired_at")
    order_event(order, "expired")  # before the levels are locked, as in order_cancel
    stock.release_stock(
        allocations=allocations, backordered=backordered, reference=order.number, reason=StockMovement.Reason.EXPIRY
    )
    return order


# --- shipments and returns by line ----------------------------------------------------------------
#
# Every service below locks the order row first: one order's shipments, returns, payment and cancel
# are serialized by it, so what shipping_progress reads under that lock stays true until commit.
# Stock levels are then locked in pk order by the inventory primitives (DESIGN §4).

SHIPPABLE = {Status.PAID, Status.PARTIALLY_FULFILLED}
RETURNABLE = {Status.FULFILLED, Status.PARTIALLY_RETURNED}
MAX_SHIPMENT_LINES = 500


@dataclass(frozen=True)
class ShipmentLineRequest:
    line_id: int
    quantity: int


@dataclass(frozen=True)
class ReturnLineRequest:
    line_id: int
    quantity: int
    warehouse: str  # code of the warehouse that takes the units in
    disposition: str  # ReturnLine.Disposition


def _cancel_pending(shipments) -> None:
    """Cancel the pending ones of these shipments (under their order's row lock)."""
    shipments.filter(status=Shipment.Status.PENDING).update(
        status=Shipment.Status.CANCELLED, cancelled_at=timezone.now(), version=F("version") + 1
    )


def _user(actor):
    return actor if getattr(actor, "pk", None) is not None else None


def _check_lines(requests: Sequence, field: str = "lines") -> None:
    if not requests:
        raise InvalidInput(fields={field: ["Name at least one line."]})
    if len(requests) > MAX_SHIPMENT_LINES:
        raise InvalidInput(fields={field: [f"At most {MAX_SHIPMENT_LINES} lines."]})
    for request in requests:
        if not is_whole_number(request.line_id, minimum=1) or not is_whole_number(
            request.quantity, minimum=1, maximum=stock.MAX_QUANTITY
        ):
            raise InvalidInput(
                fields={field: [f"Line ids and quantities are whole numbers from 1 to {stock.MAX_QUANTITY}."]}
            )


def _check_parcel_labels(carrier: str | None, tracking_number: str | None) -> None:
    """The carrier and tracking number fit their columns (None: not given)."""
    limits = {"carrier": (carrier, Shipment._meta.get_field("carrier").max_length)}
    limits["tracking_number"] = (tracking_number, Shipment._meta.get_field("tracking_number").max_length)
    for field, (value, limit) in limits.items():
        if value is not None and (not isinstance(value, str) or len(value) > limit):
            raise InvalidInput(fields={field: [f"Text of at most {limit} characters."]})


def _active_warehouses(codes: Sequence, field: str) -> dict[str, Warehouse]:
    """The active warehouses of these codes by code, in one query; InvalidInput names the first
    code that is none."""
    if not all(isinstance(code, str) for code in codes):
        raise InvalidInput(fields={field: ["Warehouses are named by their code."]})
    found = {warehouse.code: warehouse for warehouse in Warehouse.objects.filter(code__in=set(codes), active=True)}
    missing = next((code for code in codes if code not in found), None)
    if missing is not None:
        raise InvalidInput(fields={field: [f"No active warehouse {missing!r}."]})
    return found


def _line_of(progress: dict[int, LineProgress], line_id: int, order: Order) -> LineProgress:
    line = progress.get(line_id)
    if line is None:
        raise InvalidInput(fields={"lines": [f"Line {line_id} is not a line of order {order.number}."]})
    return line


def _touch(order: Order) -> Order:
    """A shipment or return changed what the order shows: bump its version (ETag, If-Match)."""
    return _move(order, order.status)


def _take_from_elsewhere(
    line: LineProgress, warehouse: Warehouse, need: int, moves: list, allocation_changes: list
) -> None:
    """Plan moving `need` reserved units of `line` into `warehouse` from its other warehouses'
    unpromised units (the most first, then by allocation)."""
    sources = sorted(
        (at for at in line.warehouses if at.warehouse_id != warehouse.pk and at.left > 0),
        key=lambda at: (-at.left, at.allocation_id),
    )
    for at in sources:
        take = min(need, at.left)
        moves.append((at.level_id, line.product_id, warehouse.pk, take))
        allocation_changes.append((line, at, take))
        need -= take
        if need == 0:
            return
    raise NotShippable(
        f"Line {line.line_id} ({line.sku}) has fewer units left to ship than asked.",
        extra={"line": line.line_id, "sku": line.sku, "left": line.left},
    )


def _move_allocations(order: Order, warehouse: Warehouse, moves: list, changes: list, actor) -> None:
    """Move the planned reserved units (inventory primitive, levels locked in pk order), then the
    allocations that record them."""
    targets = stock.move_reservations(moves=moves, reference=order.number, actor=_user(actor))
    for line, source, take in changes:
        if take == source.allocated:
            Allocation.objects.filter(pk=source.allocation_id).delete()
        else:
            Allocation.objects.filter(pk=source.allocation_id).update(quantity=F("quantity") - take)
        target_level = targets[(line.product_id, warehouse.pk)]
        grown = Allocation.objects.filter(line_id=line.line_id, stock_level_id=target_level).update(
            quantity=F("quantity") + take
        )
        if not grown:
            Allocation.objects.create(line_id=line.line_id, stock_level_id=target_level, quantity=take)


@atomic_with_retry
def shipment_create(
    *,
    order_id: int,
    warehouse: str,
    lines: Sequence[ShipmentLineRequest],
    carrier: str = "",
    tracking_number: str = "",
    move_allocation: bool = False,
    ship: bool = False,
    actor=None,
    expected_version: int | None = None,
    claim_id: int | None = None,
    render: Callable[[Shipment], dict] | None = None,
) -> Shipment:
    """A pending shipment of these line quantities from one warehouse: it promises the units (they
    count against what is left to ship) and consumes nothing until shipped.

    The units come from the line's allocations at that warehouse. Taking them from another one
    needs `move_allocation`: the reservation moves there first (its stock must be available), in
    this transaction. Refused (nothing changes): a line of another order, more than is left to ship
    (pending shipments included), a warehouse the line is not allocated to without
    `move_allocation`, an order that is not paid or partially fulfilled. With `ship`, the new
    shipment is shipped at once, in the same transaction (as shipment_ship). With `claim_id` (an
    Idempotency-Key claim) the rendered response is stored on it in the same transaction.
    """
    _check_lines(lines)
    if len({request.line_id for request in lines}) != len(lines):
        raise InvalidInput(fields={"lines": ["Name each line once."]})
    _check_parcel_labels(carrier, tracking_number)
    place = _active_warehouses([warehouse], "warehouse")[warehouse]
    order = _locked_for_transition(order_id, allowed=SHIPPABLE, expected_version=expected_version)
    progress = shipping_progress(order_id=order.pk)
    moves: list = []
    changes: list = []
    for request in lines:
        line = _line_of(progress, request.line_id, order)
        if request.quantity > line.left:
            raise NotShippable(
                f"Line {line.line_id} ({line.sku}) has {line.left} units left to ship, not {request.quantity}.",
                extra={"line": line.line_id, "sku": line.sku, "left": line.left},
            )
        at = line.at(place.pk)
        here = at.left if at is not None else 0
        if request.quantity > here:
            if not move_allocation:
                raise NotShippable(
                    f"Line {line.line_id} ({line.sku}) has {here} units allocated to {place.code} left to ship; "
                    "set move_allocation to take the others from there.",
                    extra={"line": line.line_id, "sku": line.sku, "left_here": here},
                )
            _take_from_elsewhere(line, place, request.quantity - here, moves, changes)
    if moves:
        _move_allocations(order, place, moves, changes, actor)
    shipment = Shipment.objects.create(
        order=order,
        warehouse=place,
        carrier=carrier,
        tracking_number=tracking_number,
        created_by=_user(actor),
    )
    ShipmentLine.objects.bulk_create(
        [ShipmentLine(shipment=shipment, line_id=request.line_id, quantity=request.quantity) for request in lines]
    )
    if ship:  # read again: the new shipment's units, and any allocation just moved here
        shipment = _ship_and_move_on(order, shipment, shipping_progress(order_id=order.pk), actor=actor)
    else:
        _touch(order)
    if claim_id is not None:
        complete_claim(claim_id=claim_id, body=render(shipment), order_id=order.pk)
    return shipment


def _locked_shipment(order: Order, shipment_id: int, expected_version: int | None) -> Shipment:
    shipment = locks.lock_shipment(order_id=order.pk, shipment_id=shipment_id)
    if shipment is None:
        raise NotFound("No such shipment.")
    if expected_version is not None and shipment.version != expected_version:
        raise PreconditionFailed(extra={"current_version": shipment.version})
    if shipment.status != Shipment.Status.PENDING:
        raise InvalidTransition(f"A {shipment.status} shipment cannot do this.", extra={"status": shipment.status})
    return shipment


def _ship(order: Order, shipments: Sequence[Shipment], progress: dict[int, LineProgress], *, actor) -> None:
    """Consume what these pending shipments hold from their allocations (one ledger row per level
    and shipment) and mark them shipped. Every level of every shipment is locked first, at once and
    in pk order, so several shipments never take their levels out of order."""
    now = timezone.now()
    stock_locks.lock_stock_levels(
        progress[item.line_id].at(shipment.warehouse_id).level_id
        for shipment in shipments
        for item in shipment.lines.all()
        if progress[item.line_id].at(shipment.warehouse_id) is not None
    )
    for shipment in sorted(shipments, key=lambda shipment: shipment.pk):
        consumed, allocation_ids, quantities = [], [], []
        for item in shipment.lines.all():
            at = progress[item.line_id].at(shipment.warehouse_id)
            if at is None or at.allocated - at.backordered - at.shipped < item.quantity:
                raise NotShippable(f"Line {item.line_id} has too few units allocated to this warehouse.")
            at.shipped += item.quantity
            at.pending -= item.quantity
            consumed.append((at.level_id, item.quantity))
            allocation_ids.append(at.allocation_id)
            quantities.append(item.quantity)
        stock.consume_stock(
            allocations=consumed, reference=shipment_reference(order.number, shipment.pk), actor=_user(actor)
        )
        with connection.cursor() as cursor:
            cursor.execute(
                """
                UPDATE orders_allocation AS a SET shipped = a.shipped + v.n
                  FROM unnest(%s::bigint[], %s::bigint[]) AS v(id, n)
                 WHERE a.id = v.id
                """,
                [allocation_ids, quantities],
            )
        Shipment.objects.filter(pk=shipment.pk).update(
            status=Shipment.Status.SHIPPED, shipped_at=now, version=F("version") + 1
        )


@atomic_with_retry
def shipment_ship(
    *,
    order_id: int,
    shipment_id: int,
    tracking_number: str | None = None,
    carrier: str | None = None,
    actor=None,
    expected_version: int | None = None,
) -> Shipment:
    """Ship a pending shipment: its units leave the shelves (on_hand and reserved both drop at its
    warehouse), the order becomes partially fulfilled or fulfilled, and the customer is emailed."""
    _check_parcel_labels(carrier, tracking_number)
    order = _locked_for_transition(order_id, allowed=SHIPPABLE, expected_version=None)
    shipment = _locked_shipment(order, shipment_id, expected_version)
    changes = {}
    if tracking_number is not None:
        changes["tracking_number"] = tracking_number
    if carrier is not None:
        changes["carrier"] = carrier
    if changes:
        Shipment.objects.filter(pk=shipment.pk).update(**changes)
    return _ship_and_move_on(order, shipment, shipping_progress(order_id=order.pk), actor=actor)


def _ship_and_move_on(order: Order, shipment: Shipment, progress: dict[int, LineProgress], *, actor) -> Shipment:
    """Ship one pending shipment, move the order to partially fulfilled or fulfilled, email."""
    _ship(order, [shipment], progress, actor=actor)
    done = all(line.shipped == line.ordered for line in progress.values())
    order = _move(order, Status.FULFILLED, stamp="fulfilled_at") if done else _move(order, Status.PARTIALLY_FULFILLED)
    order_event(order, "fulfilled" if done else "shipped")
    shipment.refresh_from_db()
    return shipment


@atomic_with_retry
def shipment_cancel(*, order_id: int, shipment_id: int, actor=None, expected_version: int | None = None) -> Shipment:
    """Cancel a pending shipment: the units it promised are left to ship again."""
    order = _locked_for_transition(order_id, allowed=SHIPPABLE, expected_version=None)
    shipment = _locked_shipment(order, shipment_id, expected_version)
    _cancel_pending(Shipment.objects.filter(pk=shipment.pk))
    _touch(order)
    shipment.refresh_from_db()
    return shipment


def _record_return(
    order: Order, progress: dict[int, LineProgress], requests: list[tuple], *, reason: str, actor
) -> OrderReturn:
    """Write the return and its lines and take the units in (inventory.receive_return); the caller
    adds its refund to the order's as it moves the order. `requests`: (line progress, warehouse
    id, quantity, disposition)."""
    refund = sum((line.unit_price * quantity for line, _, quantity, _ in requests), Decimal("0"))
    record = OrderReturn.objects.create(order=order, reason=reason, refund_amount=refund, created_by=_user(actor))
    ReturnLine.objects.bulk_create(
        [
            ReturnLine(
                order_return=record, line_id=line.line_id, warehouse_id=warehouse_id, quantity=n, disposition=kind
            )
            for line, warehouse_id, n, kind in requests
        ]
    )
    damaged = ReturnLine.Disposition.DAMAGED
    stock.receive_return(
        items=[
            (line.product_id, warehouse_id, 0 if kind == damaged else n, n if kind == damaged else 0)
            for line, warehouse_id, n, kind in requests
        ],
        reference=return_reference(order.number, record.pk),
        actor=_user(actor),
    )
    for line, _, quantity, _ in requests:
        line.returned += quantity
    return record


@atomic_with_retry
def return_create(
    *,
    order_id: int,
    lines: Sequence[ReturnLineRequest],
    reason: str,
    actor=None,
    expected_version: int | None = None,
    claim_id: int | None = None,
    render: Callable[[OrderReturn], dict] | None = None,
) -> OrderReturn:
    """Record units that came back: per line a quantity (never more than shipped and not yet
    returned), the warehouse that takes them in, and whether they go back on sale (`restock`) or
    are written off (`damaged`). The refund (units at their line's unit price) is recorded; the
    order becomes partially returned or, once every unit is back, returned."""
    _check_lines(lines)
    if not isinstance(reason, str) or not reason.strip() or len(reason) > 200:
        raise InvalidInput(fields={"reason": ["Say why, in 1 to 200 characters."]})
    dispositions = set(ReturnLine.Disposition.values)
    if any(request.disposition not in dispositions for request in lines):
        raise InvalidInput(fields={"lines": [f"disposition is one of {sorted(dispositions)}."]})
    places = _active_warehouses([request.warehouse for request in lines], "lines")
    order = _locked_for_transition(order_id, allowed=RETURNABLE, expected_version=expected_version)
    progress = shipping_progress(order_id=order.pk)
    asked: dict[int, int] = defaultdict(int)
    requests = []
    for request in lines:
        line = _line_of(progress, request.line_id, order)
        asked[line.line_id] += request.quantity
        if asked[line.line_id] > line.returnable:
            raise NotReturnable(
                f"Line {line.line_id} ({line.sku}) has {line.returnable} shipped units not yet returned.",
                extra={"line": line.line_id, "sku": line.sku, "returnable": line.returnable},
            )
        requests.append((line, places[request.warehouse].pk, request.quantity, request.disposition))
    record = _record_return(order, progress, requests, reason=reason.strip(), actor=actor)
    refunded = F("refunded_amount") + record.refund_amount
    if all(line.returned == line.ordered for line in progress.values()):
        order = _move(order, Status.RETURNED, stamp="returned_at", refunded_amount=refunded)
    else:
        order = _move(order, Status.PARTIALLY_RETURNED, refunded_amount=refunded)
    order_event(order, "returned")
    if claim_id is not None:
        complete_claim(claim_id=claim_id, body=render(record), order_id=order.pk)
    return record

"""Shipments and returns by line, through the services, on real PostgreSQL."""

from decimal import Decimal

import pytest

from inventory import services as stock
from inventory.errors import InsufficientStock
from inventory.models import StockLevel, StockMovement
from orders import jobs, services
from orders.errors import InvalidTransition, NotReturnable, NotShippable
from orders.models import Order, OrderLine, Shipment
from orders.selectors import shipping_progress
from project.errors import InvalidInput, NotFound, PreconditionFailed
from project.outbox.models import OutboxMessage
from tests.factories import ProductFactory, WarehouseFactory
from tests.invariants import assert_stock_invariants
from tests.orders.conftest import place_paid

Ship = services.ShipmentLineRequest
Back = services.ReturnLineRequest


@pytest.fixture
def shop(db):
    """MAIN (first by priority) and EAST; MUG 5 + 5, TEA 3 in MAIN, JAR 4 in EAST; SPARE is empty."""
    WarehouseFactory(code="MAIN", priority=1)
    WarehouseFactory(code="EAST", priority=2)
    WarehouseFactory(code="SPARE", priority=3)
    for sku, price in (("MUG", "12.50"), ("TEA", "4.00"), ("JAR", "3.00")):
        ProductFactory(sku=sku, price=price)
    stock.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=5)
    stock.stock_receive(sku="MUG", warehouse_code="EAST", quantity=5)
    stock.stock_receive(sku="TEA", warehouse_code="MAIN", quantity=3)
    stock.stock_receive(sku="JAR", warehouse_code="EAST", quantity=4)


def line(order: Order, sku: str) -> int:
    return OrderLine.objects.get(order=order, product__sku=sku).pk


def level(sku: str, code: str) -> tuple[int, int]:
    row = StockLevel.objects.filter(product__sku=sku, warehouse__code=code).first()
    return (row.on_hand, row.reserved) if row else (0, 0)


def ship(order: Order, code: str, *lines, **options) -> Shipment:
    shipment = services.shipment_create(
        order_id=order.pk, warehouse=code, lines=[Ship(line(order, sku), n) for sku, n in lines], **options
    )
    return services.shipment_ship(order_id=order.pk, shipment_id=shipment.pk, tracking_number=f"T-{shipment.pk}")


def status(order: Order) -> str:
    return Order.objects.values_list("status", flat=True).get(pk=order.pk)


def test_a_pending_shipment_promises_units_and_shipping_consumes_them_at_its_warehouse(shop):
    order = place_paid(("MUG", 2), ("TEA", 1))
    pending = services.shipment_create(
        order_id=order.pk, warehouse="MAIN", lines=[Ship(line(order, "MUG"), 2)], carrier="DHL"
    )

    assert pending.status == "pending"
    assert level("MUG", "MAIN") == (5, 2)  # promised, not consumed
    progress = shipping_progress(order_id=order.pk)
    assert (progress[line(order, "MUG")].pending, progress[line(order, "MUG")].left) == (2, 0)

    shipped = services.shipment_ship(order_id=order.pk, shipment_id=pending.pk, tracking_number="1Z999")

    assert (shipped.status, shipped.tracking_number, shipped.carrier, shipped.version) == ("shipped", "1Z999", "DHL", 2)
    assert level("MUG", "MAIN") == (3, 0)
    assert level("TEA", "MAIN") == (3, 1)
    assert status(order) == "partially_fulfilled"
    ledger = StockMovement.objects.filter(reference=f"{order.number}/S{pending.pk}")
    assert list(ledger.values_list("reason", "delta_on_hand", "delta_reserved")) == [("fulfilment", -2, -2)]
    assert_stock_invariants()


def test_the_last_parcel_fulfils_the_order_and_each_parcel_emails_the_customer(shop):
    order = place_paid(("MUG", 1), ("TEA", 1))
    ship(order, "MAIN", ("MUG", 1))
    ship(order, "MAIN", ("TEA", 1))

    assert status(order) == "fulfilled"
    kinds = [m.kwargs["kind"] for m in OutboxMessage.objects.filter(kwargs__order_id=order.pk).order_by("id")]
    assert kinds == ["placed", "paid", "shipped", "fulfilled"]
    assert_stock_invariants()


def test_two_pending_shipments_cannot_promise_the_same_units(shop):
    order = place_paid(("MUG", 3))
    services.shipment_create(order_id=order.pk, warehouse="MAIN", lines=[Ship(line(order, "MUG"), 2)])

    with pytest.raises(NotShippable):
        services.shipment_create(order_id=order.pk, warehouse="MAIN", lines=[Ship(line(order, "MUG"), 2)])
    assert Shipment.objects.filter(order=order).count() == 1
    # The one unit left can still be promised; cancelling the first frees its two again.
    services.shipment_create(order_id=order.pk, warehouse="MAIN", lines=[Ship(line(order, "MUG"), 1)])
    first = Shipment.objects.filter(order=order).order_by("id").first()
    services.shipment_cancel(order_id=order.pk, shipment_id=first.pk)
    assert shipping_progress(order_id=order.pk)[line(order, "MUG")].left == 2
    assert_stock_invariants()


def test_a_warehouse_the_line_is_not_allocated_to_needs_move_allocation(shop):
    order = place_paid(("TEA", 2))  # allocated in MAIN
    stock.stock_receive(sku="TEA", warehouse_code="EAST", quantity=4)

    with pytest.raises(NotShippable) as refused:
        services.shipment_create(order_id=order.pk, warehouse="EAST", lines=[Ship(line(order, "TEA"), 2)])
    assert "move_allocation" in refused.value.detail
    assert level("TEA", "MAIN") == (3, 2) and level("TEA", "EAST") == (4, 0)

    ship(order, "EAST", ("TEA", 2), move_allocation=True)

    assert level("TEA", "MAIN") == (3, 0)  # the reservation moved away ...
    assert level("TEA", "EAST") == (2, 0)  # ... and shipped from there
    reasons = (
        StockMovement.objects.filter(reference=order.number).order_by("id").values_list("reason", "delta_reserved")
    )
    assert list(reasons)[-2:] == [("release", -2), ("reservation", 2)]
    assert status(order) == "fulfilled"
    assert_stock_invariants()


def test_moving_an_allocation_needs_the_units_available_there(shop):
    order = place_paid(("TEA", 2))

    with pytest.raises(InsufficientStock):
        services.shipment_create(
            order_id=order.pk, warehouse="SPARE", lines=[Ship(line(order, "TEA"), 2)], move_allocation=True
        )
    assert level("TEA", "MAIN") == (3, 2)
    assert not Shipment.objects.exists()
    assert_stock_invariants()


@pytest.mark.parametrize(
    ("lines", "error"),
    [
        (lambda order, other: [Ship(line(order, "MUG"), 3)], NotShippable),  # more than ordered
        (lambda order, other: [Ship(line(other, "JAR"), 1)], InvalidInput),  # a line of another order
        (lambda order, other: [Ship(line(order, "MUG"), 0)], InvalidInput),
        (lambda order, other: [Ship(line(order, "MUG"), 1), Ship(line(order, "MUG"), 1)], InvalidInput),
        (lambda order, other: [], InvalidInput),
        (lambda order, other: [Ship("one", 1)], InvalidInput),
    ],
)
def test_bad_shipments_are_refused_and_change_nothing(shop, lines, error):
    order, other = place_paid(("MUG", 2)), place_paid(("JAR", 1))

    with pytest.raises(error):
        services.shipment_create(order_id=order.pk, warehouse="MAIN", lines=lines(order, other))
    assert not Shipment.objects.exists()
    assert Order.objects.get(pk=order.pk).version == order.version
    assert_stock_invariants()


def test_nothing_ships_from_an_unpaid_or_cancelled_order_or_an_unknown_warehouse(shop):
    order = place_paid(("MUG", 1))
    with pytest.raises(InvalidInput):
        services.shipment_create(order_id=order.pk, warehouse="NOWHERE", lines=[Ship(line(order, "MUG"), 1)])
    services.order_cancel(order_id=order.pk)
    with pytest.raises(InvalidTransition):
        services.shipment_create(order_id=order.pk, warehouse="MAIN", lines=[Ship(line(order, "MUG"), 1)])
    with pytest.raises(NotFound):
        services.shipment_ship(order_id=order.pk + 1000, shipment_id=1)
    assert_stock_invariants()


def test_cancelling_a_paid_order_cancels_its_pending_shipments_and_releases_everything(shop):
    order = place_paid(("MUG", 2))
    pending = services.shipment_create(order_id=order.pk, warehouse="MAIN", lines=[Ship(line(order, "MUG"), 1)])

    services.order_cancel(order_id=order.pk)

    assert Shipment.objects.get(pk=pending.pk).status == "cancelled"
    assert level("MUG", "MAIN") == (5, 0)
    with pytest.raises(InvalidTransition):
        services.shipment_ship(order_id=order.pk, shipment_id=pending.pk)
    assert_stock_invariants()


def test_a_partly_shipped_order_cannot_be_cancelled(shop):
    order = place_paid(("MUG", 1), ("TEA", 1))
    ship(order, "MAIN", ("MUG", 1))

    with pytest.raises(InvalidTransition):
        services.order_cancel(order_id=order.pk)
    assert_stock_invariants()


def test_shipping_with_a_stale_version_is_refused(shop):
    order = place_paid(("MUG", 2))
    pending = services.shipment_create(order_id=order.pk, warehouse="MAIN", lines=[Ship(line(order, "MUG"), 1)])
    services.shipment_ship(order_id=order.pk, shipment_id=pending.pk, expected_version=1)

    with pytest.raises(PreconditionFailed):
        services.shipment_cancel(order_id=order.pk, shipment_id=pending.pk, expected_version=1)
    with pytest.raises(PreconditionFailed):
        services.shipment_create(
            order_id=order.pk, warehouse="MAIN", lines=[Ship(line(order, "MUG"), 1)], expected_version=order.version
        )


def test_whole_order_fulfil_ships_what_is_left_one_parcel_per_warehouse(shop):
    order = place_paid(("MUG", 7), ("TEA", 1))  # MUG: 5 from MAIN, 2 from EAST
    pending = services.shipment_create(order_id=order.pk, warehouse="MAIN", lines=[Ship(line(order, "TEA"), 1)])
    ship(order, "MAIN", ("MUG", 3))

    services.order_fulfil(order_id=order.pk)

    parcels = Shipment.objects.filter(order=order).order_by("id")
    assert [(p.warehouse.code, p.status) for p in parcels] == [
        ("MAIN", "shipped"), ("MAIN", "shipped"), ("MAIN", "shipped"), ("EAST", "shipped"),
    ]  # fmt: skip
    assert parcels[0].pk == pending.pk  # the pending parcel shipped as it was
    assert status(order) == "fulfilled"
    assert (level("MUG", "MAIN"), level("MUG", "EAST"), level("TEA", "MAIN")) == ((0, 0), (3, 0), (2, 0))
    assert_stock_invariants()


def test_bulk_fulfilment_finishes_partly_shipped_orders(shop):
    order = place_paid(("MUG", 1), ("TEA", 1))
    ship(order, "MAIN", ("MUG", 1))

    run = jobs.bulk_fulfil(order_ids=[order.pk])

    assert run.fulfilled == [order.pk]
    assert status(order) == "fulfilled"
    assert_stock_invariants()


def test_a_return_restocks_or_writes_off_each_unit_and_records_the_refund(shop):
    order = place_paid(("MUG", 3), ("TEA", 1))
    services.order_fulfil(order_id=order.pk)
    before_east = level("MUG", "EAST")

    record = services.return_create(
        order_id=order.pk,
        reason="one broken in transit",
        lines=[Back(line(order, "MUG"), 1, "EAST", "restock"), Back(line(order, "MUG"), 1, "EAST", "damaged")],
    )

    assert record.refund_amount == Decimal("25.00")
    assert level("MUG", "EAST") == (before_east[0] + 1, 0)  # one back on sale, the damaged one not
    rows = StockMovement.objects.filter(reference=f"{order.number}/R{record.pk}").order_by("id")
    assert list(rows.values_list("reason", "delta_on_hand")) == [("return", 2), ("damaged", -1)]
    reloaded = Order.objects.get(pk=order.pk)
    assert (reloaded.status, reloaded.refunded_amount) == ("partially_returned", Decimal("25.00"))

    services.return_create(
        order_id=order.pk,
        reason="changed mind",
        lines=[Back(line(order, "MUG"), 1, "MAIN", "restock"), Back(line(order, "TEA"), 1, "MAIN", "restock")],
    )
    reloaded = Order.objects.get(pk=order.pk)
    assert (reloaded.status, reloaded.refunded_amount) == ("returned", Decimal("41.50"))
    assert_stock_invariants()


def test_a_return_into_a_warehouse_without_a_level_creates_it(shop):
    order = place_paid(("JAR", 1))
    services.order_fulfil(order_id=order.pk)

    services.return_create(
        order_id=order.pk, reason="unwanted", lines=[Back(line(order, "JAR"), 1, "SPARE", "restock")]
    )

    assert level("JAR", "SPARE") == (1, 0)
    assert_stock_invariants()


@pytest.mark.parametrize(
    ("lines", "error"),
    [
        (lambda order: [Back(line(order, "MUG"), 3, "MAIN", "restock")], NotReturnable),  # more than shipped
        (
            lambda order: [
                Back(line(order, "MUG"), 2, "MAIN", "restock"),
                Back(line(order, "MUG"), 1, "MAIN", "damaged"),
            ],
            NotReturnable,
        ),
        (lambda order: [Back(line(order, "MUG"), 1, "MAIN", "lost")], InvalidInput),
        (lambda order: [Back(line(order, "MUG"), 1, "NOWHERE", "restock")], InvalidInput),
        (lambda order: [Back(line(order, "MUG"), -1, "MAIN", "restock")], InvalidInput),
    ],
)
def test_bad_returns_are_refused_and_change_nothing(shop, lines, error):
    order = place_paid(("MUG", 2))
    services.order_fulfil(order_id=order.pk)
    on_hand = level("MUG", "MAIN")

    with pytest.raises(error):
        services.return_create(order_id=order.pk, reason="because", lines=lines(order))
    assert level("MUG", "MAIN") == on_hand
    assert Order.objects.get(pk=order.pk).refunded_amount == 0
    assert_stock_invariants()


def test_nothing_comes_back_before_it_has_all_shipped(shop):
    order = place_paid(("MUG", 1), ("TEA", 1))
    with pytest.raises(InvalidTransition):
        services.return_create(order_id=order.pk, reason="x", lines=[Back(line(order, "MUG"), 1, "MAIN", "restock")])
    ship(order, "MAIN", ("MUG", 1))
    with pytest.raises(InvalidTransition):  # partly shipped: returns wait for the last parcel
        services.return_create(order_id=order.pk, reason="x", lines=[Back(line(order, "MUG"), 1, "MAIN", "restock")])


def test_the_whole_order_return_takes_back_what_is_left_where_it_shipped_from(shop):
    order = place_paid(("MUG", 7))
    services.order_fulfil(order_id=order.pk)
    services.return_create(order_id=order.pk, reason="one", lines=[Back(line(order, "MUG"), 1, "MAIN", "damaged")])

    services.order_return(order_id=order.pk)

    reloaded = Order.objects.get(pk=order.pk)
    assert (reloaded.status, reloaded.refunded_amount) == ("returned", Decimal("87.50"))
    assert shipping_progress(order_id=order.pk)[line(order, "MUG")].returnable == 0
    with pytest.raises(InvalidTransition):
        services.order_return(order_id=order.pk)
    assert_stock_invariants()


def test_a_shipment_can_be_created_and_shipped_at_once_even_after_moving_its_allocation(shop):
    order = place_paid(("TEA", 2), ("MUG", 1))
    stock.stock_receive(sku="TEA", warehouse_code="EAST", quantity=1)

    shipment = services.shipment_create(
        order_id=order.pk,
        warehouse="EAST",
        lines=[Ship(line(order, "TEA"), 1)],
        move_allocation=True,
        ship=True,
        tracking_number="EAST-1",
    )

    assert (shipment.status, shipment.tracking_number) == ("shipped", "EAST-1")
    assert (level("TEA", "MAIN"), level("TEA", "EAST")) == ((3, 1), (0, 0))
    assert status(order) == "partially_fulfilled"
    assert_stock_invariants()


def test_a_carrier_or_tracking_number_too_long_is_refused_before_anything_changes(shop):
    order = place_paid(("MUG", 1))
    with pytest.raises(InvalidInput):
        services.shipment_create(
            order_id=order.pk, warehouse="MAIN", lines=[Ship(line(order, "MUG"), 1)], tracking_number="T" * 101
        )
    pending = services.shipment_create(order_id=order.pk, warehouse="MAIN", lines=[Ship(line(order, "MUG"), 1)])
    with pytest.raises(InvalidInput):
        services.shipment_ship(order_id=order.pk, shipment_id=pending.pk, carrier="C" * 51)
    assert Shipment.objects.get(pk=pending.pk).status == "pending"

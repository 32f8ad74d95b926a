"""Shipments and returns from real threads on real PostgreSQL: each unit ships once, and a cancel
racing a shipment leaves a cancelled order or a shipped one, never both."""

import uuid

import pytest

from inventory import services as stock
from inventory.errors import InsufficientStock
from inventory.models import StockLevel
from orders import services
from orders.api import render_order
from orders.errors import InvalidTransition, NotShippable
from orders.models import Order, OrderLine, Shipment
from tests.concurrency.support import LockWaitWatcher, run_concurrently, total_retries
from tests.factories import ProductFactory, UserFactory, WarehouseFactory
from tests.invariants import assert_stock_invariants
from tests.orders.conftest import ADDRESS, place_paid

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

Ship = services.ShipmentLineRequest


def _line(order: Order, sku: str) -> int:
    return OrderLine.objects.get(order=order, product__sku=sku).pk


@pytest.fixture
def shop():
    WarehouseFactory(code="MAIN", priority=1)
    WarehouseFactory(code="EAST", priority=2)
    for sku in ("MUG", "TEA"):
        ProductFactory(sku=sku)
    stock.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=20)
    stock.stock_receive(sku="TEA", warehouse_code="MAIN", quantity=3)
    stock.stock_receive(sku="TEA", warehouse_code="EAST", quantity=6)


def test_eight_staff_shipping_the_same_line_at_once_ship_it_once(shop):
    order = place_paid(("MUG", 2), ("TEA", 1))
    line = _line(order, "MUG")
    retries_before = total_retries()

    def ship_it(i: int):
        shipment = services.shipment_create(order_id=order.pk, warehouse="MAIN", lines=[Ship(line, 2)])
        return services.shipment_ship(order_id=order.pk, shipment_id=shipment.pk, tracking_number=f"T{i}")

    with LockWaitWatcher() as watcher:
        results = run_concurrently(ship_it, 8)

    shipped = [r for r in results if isinstance(r, Shipment)]
    assert len(shipped) == 1, results
    assert all(isinstance(r, NotShippable) for r in results if not isinstance(r, Shipment)), results
    assert Shipment.objects.filter(order=order).count() == 1
    level = StockLevel.objects.get(product__sku="MUG")
    assert (level.on_hand, level.reserved) == (18, 0)
    assert Order.objects.get(pk=order.pk).status == "partially_fulfilled"
    assert watcher.waits + (total_retries() - retries_before) > 0, "no real overlap was observed"
    assert_stock_invariants()


@pytest.mark.parametrize("round_", range(6))
def test_a_cancel_racing_a_shipment_leaves_a_cancelled_order_or_a_shipped_one(shop, round_):
    order = place_paid(("MUG", 1))
    pending = services.shipment_create(order_id=order.pk, warehouse="MAIN", lines=[Ship(_line(order, "MUG"), 1)])

    def race(i: int):
        if i % 2 == 0:
            return services.order_cancel(order_id=order.pk)
        return services.shipment_ship(order_id=order.pk, shipment_id=pending.pk)

    results = run_concurrently(race, 2)

    order.refresh_from_db()
    shipment = Shipment.objects.get(pk=pending.pk)
    level = StockLevel.objects.get(product__sku="MUG")
    if order.status == "cancelled":
        assert shipment.status == "cancelled"
        assert isinstance(results[1], InvalidTransition), results
        assert (level.on_hand, level.reserved) == (20, 0)
    else:
        assert (order.status, shipment.status) == ("fulfilled", "shipped")
        assert isinstance(results[0], InvalidTransition), results
        assert (level.on_hand, level.reserved) == (19, 0)
    assert_stock_invariants()


def test_moving_allocations_while_shoppers_buy_the_same_units_never_oversells(shop):
    # TEA: 3 in MAIN, 6 in EAST. Three paid orders of 1 TEA each hold MAIN's units; staff ship
    # each of them from EAST (moving the reservation there) while six shoppers buy TEA.
    orders = [place_paid(("TEA", 1)) for _ in range(3)]
    buyers = UserFactory.create_batch(6)

    def act(i: int):
        if i < len(orders):
            order = orders[i]
            shipment = services.shipment_create(
                order_id=order.pk, warehouse="EAST", lines=[Ship(_line(order, "TEA"), 1)], move_allocation=True
            )
            return services.shipment_ship(order_id=order.pk, shipment_id=shipment.pk)
        return services.order_place(
            user=buyers[i - len(orders)],
            lines=[services.OrderLineRequest("TEA", 1)],
            shipping_address=ADDRESS,
            render=render_order,
            idempotency_key=uuid.uuid4().hex,
            fingerprint=str(i),
        )

    results = run_concurrently(act, len(orders) + len(buyers))

    unexpected = [r for r in results if isinstance(r, Exception) and not isinstance(r, InsufficientStock)]
    assert not unexpected, unexpected
    shipped = sum(isinstance(r, Shipment) for r in results)
    placed = sum(isinstance(r, services.PlacementResult) for r in results)
    # Nine units in all: three orders already held three; every other unit went at most once.
    assert placed + 3 <= 9
    levels = {
        row.warehouse.code: row for row in StockLevel.objects.filter(product__sku="TEA").select_related("warehouse")
    }
    assert sum(row.on_hand for row in levels.values()) == 9 - shipped
    assert sum(row.reserved for row in levels.values()) == 3 - shipped + placed
    assert_stock_invariants()

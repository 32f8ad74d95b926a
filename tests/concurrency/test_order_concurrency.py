"""Orders from many real threads on real PostgreSQL: no oversell, no deadlock, one order per key."""

import random
import uuid

import pytest
from django.db import connection

from inventory import services as stock
from inventory.errors import InsufficientStock
from inventory.models import StockLevel
from inventory.reservation import STRATEGIES
from orders import services
from orders.api import render_order
from orders.errors import RequestInFlight
from orders.models import Order
from tests.concurrency.support import LockWaitWatcher, run_concurrently, total_retries
from tests.factories import ProductFactory, UserFactory, WarehouseFactory
from tests.invariants import assert_stock_invariants
from tests.orders.conftest import ADDRESS

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def place(user, lines, key=None):
    return services.order_place(
        user=user,
        lines=[services.OrderLineRequest(sku, quantity) for sku, quantity in lines],
        shipping_address=ADDRESS,
        render=render_order,
        idempotency_key=key or uuid.uuid4().hex,
        fingerprint=str(lines),
    )


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_fifty_buyers_of_twenty_units_get_exactly_twenty_orders(strategy, settings):
    settings.STOCK_RESERVATION_STRATEGY = strategy
    WarehouseFactory(code="MAIN", priority=1)
    WarehouseFactory(code="EAST", priority=2)
    ProductFactory(sku="HOT")
    stock.stock_receive(sku="HOT", warehouse_code="MAIN", quantity=15)
    stock.stock_receive(sku="HOT", warehouse_code="EAST", quantity=5)
    buyers = UserFactory.create_batch(50)
    retries_before = total_retries()

    with LockWaitWatcher() as watcher:
        results = run_concurrently(lambda i: place(buyers[i], [("HOT", 1)]), 50)

    placed = [r for r in results if isinstance(r, services.PlacementResult)]
    refused = [r for r in results if isinstance(r, InsufficientStock)]
    assert len(placed) == 20, [r for r in results if not isinstance(r, (services.PlacementResult, InsufficientStock))]
    assert len(refused) == 30
    assert Order.objects.count() == 20
    assert sum(StockLevel.objects.values_list("reserved", flat=True)) == 20
    assert watcher.waits + (total_retries() - retries_before) > 0, "no real overlap was observed"
    assert_stock_invariants()


def test_multi_line_orders_in_opposite_sku_orders_never_deadlock_into_an_error():
    WarehouseFactory(code="MAIN", priority=1)
    WarehouseFactory(code="EAST", priority=2)
    skus = [f"SKU-{n}" for n in range(4)]
    for sku in skus:
        ProductFactory(sku=sku)
        stock.stock_receive(sku=sku, warehouse_code="MAIN", quantity=30)
        stock.stock_receive(sku=sku, warehouse_code="EAST", quantity=30)
    buyers = UserFactory.create_batch(24)
    retries_before = total_retries()

    def buy(i):
        order = list(skus) if i % 2 else list(reversed(skus))
        outcomes = []
        for _ in range(4):
            lines = [(sku, random.randint(1, 3)) for sku in order]
            try:
                outcomes.append(place(buyers[i], lines).status)
            except InsufficientStock:
                outcomes.append(409)
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        return outcomes

    with LockWaitWatcher() as watcher:
        results = run_concurrently(buy, 24)

    assert all(isinstance(r, list) for r in results), [r for r in results if not isinstance(r, list)]
    assert {status for r in results for status in r} <= {201, 409}
    assert watcher.waits + (total_retries() - retries_before) > 0, "no real overlap was observed"
    assert_stock_invariants()


def test_one_key_sent_by_ten_threads_at_once_makes_one_order():
    WarehouseFactory(code="MAIN")
    ProductFactory(sku="MUG")
    stock.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=100)
    buyer = UserFactory()

    results = run_concurrently(lambda i: place(buyer, [("MUG", 2)], key="same-key"), 10)

    created = [r for r in results if isinstance(r, services.PlacementResult) and not r.replayed]
    replayed = [r for r in results if isinstance(r, services.PlacementResult) and r.replayed]
    in_flight = [r for r in results if isinstance(r, RequestInFlight)]
    assert len(created) == 1
    assert len(created) + len(replayed) + len(in_flight) == 10
    assert all(r.body["number"] == created[0].body["number"] for r in replayed)
    assert Order.objects.count() == 1
    assert StockLevel.objects.get().reserved == 2
    assert_stock_invariants()

"""Receiving purchase orders under real concurrency (real threads, real PostgreSQL)."""

import pytest

from inventory import services as stock
from inventory.errors import InsufficientStock
from inventory.models import PurchaseOrderReceipt, StockLevel
from orders import services
from orders.api import render_order
from tests.concurrency.support import LockWaitWatcher, run_concurrently
from tests.factories import ProductFactory, UserFactory, WarehouseFactory
from tests.invariants import assert_stock_invariants
from tests.orders.conftest import ADDRESS

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_one_delivery_sent_sixteen_times_at_once_adds_once():
    WarehouseFactory(code="MAIN")
    ProductFactory(sku="MUG")
    po = stock.purchase_order_create(warehouse_code="MAIN", lines=[("MUG", 40)])

    with LockWaitWatcher() as watcher:
        results = run_concurrently(
            lambda i: stock.purchase_order_receive(purchase_order_id=po.pk, key="DELIVERY-1", lines=[("MUG", 25)]), 16
        )

    assert not [r for r in results if isinstance(r, Exception)], results
    assert sorted(added for _, added in results) == [False] * 15 + [True]
    assert StockLevel.objects.get(product__sku="MUG").on_hand == 25
    assert PurchaseOrderReceipt.objects.count() == 1
    assert watcher.waits > 0  # the purchase order's row lock lined them up
    assert_stock_invariants()


def test_deliveries_racing_orders_sell_exactly_what_arrived():
    """16 buyers of one unit each, racing 4 deliveries of 3 units each into an empty level: every
    unit that arrived is sold at most once, each buyer gets a unit or an exact refusal, and the
    ledger explains every level."""
    WarehouseFactory(code="MAIN")
    ProductFactory(sku="MUG")
    po = stock.purchase_order_create(warehouse_code="MAIN", lines=[("MUG", 12)])
    users = [UserFactory() for _ in range(16)]

    def act(i: int):
        if i % 5 == 0:  # 4 of the 20 threads receive
            return stock.purchase_order_receive(purchase_order_id=po.pk, key=f"D{i}", lines=[("MUG", 3)])
        buyer = users[i - 1 - i // 5]
        return services.order_place(
            user=buyer,
            lines=[services.OrderLineRequest("MUG", 1)],
            shipping_address=ADDRESS,
            render=render_order,
            idempotency_key=f"buy-{i}",
            fingerprint="MUG",
        )

    with LockWaitWatcher() as watcher:
        results = run_concurrently(act, 20)

    errors = [r for r in results if isinstance(r, Exception) and not isinstance(r, InsufficientStock)]
    assert not errors, errors
    sold = sum(1 for r in results if isinstance(r, services.PlacementResult))
    level = StockLevel.objects.get(product__sku="MUG")
    assert level.on_hand == 12 and level.reserved == sold <= 12
    assert watcher.waits > 0
    assert_stock_invariants()

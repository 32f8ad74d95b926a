"""Backorder caps, customer limits and arrivals under real concurrency (real threads, real
PostgreSQL): each rule holds however the requests interleave, and the tests see them queue."""

import threading

import pytest

from inventory import selectors
from inventory import services as stock
from inventory.errors import InsufficientStock, InvalidInput
from inventory.models import StockLevel
from orders import services
from orders.api import render_order
from orders.backorders import fill_waiting_backorders
from orders.models import Order
from tests.concurrency.support import LockWaitWatcher, run_concurrently
from tests.factories import ProductFactory, UserFactory, WarehouseFactory
from tests.invariants import assert_stock_invariants
from tests.orders.conftest import ADDRESS
from tests.support import other_connection, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

PATHS = [
    pytest.param({"ORDER_PLACEMENT_IN_SQL": True}, id="sql"),
    pytest.param({"ORDER_PLACEMENT_IN_SQL": False, "STOCK_RESERVATION_STRATEGY": "conditional"}, id="orm"),
]

# A backend waiting for a row waits on its holder's transaction id (the first) or on the row's
# tuple lock (those queued behind the first); one waiting for an advisory lock, on that lock.
WAITERS_SQL = "SELECT count(DISTINCT pid) FROM pg_locks WHERE NOT granted AND locktype = ANY(%s)"
ROW = ["transactionid", "tuple"]
ADVISORY = ["advisory"]


@pytest.fixture(params=PATHS)
def path(request, settings):
    for name, value in request.param.items():
        setattr(settings, name, value)


def place(user, sku: str, quantity: int = 1):
    return services.order_place(
        user=user,
        lines=[services.OrderLineRequest(sku, quantity)],
        shipping_address=ADDRESS,
        render=render_order,
    )


def set_rules(sku: str, **changes) -> None:
    stock.product_update(sku=sku, expected_version=selectors.product_detail(sku=sku).version, changes=changes)


def run_while_held(lock_sql: str, params: list, locktypes: list[str], worker, count: int, *, queued: int) -> list:
    """Hold a lock in a session of its own while `count` threads start `worker`; let go once at
    least `queued` of them wait for it (seen in pg_locks), so the race is the one under test."""
    holder = other_connection()
    try:
        with holder.transaction():
            holder.execute(lock_sql, params)
            results: list = []
            runner = threading.Thread(target=lambda: results.extend(run_concurrently(worker, count)))
            runner.start()
            with holder.cursor() as cursor:

                def waiting() -> bool:
                    cursor.execute(WAITERS_SQL, [locktypes])
                    return cursor.fetchone()[0] >= queued

                wait_for(waiting, timeout=30, interval=0.01, what=f"{queued} requests waiting for the lock")
        runner.join(timeout=60)
        return results
    finally:
        holder.close()


def test_orders_racing_for_the_last_backorders_never_pass_the_cap(path):
    WarehouseFactory(code="MAIN")
    ProductFactory(sku="MUG")
    stock.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=2)
    set_rules("MUG", backorder_policy="backorder", backorder_cap=5)
    level_id = StockLevel.objects.get(product__sku="MUG").pk
    buyers = [UserFactory() for _ in range(16)]

    results = run_while_held(
        "SELECT 1 FROM inventory_stocklevel WHERE id = %s FOR NO KEY UPDATE",
        [level_id],
        ROW,
        lambda i: place(buyers[i], "MUG"),
        16,
        queued=4,
    )

    errors = [r for r in results if isinstance(r, Exception) and not isinstance(r, InsufficientStock)]
    assert not errors, errors
    assert sum(1 for r in results if isinstance(r, services.PlacementResult)) == 7
    level = StockLevel.objects.get(pk=level_id)
    assert (level.on_hand, level.reserved, level.backordered) == (2, 2, 5)
    assert_stock_invariants()


def test_one_customers_orders_at_once_cannot_pass_the_limit_together(path):
    WarehouseFactory(code="MAIN")
    tea = ProductFactory(sku="TEA")
    stock.stock_receive(sku="TEA", warehouse_code="MAIN", quantity=100)
    set_rules("TEA", customer_limit=3)
    buyer = UserFactory()

    results = run_while_held(
        "SELECT pg_advisory_xact_lock(hashtextextended('orders_customer_limit:' || %s || ':' || %s, 0))",
        [str(buyer.pk), str(tea.pk)],
        ADVISORY,
        lambda i: place(buyer, "TEA"),
        8,
        queued=4,
    )

    errors = [r for r in results if isinstance(r, Exception) and not isinstance(r, InvalidInput)]
    assert not errors, errors
    assert sum(1 for r in results if isinstance(r, services.PlacementResult)) == 3
    assert Order.objects.filter(user=buyer).count() == 3
    assert StockLevel.objects.get(product__sku="TEA").reserved == 3
    assert_stock_invariants()


def test_deliveries_racing_backorders_and_cancels_fill_exactly_what_arrived(path):
    """12 buyers of one unit of a product with nothing on the shelf (backorders up to 20), 3
    deliveries of 2 units and 2 cancels, all at once: every unit that arrived goes to a waiting order
    or stays free, the ledger explains each level, and the periodic fill leaves nothing waiting
    beside a free unit."""
    WarehouseFactory(code="MAIN")
    ProductFactory(sku="MUG")
    set_rules("MUG", backorder_policy="backorder", backorder_cap=20)
    # The empty level is created now, and takes its product's cap.
    stock.stock_level_configure(sku="MUG", warehouse_code="MAIN", changes={"safety_stock": 0})
    assert StockLevel.objects.get(product__sku="MUG").backorder_cap == 20
    po = stock.purchase_order_create(warehouse_code="MAIN", lines=[("MUG", 6)])
    buyers = [UserFactory() for _ in range(14)]
    early = [Order.objects.get(number=place(buyers[i], "MUG").body["number"]) for i in (12, 13)]

    def act(i: int):
        if i < 3:
            return stock.purchase_order_receive(purchase_order_id=po.pk, key=f"D{i}", lines=[("MUG", 2)])
        if i < 5:
            return services.order_cancel(order_id=early[i - 3].pk)
        return place(buyers[i - 5], "MUG")

    with LockWaitWatcher() as watcher:
        results = run_concurrently(act, 17)
    errors = [r for r in results if isinstance(r, Exception)]
    assert not errors, errors
    assert watcher.waits > 0
    assert_stock_invariants()

    fill_waiting_backorders()
    level = StockLevel.objects.get(product__sku="MUG")
    assert level.on_hand == 6
    assert level.reserved + level.backordered == 12  # the 12 buyers; the 2 cancelled gave theirs back
    assert (level.reserved, level.backordered) == (6, 6)
    assert_stock_invariants()

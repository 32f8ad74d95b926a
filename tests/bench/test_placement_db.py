"""The database-level placement scenario on the test database: pgbench really places orders through
orders_place_order, uniform and hot, and the stock stays exact (the timed runs are `make bench`'s)."""

import pytest

from inventory import services as stock
from orders.models import Order
from tests.bench import placement_db
from tests.factories import ProductFactory, UserFactory, WarehouseFactory
from tests.invariants import assert_stock_invariants
from tests.reliability.support import database_url

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_pgbench_places_real_orders_uniformly_and_on_the_hot_sku_and_the_stock_stays_exact():
    WarehouseFactory(code="MAIN", priority=1)
    for sku in ("SKU-00001", "SKU-00002", "SKU-00003", "HOT"):
        ProductFactory(sku=sku)
        stock.stock_receive(sku=sku, warehouse_code="MAIN", quantity=100_000)
    UserFactory(email="bench@example.com")

    rounds = placement_db.run(database_url(), products=3, seconds=1, runs=1, warmup=0, clients=(2,))

    [only] = rounds
    assert only.uniform.calls > 0 and only.hot.calls > 0
    assert (only.uniform.orders, only.hot.orders) == (only.uniform.calls, only.hot.calls)
    assert placement_db.refused(rounds) == 0
    assert Order.objects.filter(lines__product__sku="HOT").count() == only.hot.orders
    assert "| 2 pgbench clients |" in placement_db.report(rounds)
    assert_stock_invariants()


def test_a_refusal_answered_as_json_is_counted_not_taken_for_throughput():
    WarehouseFactory(code="MAIN", priority=1)
    ProductFactory(sku="HOT")
    stock.stock_receive(sku="HOT", warehouse_code="MAIN", quantity=3)
    UserFactory(email="bench@example.com")

    run = placement_db.pgbench(
        database_url(), placement_db.HOT, clients=2, seconds=1, uid=placement_db.bench_user(database_url()), products=1
    )

    assert run.orders == 3
    assert run.refused == run.calls - 3 > 0
    assert_stock_invariants()

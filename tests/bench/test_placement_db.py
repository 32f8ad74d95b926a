"""The database-level placement scenario on the test database: pgbench really places orders through
orders_place_order, uniform and on the hot SKU with hot mode off and on, the switch between runs is
the service's, and the stock stays exact (the timed runs are `make bench`'s)."""

import pytest

from inventory import services as stock
from inventory.models import Product, StockBucket, StockMovement
from orders.models import Order
from tests.bench import placement_db
from tests.factories import ProductFactory, UserFactory, WarehouseFactory
from tests.invariants import assert_stock_invariants
from tests.reliability import support
from tests.reliability.support import database_url

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_pgbench_places_real_orders_uniformly_and_on_the_hot_sku_at_each_bucket_count_and_the_stock_stays_exact():
    WarehouseFactory(code="MAIN", priority=1)
    for sku in ("SKU-00001", "SKU-00002", "SKU-00003", "HOT"):
        ProductFactory(sku=sku)
        stock.stock_receive(sku=sku, warehouse_code="MAIN", quantity=100_000)
    UserFactory(email="bench@example.com")
    service = placement_db.service_switch(support.test_env())
    buckets_before_switch = []

    def switch(buckets: int) -> None:  # the bench's own switch, watched
        buckets_before_switch.append(StockBucket.objects.filter(level__product__sku="HOT").count())
        service(buckets)

    rounds = placement_db.run(
        database_url(), products=3, seconds=1, runs=1, warmup=0, clients=(2,), hot_buckets=(0, 1, 4), switch=switch
    )

    [only] = rounds
    assert list(only.hot) == [0, 1, 4]
    assert only.uniform.calls > 0 and all(run.calls > 0 for run in only.hot.values())
    assert all(run.orders == run.calls for run in [only.uniform, *only.hot.values()])
    assert placement_db.refused(rounds) == 0
    assert Order.objects.filter(lines__product__sku="HOT").count() == sum(run.orders for run in only.hot.values())
    # Each hot run left the buckets of its N (none with hot mode off) for the next switch to reclaim,
    # and the scenario ends with hot mode off and no bucket.
    assert buckets_before_switch == [0, 0, 1, 4]
    assert placement_db.hot_state(database_url()) == (0, 0)
    assert StockMovement.objects.filter(reason="bucket", reference="hot:HOT", delta_bucketed__lt=0).count() == 2
    assert only.breaches == [] and placement_db.breaches(database_url()) == []
    assert all(run.waits for run in [only.uniform, *only.hot.values()])  # the sampler saw the clients
    text = placement_db.report(rounds)
    assert "2 pgbench clients" in text and "hot mode off (N=0)" in text and "N=4 buckets" in text
    assert "invariants after each round: ok" in text
    assert_stock_invariants()


def test_the_scenario_leaves_hot_mode_off_even_when_a_run_fails():
    WarehouseFactory(code="MAIN", priority=1)
    for sku in ("SKU-00001", "HOT"):
        ProductFactory(sku=sku)
        stock.stock_receive(sku=sku, warehouse_code="MAIN", quantity=100)
    UserFactory(email="bench@example.com")
    stock.product_set_buckets(sku="HOT", buckets=4)
    switched = []

    def switch(buckets: int) -> None:
        switched.append(buckets)
        if buckets == 1:
            raise RuntimeError("switch failed")
        stock.product_set_buckets(sku="HOT", buckets=buckets)

    with pytest.raises(RuntimeError, match="switch failed"):
        placement_db.run(
            database_url(), products=1, seconds=1, runs=1, warmup=0, clients=(1,), hot_buckets=(1,), switch=switch
        )

    assert switched == [1, 0]
    assert Product.objects.get(sku="HOT").stock_buckets == 0
    assert_stock_invariants()


@pytest.mark.parametrize("buckets", [0, 4])
def test_a_refusal_answered_as_json_is_counted_not_taken_for_throughput(buckets):
    WarehouseFactory(code="MAIN", priority=1)
    ProductFactory(sku="HOT")
    stock.stock_receive(sku="HOT", warehouse_code="MAIN", quantity=3)
    stock.product_set_buckets(sku="HOT", buckets=buckets)
    UserFactory(email="bench@example.com")

    run = placement_db.pgbench(
        database_url(), placement_db.HOT, clients=2, seconds=1, uid=placement_db.bench_user(database_url()), products=1
    )

    assert run.orders == 3
    assert run.refused == run.calls - 3 > 0
    assert_stock_invariants()

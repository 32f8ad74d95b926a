"""Real threads on real PostgreSQL: invariants hold and no strategy oversells."""

import random

import pytest
from django.db import connection

from inventory import services
from inventory.errors import InsufficientStock, InvalidStock, VersionConflict
from inventory.models import Product, StockLevel
from inventory.reservation import STRATEGIES
from project.db.transactions import atomic_with_retry
from project.errors import LockTimeout
from tests.concurrency.support import LockWaitWatcher, run_concurrently, total_retries
from tests.factories import ProductFactory, WarehouseFactory
from tests.invariants import assert_ledger_invariants

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def _hold_locks_briefly():
    # Keep the transaction open a moment after locking, so the other threads really queue behind it.
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_sleep(0.003)")


@atomic_with_retry
def buy(product: Product, quantity: int, strategy: str):
    allocations = services.reserve_stock(lines=[(product, quantity)], reference="TEST", strategy=strategy)
    _hold_locks_briefly()
    return allocations


@atomic_with_retry
def give_back(allocations):
    services.release_stock(allocations=[(a.level_id, a.quantity) for a in allocations], reference="TEST")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_fifty_buyers_of_twenty_units_sell_exactly_twenty(strategy):
    WarehouseFactory(code="MAIN", priority=1)
    WarehouseFactory(code="EAST", priority=2)
    mug = ProductFactory(sku="MUG")
    services.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=12)
    services.stock_receive(sku="MUG", warehouse_code="EAST", quantity=8)
    retries_before = total_retries()

    with LockWaitWatcher() as watcher:
        results = run_concurrently(lambda i: buy(mug, 1, strategy), 50)

    sold = [r for r in results if isinstance(r, list)]
    refused = [r for r in results if isinstance(r, InsufficientStock)]
    assert len(sold) == 20, [r for r in results if not isinstance(r, (list, InsufficientStock))]
    assert len(refused) == 30
    assert sum(level.reserved for level in StockLevel.objects.filter(product=mug)) == 20
    assert watcher.waits + (total_retries() - retries_before) > 0, "no real overlap was observed"
    assert_ledger_invariants()


def test_mixed_staff_and_shopper_traffic_keeps_every_invariant():
    WarehouseFactory(code="MAIN", priority=1)
    WarehouseFactory(code="EAST", priority=2)
    mug = ProductFactory(sku="MUG")
    services.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=40)
    services.stock_receive(sku="MUG", warehouse_code="EAST", quantity=40)
    retries_before = total_retries()

    def traffic(seed: int):
        rng = random.Random(seed)
        outcomes = []
        held = []
        for _ in range(12):
            action = rng.choice(["buy", "buy", "release", "adjust", "count", "transfer"])
            try:
                if action == "buy":
                    held.append(buy(mug, rng.randint(1, 4), rng.choice(STRATEGIES)))
                elif action == "release" and held:
                    give_back(held.pop())
                elif action == "adjust":
                    services.stock_adjust(
                        sku="MUG", warehouse_code=rng.choice(["MAIN", "EAST"]), delta=rng.choice([-5, -3, -1, 2, 4, 8])
                    )
                elif action == "count":
                    code = rng.choice(["MAIN", "EAST"])
                    seen = StockLevel.objects.get(product=mug, warehouse__code=code)
                    services.stock_count(
                        sku="MUG",
                        warehouse_code=code,
                        on_hand=max(0, seen.on_hand + rng.randint(-3, 3)),
                        expected_version=seen.version,
                    )
                elif action == "transfer":
                    source, target = rng.sample(["MAIN", "EAST"], 2)
                    services.stock_transfer(sku="MUG", from_code=source, to_code=target, quantity=rng.randint(1, 5))
                outcomes.append(action)
            except (InsufficientStock, InvalidStock, VersionConflict, LockTimeout) as refusal:
                outcomes.append(type(refusal).__name__)
        return outcomes

    with LockWaitWatcher() as watcher:
        results = run_concurrently(traffic, 16)

    errors = [r for r in results if isinstance(r, Exception)]
    assert errors == []
    assert watcher.waits + (total_retries() - retries_before) > 0, "no real overlap was observed"
    assert_ledger_invariants()
    for level in StockLevel.objects.filter(product=mug):
        assert 0 <= level.reserved <= level.on_hand

"""Bulk stock sets from real threads on real PostgreSQL: one key makes one change, overlapping
batches in any order never deadlock into an error, and orders placed meanwhile keep every invariant."""

import random
import uuid

import pytest
from django.db import connection

from inventory import bulk
from inventory import services as stock
from inventory.errors import InsufficientStock
from inventory.models import BulkStockRequest, StockLevel, StockMovement
from orders import services as orders
from orders.api import render_order
from tests.concurrency.support import LockWaitWatcher, run_concurrently, total_retries
from tests.factories import ProductFactory, UserFactory, WarehouseFactory
from tests.invariants import assert_stock_invariants
from tests.orders.conftest import ADDRESS

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def counted() -> int:
    return StockMovement.objects.filter(reason="count").count()


def test_sixteen_threads_racing_one_key_make_one_change_and_all_get_its_answer(db):
    WarehouseFactory(code="MAIN", priority=1)
    WarehouseFactory(code="EAST", priority=2)
    for n in range(40):
        ProductFactory(sku=f"SKU-{n}")
        stock.stock_receive(sku=f"SKU-{n}", warehouse_code="MAIN", quantity=10)
    staff = UserFactory(is_staff=True)
    rows = [bulk.BulkRow(f"SKU-{n}", code, 25 + n) for n in range(40) for code in ("MAIN", "EAST")]

    with LockWaitWatcher() as watcher:
        results = run_concurrently(
            lambda i: bulk.stock_levels_set_bulk(
                user=staff, key="one-key", fingerprint="same body", rows=rows, reference="RACE"
            ),
            16,
        )

    assert all(isinstance(r, bulk.BulkResult) for r in results), results
    assert sum(not r.replayed for r in results) == 1
    assert all(r.status == 200 and r.body == results[0].body for r in results)
    assert results[0].body["updated"] == 80
    assert counted() == 80  # one ledger row per level, once
    assert BulkStockRequest.objects.count() == 1
    assert watcher.waits > 0, "the twins never waited on the first request's key"
    assert_stock_invariants()


def test_overlapping_batches_in_any_order_and_orders_meanwhile_never_deadlock_and_keep_invariants(db):
    WarehouseFactory(code="MAIN", priority=1)
    WarehouseFactory(code="EAST", priority=2)
    skus = [f"SKU-{n}" for n in range(12)]
    for sku in skus:
        ProductFactory(sku=sku)
        stock.stock_receive(sku=sku, warehouse_code="MAIN", quantity=30)
        stock.stock_receive(sku=sku, warehouse_code="EAST", quantity=30)
    staff = UserFactory(is_staff=True)
    buyers = UserFactory.create_batch(8)
    levels = [(sku, code) for sku in skus for code in ("MAIN", "EAST")]
    retries_before = total_retries()

    def hold_briefly():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_sleep(0.002)")

    def setter(seed: int) -> list:
        rng = random.Random(seed)
        outcomes = []
        for _ in range(6):
            chosen = rng.sample(levels, rng.randint(4, len(levels)))  # overlapping, each in its own order
            rows = [bulk.BulkRow(sku, code, rng.randint(0, 40)) for sku, code in chosen]
            policy = rng.choice(bulk.ERROR_POLICIES)
            result = bulk.stock_levels_set_bulk(
                user=staff, key=uuid.uuid4().hex, fingerprint="f", rows=rows, error_policy=policy, reference=f"T{seed}"
            )
            outcomes.append(result.status)
        return outcomes

    def buyer(seed: int) -> list:
        rng = random.Random(seed)
        outcomes = []
        for _ in range(6):
            lines = [(sku, rng.randint(1, 3)) for sku in rng.sample(skus, rng.randint(1, 4))]
            try:
                orders.order_place(
                    user=buyers[seed - 8],
                    lines=[orders.OrderLineRequest(sku, quantity) for sku, quantity in lines],
                    shipping_address=ADDRESS,
                    render=render_order,
                    idempotency_key=uuid.uuid4().hex,
                    fingerprint=str(lines),
                )
                outcomes.append("placed")
            except InsufficientStock:
                outcomes.append("short")
            hold_briefly()
        return outcomes

    with LockWaitWatcher() as watcher:
        results = run_concurrently(lambda i: setter(i) if i < 8 else buyer(i), 16, timeout=120)

    failures = [r for r in results if isinstance(r, Exception)]
    assert failures == [], failures  # a deadlock retried past its attempts would be LockTimeout here
    statuses = [status for r in results[:8] for status in r]
    assert set(statuses) <= {200, 409} and 200 in statuses
    assert "placed" in [outcome for r in results[8:] for outcome in r]
    assert watcher.waits + (total_retries() - retries_before) > 0, "no real overlap was observed"
    assert all(level.on_hand >= level.reserved >= 0 for level in StockLevel.objects.all())
    assert_stock_invariants()

"""The platform's metrics recorded in this process: lock waits, pool statistics, the outbox backlog
and the series that exist before their first event (the apps' included: their ready() makes them)."""

import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone
from prometheus_client import REGISTRY

from inventory import locks as stock_locks
from inventory import services as stock
from inventory.models import StockLevel
from project.observability.pool import PoolStatsCopier
from project.outbox.metrics import OutboxBacklog
from project.outbox.models import OutboxMessage
from tests.factories import ProductFactory, WarehouseFactory
from tests.support import wait_for


def sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_known_label_values_exist_before_their_first_event():
    for outcome in ("lock_timeout", "error"):
        assert REGISTRY.get_sample_value("stockroom_orders_placed_total", {"outcome": outcome}) is not None
    assert REGISTRY.get_sample_value("stockroom_stock_changes_total", {"reason": "expiry"}) is not None
    assert REGISTRY.get_sample_value("stockroom_ratelimit_limited_total", {"group": "write"}) is not None
    assert REGISTRY.get_sample_value("stockroom_outbox_relay_failures_total", {"cause": "broker"}) is not None


@pytest.mark.django_db(transaction=True)
def test_a_blocked_select_for_update_is_observed_as_a_lock_wait():
    WarehouseFactory(code="MAIN")
    ProductFactory(sku="MUG")
    stock.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=1)
    level_id = StockLevel.objects.get().pk
    labels = {"table": "inventory_stocklevel", "kind": "select_for_update"}
    before = sample("stockroom_lock_wait_seconds_count", **labels)
    holding, waiting_started = threading.Event(), threading.Event()
    release = threading.Event()

    def holder():
        try:
            with transaction.atomic():
                stock_locks.lock_stock_levels([level_id])
                holding.set()
                release.wait(10)
        finally:
            connection.close()

    def waiter():
        try:
            holding.wait(10)
            waiting_started.set()
            with transaction.atomic():
                stock_locks.lock_stock_levels([level_id])
        finally:
            connection.close()

    threads = [threading.Thread(target=holder), threading.Thread(target=waiter)]
    for thread in threads:
        thread.start()
    waiting_started.wait(10)
    wait_for(_someone_waits, timeout=10, what="the second transaction to wait for the row lock")
    release.set()
    for thread in threads:
        thread.join(10)

    assert sample("stockroom_lock_wait_seconds_count", **labels) - before == 2  # the holder's and the waiter's


def _someone_waits() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE NOT l.granted AND a.datname = current_database()"
        )
        return cursor.fetchone()[0] > 0


@pytest.mark.django_db(transaction=True)
def test_pool_statistics_are_copied_into_metrics():
    if not connection.settings_dict["OPTIONS"].get("pool"):
        pytest.skip("runs with the pool (the test settings keep it on)")
    copier = PoolStatsCopier(interval=0)
    copier.copy()
    before = sample("stockroom_db_pool_requests_total", alias="default")

    for _ in range(3):
        with connection.cursor() as cursor:  # each connect takes a connection from the pool
            cursor.execute("SELECT 1")
        connection.close()  # and gives it back
    copier.copy()

    assert sample("stockroom_db_pool_requests_total", alias="default") - before == 3
    assert sample("stockroom_db_pool_max", alias="default") == connection.settings_dict["OPTIONS"]["pool"]["max_size"]
    assert sample("stockroom_db_pool_connections", alias="default") >= 1


@pytest.mark.django_db(transaction=True)
def test_outbox_backlog_is_measured_then_served_from_the_last_measurement():
    old = OutboxMessage.objects.create(task="orders.send_order_email", kwargs={"order_id": 1, "kind": "placed"})
    OutboxMessage.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(hours=1))
    OutboxMessage.objects.create(task="orders.send_order_email", kwargs={"order_id": 2, "kind": "placed"})
    OutboxMessage.objects.create(task="orders.send_order_email", state=OutboxMessage.State.SENT)
    OutboxMessage.objects.create(task="orders.send_order_email", state=OutboxMessage.State.DEAD)
    OutboxMessage.objects.create(task="orders.send_order_email", state=OutboxMessage.State.DONE)
    backlog = OutboxBacklog()
    assert list(backlog.collect()) == []  # nothing measured yet: no series, not a false zero

    backlog.measure()
    OutboxMessage.objects.all().delete()  # what a scrape sees now is the measurement, not the table
    served = {(s.name, s.labels.get("state")): s.value for family in backlog.collect() for s in family.samples}

    assert served[("stockroom_outbox_messages", "pending")] == 2
    assert served[("stockroom_outbox_messages", "sent")] == 1
    assert served[("stockroom_outbox_messages", "dead")] == 1
    assert served[("stockroom_outbox_oldest_age_seconds", "pending")] >= 3600
    assert served[("stockroom_outbox_oldest_age_seconds", "sent")] >= 0
    assert served[("stockroom_outbox_backlog_measured_timestamp_seconds", None)] > 0


def test_labels_stay_bounded():
    # Labels stay bounded: no order number, user or SKU ever becomes a label value.
    names = {metric.name: metric for metric in REGISTRY.collect()}
    for name in ("stockroom_orders_placed", "stockroom_stock_changes", "stockroom_lock_wait_seconds"):
        for s in names[name].samples:
            assert set(s.labels) <= {"outcome", "reason", "table", "kind", "le"}, s

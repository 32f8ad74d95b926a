"""The webhook events of stock: `stock.changed` coalesced from the ledger after commit, one per
level per run; `stock.low` from the low-stock job; `product.back_in_stock` from the sweep."""

import threading

import pytest
from django.db import connection, transaction

from inventory import services
from inventory.back_in_stock import back_in_stock_notify, back_in_stock_subscribe
from inventory.events import stock_changed_emit
from inventory.models import LedgerFollower, StockLevel
from inventory.serializers import BackInStockProductSerializer, StockLevelSerializer, StockLowProductSerializer
from project.webhooks.models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from tests.factories import ProductFactory, UserFactory, WarehouseFactory
from tests.support import wait_for

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def endpoint(*events, url="https://hooks.example.com/a") -> WebhookEndpoint:
    return WebhookEndpoint.objects.create(url=url, events=list(events), secret=SECRET)


def changed() -> list[tuple[str, str, int]]:
    """(sku, warehouse, on_hand) of each stock.changed event, oldest first; each carries its
    level's version, which is the level's version now (nothing changed since the run)."""
    found = []
    for event in WebhookEvent.objects.filter(type="stock.changed").order_by("id"):
        level = event.payload["level"]
        found.append((level["sku"], level["warehouse"], level["on_hand"]))
    return found


def versions_are_current() -> bool:
    levels = {
        (lv.product.sku, lv.warehouse.code): lv.version
        for lv in StockLevel.objects.select_related("product", "warehouse")
    }
    latest = {}
    for event in WebhookEvent.objects.filter(type="stock.changed").order_by("id"):
        level = event.payload["level"]
        latest[level["sku"], level["warehouse"]] = level["version"]
    return all(levels[key] == version for key, version in latest.items())


def emit_until(expected: list[tuple[str, str, int]]) -> None:
    """Run the job until the stock.changed events are `expected` (sorted). The feed serves rows
    below the oldest transaction id still running on the whole server, so another session's open
    transaction can hold a change back for a moment: poll with a deadline."""
    wait_for(lambda: stock_changed_emit() is not None and sorted(changed()) == expected, timeout=30, what=f"{expected}")


def caught_up() -> None:
    """Run the job until the follower is past every ledger row written so far, then forget what it
    emitted: the test starts from here."""

    def past_everything() -> bool:
        stock_changed_emit()
        with connection.cursor() as cursor:
            cursor.execute("SELECT txid::text, id FROM inventory_stockmovement ORDER BY txid DESC, id DESC LIMIT 1")
            txid, movement_id = cursor.fetchone()
        follower = LedgerFollower.objects.get()
        return (follower.txid, follower.last_id) >= (int(txid), movement_id)

    wait_for(past_everything, timeout=30, what="the follower to catch up")
    WebhookEvent.objects.all().delete()


@pytest.fixture
def shelf(transactional_db):
    WarehouseFactory(code="MAIN")
    WarehouseFactory(code="EAST", priority=2)
    ProductFactory(sku="MUG", low_stock_threshold=3)
    ProductFactory(sku="CUP", low_stock_threshold=3)
    services.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=10)
    services.stock_receive(sku="CUP", warehouse_code="MAIN", quantity=10)


def test_stock_changed_is_one_event_per_level_per_run_with_the_level_as_it_stands(shelf):
    hook = endpoint("stock.changed")
    caught_up()

    for _ in range(5):
        services.stock_adjust(sku="MUG", warehouse_code="MAIN", delta=-1)
    services.stock_receive(sku="MUG", warehouse_code="EAST", quantity=4)
    services.stock_adjust(sku="CUP", warehouse_code="MAIN", delta=2)

    emit_until([("CUP", "MAIN", 12), ("MUG", "EAST", 4), ("MUG", "MAIN", 5)])
    assert versions_are_current()
    event = WebhookEvent.objects.get(type="stock.changed", payload__level__sku="CUP")
    level = StockLevel.objects.get(product__sku="CUP")
    assert event.ordering_key == f"level:{level.pk}"
    assert set(event.payload["level"]) == set(StockLevelSerializer().fields)  # as the schema documents it
    assert WebhookDelivery.objects.filter(endpoint=hook).count() == 3

    # Nothing new: nothing emitted. A new change: its level only.
    assert stock_changed_emit() == 0
    services.stock_adjust(sku="CUP", warehouse_code="MAIN", delta=-1)
    emit_until([("CUP", "MAIN", 11), ("CUP", "MAIN", 12), ("MUG", "EAST", 4), ("MUG", "MAIN", 5)])
    assert changed()[-1] == ("CUP", "MAIN", 11)
    assert versions_are_current()


def test_without_an_endpoint_the_follower_skips_ahead_and_emits_nothing(shelf):
    services.stock_adjust(sku="MUG", warehouse_code="MAIN", delta=-1)
    assert stock_changed_emit() == 0
    assert stock_changed_emit() == 0
    follower = LedgerFollower.objects.get()
    assert follower.txid > 0
    assert not WebhookEvent.objects.exists()
    endpoint("stock.changed")
    services.stock_adjust(sku="CUP", warehouse_code="MAIN", delta=-1)
    # (MUG's change may come too if another session's transaction, older than it, was still open
    # when the follower skipped ahead: the skip goes to the oldest running transaction, never past it.)
    wait_for(lambda: stock_changed_emit() is not None and ("CUP", "MAIN", 9) in changed(), timeout=30, what="CUP")


def test_a_change_still_open_is_emitted_after_it_commits_and_a_rolled_back_one_never(shelf):
    endpoint("stock.changed")
    caught_up()
    written, release = threading.Event(), threading.Event()

    def slow_change():
        try:
            with transaction.atomic():
                services.stock_adjust(sku="CUP", warehouse_code="MAIN", delta=-3)
                written.set()
                release.wait(10)
        finally:
            connection.close()

    def rolled_back():
        try:
            with pytest.raises(RuntimeError), transaction.atomic():
                services.stock_adjust(sku="MUG", warehouse_code="EAST", delta=7)
                raise RuntimeError("roll back")
        finally:
            connection.close()

    slow = threading.Thread(target=slow_change)
    slow.start()
    assert written.wait(10)
    services.stock_adjust(sku="MUG", warehouse_code="MAIN", delta=-2)  # commits after the slow one began
    worker = threading.Thread(target=rolled_back)
    worker.start()
    worker.join(10)

    stock_changed_emit()  # the slow change holds the horizon: MUG waits behind it, nothing is skipped
    assert changed() == []
    release.set()
    slow.join(10)
    emit_until([("CUP", "MAIN", 7), ("MUG", "MAIN", 8)])
    assert not WebhookEvent.objects.filter(payload__level__warehouse="EAST").exists()


def test_stock_low_is_emitted_once_per_crossing_even_without_staff_recipients(shelf, settings):
    settings.STAFF_ALERT_EMAILS = []
    endpoint("stock.low")
    services.stock_adjust(sku="CUP", warehouse_code="MAIN", delta=-8)
    assert services.low_stock_alerts_queue(recipients=[]) == ["CUP"]
    assert services.low_stock_alerts_queue(recipients=[]) == []  # still low: once per crossing
    event = WebhookEvent.objects.get(type="stock.low")
    assert set(event.payload["product"]) == set(StockLowProductSerializer().fields)
    assert event.payload == {
        "product": {"sku": "CUP", "name": event.payload["product"]["name"], "on_hand": 2, "available": 2,
                    "incoming": 0, "threshold": 3}
    }  # fmt: skip


def test_product_back_in_stock_is_emitted_by_the_sweep_for_products_shoppers_waited_for(shelf):
    endpoint("product.back_in_stock")
    services.stock_adjust(sku="CUP", warehouse_code="MAIN", delta=-10)
    shopper = UserFactory()
    back_in_stock_subscribe(user=shopper, sku="CUP")
    assert back_in_stock_notify() == 0
    assert not WebhookEvent.objects.exists()

    services.stock_receive(sku="CUP", warehouse_code="MAIN", quantity=4)
    assert back_in_stock_notify() == 1
    event = WebhookEvent.objects.get()
    assert set(event.payload["product"]) == set(BackInStockProductSerializer().fields)
    assert (event.type, event.payload["product"]["sku"], event.payload["product"]["available"]) == (
        "product.back_in_stock",
        "CUP",
        4,
    )

"""The orders app's metrics: each placement counted once by its outcome, timed and logged."""

import pytest
from prometheus_client import REGISTRY

from inventory import services as stock
from orders import services
from orders.api import render_order
from orders.metrics import placement_outcome
from project.errors import LockTimeout, ServiceUnavailable
from tests.factories import ProductFactory, UserFactory, WarehouseFactory
from tests.orders.conftest import ADDRESS


def sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def mugs(db):
    WarehouseFactory(code="MAIN", priority=1)
    ProductFactory(sku="MUG", price="12.50")
    stock.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=2)
    return UserFactory()


def place(user, quantity: int, key: str, sku: str = "MUG"):
    return services.order_place(
        user=user,
        lines=[services.OrderLineRequest(sku, quantity)],
        shipping_address=ADDRESS,
        render=render_order,
        idempotency_key=key,
        fingerprint=f"{sku}x{quantity}",
    )


def test_each_placement_is_counted_once_by_its_outcome(mugs):
    outcomes = ("created", "replayed", "insufficient_stock", "conflict", "invalid")
    before = {o: sample("stockroom_orders_placed_total", outcome=o) for o in outcomes}

    place(mugs, 1, "k1")
    place(mugs, 1, "k1")  # the same key and body: answered again
    with pytest.raises(Exception, match="stock"):
        place(mugs, 5, "k2")
    with pytest.raises(Exception, match="Idempotency"):
        place(mugs, 2, "k1")  # the same key, another body: 422
    with pytest.raises(Exception, match="Invalid"):
        place(mugs, 1, "k3", sku="NO-SUCH-SKU")

    after = {o: sample("stockroom_orders_placed_total", outcome=o) - before[o] for o in outcomes}
    assert after == {"created": 1, "replayed": 1, "insufficient_stock": 1, "conflict": 1, "invalid": 1}
    assert sample("stockroom_order_placement_seconds_count", outcome="created") >= 1


def test_outcomes_of_refusals_and_failures():
    assert placement_outcome(LockTimeout()) == "lock_timeout"
    assert placement_outcome(ServiceUnavailable()) == "error"
    assert placement_outcome(RuntimeError("boom")) == "error"


def test_placement_writes_one_log_line_with_its_outcome(mugs, json_log):
    result = place(mugs, 1, "k-log")

    lines = [line for line in json_log() if line["logger"] == "stockroom.orders.placement"]
    assert [(line["outcome"], line["order_number"]) for line in lines] == [("created", result.body["number"])]

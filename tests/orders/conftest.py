import uuid

import pytest

from inventory import services as stock
from orders import services
from orders.api import render_order
from orders.models import Order
from tests.factories import ProductFactory, UserFactory, WarehouseFactory

ADDRESS = {
    "name": "Ada Lovelace",
    "line1": "12 Analytical St",
    "city": "London",
    "postal_code": "N1 9GU",
    "country": "GB",
}


@pytest.fixture
def shop(db):
    """Two warehouses; MUG (5 in MAIN, 5 in EAST) and TEA (3 in MAIN)."""
    WarehouseFactory(code="MAIN", priority=1)
    WarehouseFactory(code="EAST", priority=2)
    ProductFactory(sku="MUG", price="12.50")
    ProductFactory(sku="TEA", price="4.00")
    stock.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=5)
    stock.stock_receive(sku="MUG", warehouse_code="EAST", quantity=5)
    stock.stock_receive(sku="TEA", warehouse_code="MAIN", quantity=3)


def order_body(*lines, **extra) -> dict:
    return {"lines": [{"sku": sku, "quantity": q} for sku, q in lines], "shipping_address": ADDRESS, **extra}


def place(client, *lines, key: str | None = None, **extra):
    return client.post(
        "/api/v1/orders", order_body(*lines, **extra), format="json", HTTP_IDEMPOTENCY_KEY=key or uuid.uuid4().hex
    )


def place_reserved(*lines, user=None) -> Order:
    """A reserved order of these (sku, quantity) lines, placed through the services."""
    result = services.order_place(
        user=user or UserFactory(),
        lines=[services.OrderLineRequest(sku, quantity) for sku, quantity in lines],
        shipping_address=ADDRESS,
        render=render_order,
        idempotency_key=uuid.uuid4().hex,
        fingerprint=str(lines),
    )
    return Order.objects.get(number=result.body["number"])


def place_paid(*lines, user=None) -> Order:
    """A paid order of these (sku, quantity) lines, placed and paid through the services."""
    return services.order_pay(order_id=place_reserved(*lines, user=user).pk)

"""Every API route checks the key's scopes: a key without the route's scope is refused (403)."""

import pytest
from rest_framework.test import APIClient

from inventory import services as stock
from tests.conftest import bearer
from tests.factories import ProductFactory, WarehouseFactory
from tests.orders.conftest import order_body
from users.services import api_key_create

ROUTES = [
    # (method, path, body, scope the route needs)
    ("post", "/api/v1/products", {"sku": "NEW", "name": "New", "price": "1.00"}, "staff"),
    ("patch", "/api/v1/products/MUG", {"name": "Renamed"}, "staff"),
    ("get", "/api/v1/stock", None, "staff"),
    ("post", "/api/v1/stock/adjustments", {"sku": "MUG", "warehouse": "MAIN", "delta": 1, "reason": "x"}, "staff"),
    ("post", "/api/v1/stock/counts", {"sku": "MUG", "warehouse": "MAIN", "on_hand": 5, "expected_version": 2}, "staff"),
    ("post", "/api/v1/stock/transfers", {"sku": "MUG", "from": "MAIN", "to": "EAST", "quantity": 1}, "staff"),
    ("get", "/api/v1/imports/1", None, "staff"),
    ("get", "/api/v1/orders", None, "read"),
    ("get", "/api/v1/orders/{number}", None, "read"),
    ("post", "/api/v1/orders", order_body(("MUG", 1)), "write"),
    ("post", "/api/v1/orders/{number}/pay", None, "write"),
    ("post", "/api/v1/orders/{number}/cancel", None, "write"),
    ("post", "/api/v1/orders/{number}/fulfil", None, "staff"),
    ("post", "/api/v1/orders/{number}/return", None, "staff"),
    ("get", "/api/v1/auth/keys", None, "read"),
]
ALL_SCOPES = ["read", "write", "staff"]


@pytest.fixture
def staff_shop(db, staff_user):
    WarehouseFactory(code="MAIN", priority=1)
    WarehouseFactory(code="EAST", priority=2)
    ProductFactory(sku="MUG")
    stock.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=50)
    _, full_key = api_key_create(user=staff_user, scopes=ALL_SCOPES)
    placed = bearer(APIClient(), full_key).post(
        "/api/v1/orders", order_body(("MUG", 1)), format="json", HTTP_IDEMPOTENCY_KEY="setup"
    )
    return placed.json()["number"]


def _call(client, method, path, body, number):
    kwargs = {"format": "json"} if body is not None else {}
    if method == "post" and path == "/api/v1/orders":
        kwargs["HTTP_IDEMPOTENCY_KEY"] = f"scope-test-{id(client)}"
    if method == "patch":
        kwargs["HTTP_IF_MATCH"] = '"1"'
    return getattr(client, method)(path.format(number=number), body, **kwargs)


@pytest.mark.parametrize(("method", "path", "body", "scope"), ROUTES, ids=[f"{m} {p}" for m, p, _, _ in ROUTES])
def test_a_key_without_the_routes_scope_is_refused(staff_user, staff_shop, method, path, body, scope):
    without = [s for s in ALL_SCOPES if s != scope]
    _, key = api_key_create(user=staff_user, scopes=without)

    response = _call(bearer(APIClient(), key), method, path, body, staff_shop)

    assert response.status_code == 403, response.content
    assert response.json()["error"]["code"] == "permission_denied"


@pytest.mark.parametrize(("method", "path", "body", "scope"), ROUTES, ids=[f"{m} {p}" for m, p, _, _ in ROUTES])
def test_a_key_with_only_the_routes_scope_gets_past_the_permission_check(
    staff_user, staff_shop, method, path, body, scope
):
    _, key = api_key_create(user=staff_user, scopes=[scope])

    response = _call(bearer(APIClient(), key), method, path, body, staff_shop)

    assert response.status_code != 403, response.content


def test_the_catalogue_is_open_to_anyone(db, staff_shop):
    assert APIClient().get("/api/v1/products").status_code == 200
    assert APIClient().get("/api/v1/products/MUG").status_code == 200

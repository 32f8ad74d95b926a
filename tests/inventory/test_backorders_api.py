"""Backorders, preorders, safety stock and limits over the REST API and on the shopper's pages."""

import uuid
from datetime import date, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from inventory import services as stock
from inventory.models import StockLevel
from orders import services as order_services
from orders.api import render_order
from orders.models import Order
from tests.factories import ProductFactory, WarehouseFactory
from tests.orders.conftest import ADDRESS
from tests.orders.test_pages import place as place_on_pages

pytestmark = pytest.mark.django_db


@pytest.fixture
def shop(db):
    WarehouseFactory(code="MAIN", priority=1)
    ProductFactory(sku="MUG", name="Mug", price="12.50")
    ProductFactory(sku="TEA", name="Tea", price="4.00")
    stock.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=2)
    stock.stock_receive(sku="TEA", warehouse_code="MAIN", quantity=10)


@pytest.fixture
def patch_product(django_capture_on_commit_callbacks):
    def patch(client, sku: str, body: dict):
        tag = client.get(f"/api/v1/products/{sku}").headers["ETag"]
        with django_capture_on_commit_callbacks(execute=True):  # the catalogue hears of the edit at commit
            return client.patch(f"/api/v1/products/{sku}", body, format="json", HTTP_IF_MATCH=tag)

    return patch


def order(client, *lines):
    body = {"lines": [{"sku": sku, "quantity": q} for sku, q in lines], "shipping_address": ADDRESS}
    return client.post("/api/v1/orders", body, format="json", HTTP_IDEMPOTENCY_KEY=uuid.uuid4().hex)


def test_staff_set_a_backorder_policy_and_shoppers_see_it(shop, patch_product, staff_client, customer_client):
    changed = patch_product(staff_client, "MUG", {"backorder_policy": "backorder", "backorder_cap": 5})
    assert changed.status_code == 200, changed.content
    assert changed.json()["backorder_policy"] == "backorder"
    public = customer_client.get("/api/v1/products/MUG").json()
    assert (public["backorder_policy"], public["preorder_until"], public["max_per_order"]) == ("backorder", None, None)

    placed = order(customer_client, ("MUG", 4))
    assert placed.status_code == 201, placed.content
    assert placed.json()["lines"][0]["allocations"] == [{"warehouse": "MAIN", "quantity": 4, "backordered": 2}]
    number = placed.json()["number"]
    assert customer_client.get(f"/api/v1/orders/{number}").json()["lines"][0]["allocations"][0]["backordered"] == 2
    level = staff_client.get("/api/v1/stock", {"sku": "MUG"}).json()["results"][0]
    assert (level["reserved"], level["backordered"], level["backorder_cap"], level["available"]) == (2, 2, 5, 0)

    over = order(customer_client, ("MUG", 4))
    assert over.status_code == 409 and over.json()["error"]["code"] == "insufficient_stock"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"backorder_policy": "maybe"}, "backorder_policy"),
        ({"backorder_cap": -1}, "backorder_cap"),
        ({"backorder_policy": "preorder", "backorder_cap": 3}, "preorder_until"),
        ({"backorder_policy": "preorder", "backorder_cap": 3, "preorder_until": "2020-01-01"}, "preorder_until"),
        ({"max_per_order": 0}, "max_per_order"),
        ({"customer_limit_days": 0}, "customer_limit_days"),
    ],
)
def test_bad_selling_rules_get_a_400_and_change_nothing(shop, patch_product, staff_client, body, field):
    response = patch_product(staff_client, "MUG", body)
    assert response.status_code == 400, response.content
    assert field in response.json()["error"]["fields"]
    assert staff_client.get("/api/v1/products/MUG").json()["version"] == 1


def test_a_backorder_policy_beside_hot_mode_is_a_409(shop, patch_product, staff_client):
    assert patch_product(staff_client, "MUG", {"stock_buckets": 4}).status_code == 200
    response = patch_product(staff_client, "MUG", {"backorder_policy": "backorder", "backorder_cap": 2})
    assert response.status_code == 409 and response.json()["error"]["code"] == "selling_rules_conflict"


def test_level_settings_through_the_api(shop, patch_product, staff_client, customer_client):
    body = {"sku": "TEA", "warehouse": "MAIN", "safety_stock": 4, "reorder_point": 6, "reorder_quantity": 20}
    response = staff_client.post("/api/v1/stock/settings", body, format="json")
    assert response.status_code == 200, response.content
    level = response.json()
    assert (level["available"], level["safety_stock"], level["reorder_point"], level["reorder_quantity"]) == (
        6,
        4,
        6,
        20,
    )
    assert customer_client.get("/api/v1/products/TEA").json()["available"] == 6
    short = order(customer_client, ("TEA", 7))
    assert short.status_code == 409 and short.json()["error"]["items"] == [
        {"sku": "TEA", "requested": 7, "available": 6}
    ]
    for bad in (
        {"sku": "TEA", "warehouse": "MAIN"},
        {"sku": "TEA", "warehouse": "MAIN", "safety_stock": -1},
        {"sku": "TEA", "warehouse": "MAIN", "on_hand": 5},
        {"sku": "NOPE", "warehouse": "MAIN", "safety_stock": 1},
    ):
        refused = staff_client.post("/api/v1/stock/settings", bad, format="json")
        assert refused.status_code in (400, 404), (bad, refused.content)
        assert "error" in refused.json()
    assert customer_client.post("/api/v1/stock/settings", body, format="json").status_code == 403
    assert StockLevel.objects.get(product__sku="TEA").safety_stock == 4


def test_limits_answer_400_naming_the_line(shop, patch_product, staff_client, customer_client):
    assert patch_product(staff_client, "TEA", {"max_per_order": 2, "customer_limit": 3}).status_code == 200
    too_many = order(customer_client, ("MUG", 1), ("TEA", 3))
    assert too_many.status_code == 400
    assert too_many.json()["error"]["fields"]["lines"] == [{}, {"quantity": ["At most 2 of 'TEA' in one order."]}]
    assert order(customer_client, ("TEA", 2)).status_code == 201
    again = order(customer_client, ("TEA", 2))
    assert again.status_code == 400
    assert "1 left for you" in again.json()["error"]["fields"]["lines"][0]["quantity"][0]
    assert Order.objects.count() == 1


def test_the_shopper_sees_a_backorder_before_ordering_and_on_the_order_page(shop, client, customer, staff_user):
    stock.product_update(sku="MUG", expected_version=1, changes={"backorder_policy": "backorder", "backorder_cap": 5})
    stock.purchase_order_create(warehouse_code="MAIN", lines=[("MUG", 10)], expected_on=date(2027, 1, 15))
    client.force_login(customer)
    page = client.get("/products/MUG/").content.decode()
    assert "Backorder" in page and "beyond the 2 in stock" in page and "expected" in page and "15 Jan 2027" in page
    assert "Add to cart" in page

    response, _ = place_on_pages(client, ("MUG", 4))
    assert response.status_code == 302, response.content
    number = Order.objects.get().number
    detail = client.get(f"/orders/{number}/").content.decode()
    assert "2 backordered: ships when stock arrives" in detail and "15 Jan 2027" in detail


def test_a_preorder_is_said_on_the_product_page_and_in_the_cart(shop, client):
    until = timezone.now().date() + timedelta(days=10)
    stock.product_update(
        sku="TEA",
        expected_version=1,
        changes={"backorder_policy": "preorder", "backorder_cap": 5, "preorder_until": until},
    )
    stock.stock_adjust(sku="TEA", warehouse_code="MAIN", delta=-10)
    page = client.get("/products/TEA/").content.decode()
    assert "Preorder" in page and "Add to cart" in page and "out of stock right now" not in page
    client.post("/cart/add/", {"sku": "TEA", "quantity": 2})
    assert "Preorder" in client.get("/cart/").content.decode()


def test_staff_see_backordered_units_on_the_orders_page_in_the_admin(shop, admin, customer):
    stock.product_update(sku="MUG", expected_version=1, changes={"backorder_policy": "backorder", "backorder_cap": 5})
    placed = order_services.order_place(
        user=customer,
        lines=[order_services.OrderLineRequest("MUG", 5)],
        shipping_address=ADDRESS,
        render=render_order,
    )
    order = Order.objects.get(number=placed.body["number"])
    page = admin.get(reverse("admin:orders_order_change", args=[order.pk])).content.decode()
    assert "MAIN</a>: 5 (3 backordered)" in page

"""The orders CSV export: mounted by orders.admin on the imports page, next to the stock exports."""

import uuid
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from inventory import services as stock
from orders import services as order_services
from orders.api import render_order
from tests.factories import ProductFactory, WarehouseFactory
from tests.orders.conftest import ADDRESS
from tests.support import read_csv
from users.models import User

pytestmark = pytest.mark.django_db

EXPORT = "/admin/inventory/importjob/exports/orders.csv"


def test_the_orders_export_lists_orders_with_their_customer_and_an_inert_reference(admin_client):
    WarehouseFactory(code="MAIN")
    ProductFactory(sku="MUG", price=Decimal("12.50"))
    stock.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=5)
    buyer = User.objects.create_user(email="buyer@example.com", password="x" * 20)
    placed = order_services.order_place(
        user=buyer,
        lines=[order_services.OrderLineRequest("MUG", 2)],
        shipping_address={**ADDRESS, "name": "@Ada"},
        render=render_order,
        reference="=cmd|' /C calc'!A0",
        idempotency_key=uuid.uuid4().hex,
        fingerprint="x",
    )

    rows = read_csv(admin_client.get(EXPORT), filename_prefix="orders-")

    header, (row,) = rows[0], rows[1:]
    record = dict(zip(header, row, strict=True))
    assert record["number"] == placed.order.number
    assert (record["status"], record["customer"], record["lines"], record["total"]) == (
        "reserved",
        "buyer@example.com",
        "1",
        "25.00",
    )
    assert record["reference"] == "'=cmd|' /C calc'!A0"
    assert record["shipping_name"] == "'@Ada"


def test_the_orders_export_is_listed_on_the_imports_page_after_the_stock_exports(admin_client):
    page = admin_client.get("/admin/inventory/importjob/").content.decode()

    links = [page.index(f'href="/admin/inventory/importjob/exports/{name}.csv"') for name in ("products", "stock")]
    assert links == sorted(links) and links[-1] < page.index(f'href="{EXPORT}">Orders</a>')


def test_the_orders_export_needs_staff_with_the_view_permission_on_orders():
    clerk = User.objects.create_user(email="clerk@example.com", password="x" * 20, is_staff=True)
    clerk.user_permissions.add(Permission.objects.get(codename="view_stocklevel"))
    client = Client()
    client.force_login(clerk)
    assert client.get(EXPORT).status_code == 403
    clerk.user_permissions.add(Permission.objects.get(codename="view_order"))
    assert client.get(EXPORT).status_code == 200

    client.force_login(User.objects.create_user(email="shopper@example.com", password="x" * 20))
    response = client.get(EXPORT)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]

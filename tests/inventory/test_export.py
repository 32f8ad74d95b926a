"""CSV exports in the admin: streamed, every row there, formula-like cells made inert, staff only."""

from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from inventory import services as stock
from inventory.exports import inert
from inventory.models import Product
from tests.factories import ProductFactory, WarehouseFactory
from tests.support import read_csv
from users.models import User

pytestmark = pytest.mark.django_db

EXPORTS = "/admin/inventory/importjob/exports"
FORMULAS = ['=HYPERLINK("http://evil")', "+1+1", "-2+3", "@SUM(A1:A2)", "\tTAB", "\rCR"]


@pytest.mark.parametrize("text", FORMULAS)
def test_a_text_cell_a_spreadsheet_would_run_gets_a_leading_quote(text):
    assert inert(text) == "'" + text


@pytest.mark.parametrize(("value", "cell"), [("Blue mug", "Blue mug"), (-5, -5), (Decimal("-1.50"), Decimal("-1.50"))])
def test_plain_text_and_numbers_are_written_as_they_are(value, cell):
    assert inert(value) == cell


def test_the_products_export_lists_every_product_with_formulas_made_inert(admin_client):
    WarehouseFactory(code="MAIN")
    for n, name in enumerate(FORMULAS):
        ProductFactory(sku=f"F{n}", name=name, price=Decimal("2.50"))
    ProductFactory(sku="PLAIN", name="Blue mug", description="=1+1 in the description", price=Decimal("12.00"))
    stock.stock_receive(sku="PLAIN", warehouse_code="MAIN", quantity=7)

    rows = read_csv(admin_client.get(f"{EXPORTS}/products.csv"))

    assert rows[0] == ["sku", "name", "description", "price", "active", "low_stock_threshold", "available", "version"]
    by_sku = {row[0]: row for row in rows[1:]}
    assert len(by_sku) == len(FORMULAS) + 1
    for n, name in enumerate(FORMULAS):
        assert by_sku[f"F{n}"][1] == "'" + name
    assert by_sku["PLAIN"][1:4] == ["Blue mug", "'=1+1 in the description", "12.00"]
    assert by_sku["PLAIN"][6] == "7"


def test_the_stock_export_can_be_imported_again_and_its_cells_are_plain_numbers(admin_client):
    WarehouseFactory(code="MAIN")
    WarehouseFactory(code="EAST")
    ProductFactory(sku="MUG")
    stock.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=5)
    stock.stock_receive(sku="MUG", warehouse_code="EAST", quantity=2)

    rows = read_csv(admin_client.get(f"{EXPORTS}/stock.csv"))

    assert rows[0][:3] == ["sku", "warehouse", "on_hand"]
    assert [row[:5] for row in rows[1:]] == [["MUG", "EAST", "2", "0", "2"], ["MUG", "MAIN", "5", "0", "5"]]


def test_export_selected_admin_actions_stream_only_the_chosen_rows(admin_client):
    WarehouseFactory(code="MAIN")
    chosen = ProductFactory(sku="ONE", name="-1")
    ProductFactory(sku="TWO")
    stock.stock_receive(sku="ONE", warehouse_code="MAIN", quantity=1)
    level = chosen.stock_levels.get()

    products = admin_client.post(
        "/admin/inventory/product/", {"action": "export_products_csv", "_selected_action": [chosen.pk]}
    )
    levels = admin_client.post(
        "/admin/inventory/stocklevel/", {"action": "export_stock_csv", "_selected_action": [level.pk]}
    )

    assert [row[:2] for row in read_csv(products)[1:]] == [["ONE", "'-1"]]
    assert [row[:3] for row in read_csv(levels)[1:]] == [["ONE", "MAIN", "1"]]


def test_exports_need_staff_with_the_view_permission():
    clerk = User.objects.create_user(email="clerk@example.com", password="x" * 20, is_staff=True)
    client = Client()
    client.force_login(clerk)
    assert client.get(f"{EXPORTS}/stock.csv").status_code == 403
    clerk.user_permissions.add(Permission.objects.get(codename="view_stocklevel"))
    assert client.get(f"{EXPORTS}/stock.csv").status_code == 200
    assert client.get(f"{EXPORTS}/products.csv").status_code == 403

    customer = User.objects.create_user(email="shopper@example.com", password="x" * 20)
    client.force_login(customer)
    response = client.get(f"{EXPORTS}/products.csv")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_a_large_export_is_streamed_in_pieces(admin_client):
    Product.objects.bulk_create([Product(sku=f"P{n:05d}", name=f"Product {n}", price=1) for n in range(3000)])
    pieces = list(admin_client.get(f"{EXPORTS}/products.csv").streaming_content)
    assert len(pieces) > 3  # batches of rows, not one body
    assert sum(piece.count(b"\n") for piece in pieces) == 3001

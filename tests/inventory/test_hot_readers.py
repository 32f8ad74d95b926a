"""Every reader of availability counts what a hot level's stock buckets hold.

Bucket units are counted in the level's `reserved` (inventory.models.StockBucket), so a reader of
`on_hand - reserved` alone would under-report a product in hot mode. The bucket state here is made
the real way: hot mode switched on by the service, then an order placed through the placement
paths, whose slow path creates the buckets and spreads the level's free units over them.
"""

import uuid

import pytest
from django.db import connection
from django.db.models import Sum
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from inventory import availability, exports, selectors
from inventory import services as stock
from inventory.admin.stock_levels import StockLevelAdmin
from inventory.models import Product, StockBucket, StockLevel
from orders import services as orders
from orders.api import render_order
from orders.models import Allocation
from tests.factories import ProductFactory, UserFactory, WarehouseFactory
from tests.invariants import assert_stock_invariants
from tests.orders.conftest import ADDRESS
from tests.support import read_csv

pytestmark = pytest.mark.django_db

EXPORTS = "/admin/inventory/importjob/exports"
BUCKETS = 4
# MUG: 10 in MAIN (priority 1), 4 in EAST; an order of 3 comes from MAIN.
ON_HAND = {"MAIN": 10, "EAST": 4}
ORDERED = 3
TRUE_AVAILABLE = {"MAIN": ON_HAND["MAIN"] - ORDERED, "EAST": ON_HAND["EAST"]}
PRODUCT_AVAILABLE = sum(TRUE_AVAILABLE.values())


def place_order(sku: str, quantity: int) -> dict:
    """An order placed through the services (the path the settings choose), as the API would."""
    result = orders.order_place(
        user=UserFactory(),
        lines=[orders.OrderLineRequest(sku, quantity)],
        shipping_address=ADDRESS,
        render=render_order,
        idempotency_key=uuid.uuid4().hex,
        fingerprint=f"{sku}:{quantity}",
    )
    return result.body


def bucketed(level: StockLevel) -> int:
    return StockBucket.objects.filter(level=level).aggregate(units=Sum("units"))["units"] or 0


def allocated(level: StockLevel) -> int:
    return Allocation.objects.filter(stock_level=level).aggregate(units=Sum("quantity"))["units"] or 0


@pytest.fixture(params=["sql", "orm"])
def hot_mug(request, settings):
    """MUG in hot mode with an order of 3 placed from MAIN (by the SQL path or the ORM path), so
    that MAIN's buckets hold its 7 free units, all counted in its reserved; TEA stays cold."""
    settings.ORDER_PLACEMENT_IN_SQL = request.param == "sql"
    WarehouseFactory(code="MAIN", priority=1)
    WarehouseFactory(code="EAST", priority=2)
    ProductFactory(sku="MUG", name="Blue mug", price="12.50")
    ProductFactory(sku="TEA", name="Green tea", price="4.00")
    for code, units in ON_HAND.items():
        stock.stock_receive(sku="MUG", warehouse_code=code, quantity=units)
    stock.stock_receive(sku="TEA", warehouse_code="MAIN", quantity=6)
    stock.product_set_buckets(sku="MUG", buckets=BUCKETS)

    body = place_order("MUG", ORDERED)

    assert [a["warehouse"] for line in body["lines"] for a in line["allocations"]] == ["MAIN"]
    return Product.objects.get(sku="MUG")


def level_of(code: str, sku: str = "MUG") -> StockLevel:
    return StockLevel.objects.get(product__sku=sku, warehouse__code=code)


def test_the_order_filled_the_buckets_and_reserved_counts_them(hot_mug):
    main = level_of("MAIN")

    assert StockBucket.objects.filter(level=main).count() == BUCKETS
    assert allocated(main) == ORDERED
    assert bucketed(main) == TRUE_AVAILABLE["MAIN"]
    # The column alone says nothing is left: every free unit sits in a bucket, counted in reserved.
    assert (main.on_hand, main.reserved) == (ON_HAND["MAIN"], ON_HAND["MAIN"])
    assert main.on_hand - main.reserved < TRUE_AVAILABLE["MAIN"]
    assert_stock_invariants()


def test_product_availability_counts_the_buckets(hot_mug):
    assert selectors.product_detail(sku="MUG").available == PRODUCT_AVAILABLE
    by_sku = {p.sku: p.available for p in selectors.catalogue_list()}
    assert by_sku == {"MUG": PRODUCT_AVAILABLE, "TEA": 6}
    availability.forget()
    assert availability.availability(["MUG", "TEA"]) == {"MUG": PRODUCT_AVAILABLE, "TEA": 6}


def test_stock_levels_count_their_buckets(hot_mug):
    levels = {level.warehouse.code: level for level in selectors.stock_levels(sku="MUG")}

    assert {code: level.available for code, level in levels.items()} == TRUE_AVAILABLE
    main = levels["MAIN"]
    assert main.on_hand - main.reserved == 0 < main.available
    assert main.reserved == ON_HAND["MAIN"] > allocated(main)


def test_the_product_api_and_page_show_the_true_availability(api_client, client, hot_mug):
    detail = api_client.get("/api/v1/products/MUG")
    listed = {p["sku"]: p["available"] for p in api_client.get("/api/v1/products").json()["results"]}
    page = client.get("/products/MUG/").content.decode()
    catalogue = client.get("/").content.decode()

    assert detail.status_code == 200 and detail.json()["available"] == PRODUCT_AVAILABLE
    assert detail["ETag"] == f'"{hot_mug.version}-{PRODUCT_AVAILABLE}"'
    assert listed == {"MUG": PRODUCT_AVAILABLE, "TEA": 6}
    assert f"{PRODUCT_AVAILABLE} available" in page
    assert "Blue mug" in catalogue and "Out of stock" not in catalogue


def test_a_sold_out_cold_count_is_not_what_the_page_shows(api_client, client, hot_mug):
    """Take every unit MAIN's buckets hold: the product shows EAST's units only, and then none."""
    place_order("MUG", TRUE_AVAILABLE["MAIN"] + ON_HAND["EAST"])

    assert api_client.get("/api/v1/products/MUG").json()["available"] == 0
    assert "Out of stock" in client.get("/products/MUG/").content.decode()
    assert_stock_invariants()


def test_the_stock_api_shows_each_level_with_its_buckets(staff_client, hot_mug):
    response = staff_client.get("/api/v1/stock", {"sku": "MUG"})

    assert response.status_code == 200
    rows = {row["warehouse"]: row for row in response.json()["results"]}
    assert {code: row["available"] for code, row in rows.items()} == TRUE_AVAILABLE
    main = rows["MAIN"]
    assert (main["on_hand"], main["reserved"]) == (ON_HAND["MAIN"], ON_HAND["MAIN"])
    assert main["reserved"] > main["on_hand"] - main["available"]  # reserved counts the buckets


def test_stock_api_writes_answer_with_the_true_availability(staff_client, hot_mug):
    received = staff_client.post(
        "/api/v1/stock/adjustments",
        {"sku": "MUG", "warehouse": "MAIN", "delta": 5, "reason": "found"},
        format="json",
    )

    assert received.status_code == 201
    assert received.json()["available"] == TRUE_AVAILABLE["MAIN"] + 5
    # A count takes the buckets' units back first (the lead's core), so its answer is exact too.
    level = level_of("MAIN")
    counted = staff_client.post(
        "/api/v1/stock/counts",
        {"sku": "MUG", "warehouse": "MAIN", "on_hand": 20, "expected_version": level.version},
        format="json",
    )
    assert counted.status_code == 201
    assert counted.json()["available"] == 20 - ORDERED
    assert_stock_invariants()


def test_the_admin_lists_show_the_true_availability(admin_client, hot_mug):
    levels = admin_client.get(reverse("admin:inventory_stocklevel_changelist"), {"q": "MUG"})
    products = admin_client.get(reverse("admin:inventory_product_changelist"))
    product_page = admin_client.get(reverse("admin:inventory_product_change", args=[hot_mug.pk]))
    level_page = admin_client.get(reverse("admin:inventory_stocklevel_change", args=[level_of("MAIN").pk]))

    shown = {level.warehouse.code: level.available for level in levels.context["cl"].result_list}
    assert shown == TRUE_AVAILABLE
    assert f'<td class="field-available">{TRUE_AVAILABLE["MAIN"]}</td>' in levels.content.decode()
    assert f'<td class="field-in_buckets">{TRUE_AVAILABLE["MAIN"]}</td>' in levels.content.decode()
    assert f'<td class="field-available">{PRODUCT_AVAILABLE}</td>' in products.content.decode()
    inline = product_page.context["inline_admin_formsets"][0]
    assert {form.original.warehouse.code: form.original.available for form in inline} == TRUE_AVAILABLE
    assert f'<div class="readonly">{TRUE_AVAILABLE["MAIN"]}</div>' in level_page.content.decode()


def test_the_admin_sorts_levels_by_true_availability(admin_client, hot_mug):
    column = StockLevelAdmin.list_display.index("available") + 1  # after the action checkbox
    levels = admin_client.get(reverse("admin:inventory_stocklevel_changelist"), {"q": "MUG", "o": f"-{column}"})

    assert [level.available for level in levels.context["cl"].result_list] == sorted(
        TRUE_AVAILABLE.values(), reverse=True
    )


def test_an_admin_receipt_reports_the_true_availability(admin_client, hot_mug):
    main = level_of("MAIN")
    response = admin_client.post(
        reverse("admin:inventory_stocklevel_receive", args=[main.pk]), {"quantity": 5, "reference": "PO-9"}, follow=True
    )

    messages = [str(m) for m in response.context["messages"]]
    assert any(f"available {TRUE_AVAILABLE['MAIN'] + 5} " in m for m in messages), messages
    assert_stock_invariants()


def test_the_csv_exports_show_the_true_availability(admin_client, hot_mug):
    products = read_csv(admin_client.get(f"{EXPORTS}/products.csv"))
    levels = read_csv(admin_client.get(f"{EXPORTS}/stock.csv"))

    assert products[0] == exports.PRODUCT_HEADER and levels[0] == exports.STOCK_HEADER
    assert {row[0]: row[6] for row in products[1:]} == {"MUG": str(PRODUCT_AVAILABLE), "TEA": "6"}
    mug = {row[1]: row[2:5] for row in levels[1:] if row[0] == "MUG"}
    assert mug == {
        "MAIN": [str(ON_HAND["MAIN"]), str(ON_HAND["MAIN"]), str(TRUE_AVAILABLE["MAIN"])],
        "EAST": [str(ON_HAND["EAST"]), "0", str(ON_HAND["EAST"])],
    }


def test_the_admin_export_action_shows_the_true_availability(admin_client, hot_mug):
    main = level_of("MAIN")
    response = admin_client.post(
        reverse("admin:inventory_stocklevel_changelist"),
        {"action": "export_stock_csv", "_selected_action": [main.pk]},
    )

    rows = read_csv(response)
    assert [row[:5] for row in rows[1:]] == [
        ["MUG", "MAIN", str(ON_HAND["MAIN"]), str(ON_HAND["MAIN"]), str(TRUE_AVAILABLE["MAIN"])]
    ]


def test_hot_mode_off_gives_the_units_back_and_availability_does_not_move(api_client, hot_mug):
    stock.product_set_buckets(sku="MUG", buckets=0)

    main = level_of("MAIN")
    assert not StockBucket.objects.filter(level=main).exists()
    assert main.reserved == allocated(main) == ORDERED
    assert api_client.get("/api/v1/products/MUG").json()["available"] == PRODUCT_AVAILABLE
    assert_stock_invariants()


def test_availability_is_still_one_statement(hot_mug):
    availability.forget()
    with CaptureQueriesContext(connection) as queries:
        availability.availability(["MUG", "TEA", "NOPE"])
    assert len(queries) == 1

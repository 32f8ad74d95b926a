import pytest
from django.db import transaction
from django.http import QueryDict

from inventory import services
from inventory.api import catalogue_query
from inventory.models import Product, StockLevel, StockMovement
from inventory.serializers import CatalogueQuerySerializer
from tests.factories import ProductFactory, WarehouseFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def stocked():
    WarehouseFactory(code="MAIN", priority=1)
    WarehouseFactory(code="EAST", priority=2)
    ProductFactory(sku="MUG", name="Blue mug")
    services.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=7)
    services.stock_receive(sku="MUG", warehouse_code="EAST", quantity=3)


def test_product_list_shows_availability_summed_over_active_warehouses(api_client, stocked):
    services.warehouse_deactivate(code="EAST")

    response = api_client.get("/api/v1/products")

    assert response.status_code == 200
    [item] = response.json()["results"]
    assert item["sku"] == "MUG" and item["available"] == 7 and item["currency"] == "EUR"
    assert set(response.json()) == {"results", "next", "previous"}


def test_product_list_filters_and_pages(api_client, db):
    WarehouseFactory(code="MAIN")
    for n in range(5):
        ProductFactory(sku=f"TEA-{n}", name=f"Green tea {n}")
    ProductFactory(sku="COFFEE", name="Coffee")
    ProductFactory(sku="OLD", name="Old tea", active=False)

    first = api_client.get("/api/v1/products", {"search": "tea", "page_size": 3}).json()
    second = api_client.get(first["next"]).json()

    skus = [item["sku"] for item in first["results"] + second["results"]]
    assert skus == [f"TEA-{n}" for n in range(5)]
    assert second["next"] is None


def test_inactive_products_are_hidden_from_shoppers_but_not_staff(api_client, staff_client, db):
    ProductFactory(sku="OLD", active=False)

    assert api_client.get("/api/v1/products", {"active": "false"}).json()["results"] == []
    assert api_client.get("/api/v1/products/OLD").status_code == 404
    assert [p["sku"] for p in staff_client.get("/api/v1/products", {"active": "false"}).json()["results"]] == ["OLD"]
    assert staff_client.get("/api/v1/products/OLD").status_code == 200


def test_product_list_has_no_n_plus_one(api_client, db, django_assert_max_num_queries):
    warehouse = WarehouseFactory(code="MAIN")
    for product in ProductFactory.create_batch(40):
        StockLevel.objects.create(product=product, warehouse=warehouse, on_hand=3)

    with django_assert_max_num_queries(2):
        response = api_client.get("/api/v1/products", {"page_size": 40})

    assert len(response.json()["results"]) == 40


def test_updated_since_returns_only_newer_products(api_client, db):
    ProductFactory(sku="A")
    marker = Product.objects.get(sku="A").updated_at
    services.product_create(sku="B", name="B", price="1.00")

    response = api_client.get("/api/v1/products", {"updated_since": marker.isoformat()})

    assert [p["sku"] for p in response.json()["results"]] == ["A", "B"]
    later = api_client.get("/api/v1/products", {"updated_since": Product.objects.get(sku="B").updated_at.isoformat()})
    assert [p["sku"] for p in later.json()["results"]] == ["B"]


@pytest.mark.parametrize(
    "params", [{"updated_since": "yesterday"}, {"active": "maybe"}, {"search": "x" * 101}, {"page_size": "lots"}]
)
def test_bad_list_parameters_are_400(api_client, db, params):
    response = api_client.get("/api/v1/products", params)

    assert response.status_code in (400, 200)
    if "page_size" not in params:
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid"


@pytest.mark.parametrize(
    "query", ["", "page_size=25", "cursor=abc&page_size=2", "search=mug", "active=all&page_size=5", "search="]
)
def test_the_catalogue_query_without_the_serializer_is_what_the_serializer_gives(query):
    params = QueryDict(query)
    serializer = CatalogueQuerySerializer(data=params)
    assert serializer.is_valid()

    assert catalogue_query(params) == serializer.validated_data


def test_product_detail_etag_and_304(api_client, stocked):
    response = api_client.get("/api/v1/products/MUG")
    assert response.status_code == 200
    assert response.json()["available"] == 10
    assert response["ETag"] == '"1-10"'

    not_modified = api_client.get("/api/v1/products/MUG", HTTP_IF_NONE_MATCH='W/"1-10"')
    assert not_modified.status_code == 304
    assert not_modified["ETag"] == '"1-10"'

    with transaction.atomic():
        services.reserve_stock(lines=[(Product.objects.get(sku="MUG"), 4)], reference="ORD-1")
    # Availability changed without the version: a copy of the old representation is stale.
    again = api_client.get("/api/v1/products/MUG", HTTP_IF_NONE_MATCH='"1-10"')
    assert again.status_code == 200
    assert again["ETag"] == '"1-6"' and again.json()["available"] == 6


def test_if_match_takes_the_version_of_a_detail_etag(staff_client, stocked):
    tag = staff_client.get("/api/v1/products/MUG")["ETag"]
    with transaction.atomic():
        services.reserve_stock(lines=[(Product.objects.get(sku="MUG"), 4)], reference="ORD-1")

    # The availability part is not a precondition of an edit: the version is.
    ok = staff_client.patch("/api/v1/products/MUG", {"name": "Red mug"}, format="json", HTTP_IF_MATCH=tag)
    assert ok.status_code == 200
    assert ok["ETag"] == '"2-6"'
    stale = staff_client.patch("/api/v1/products/MUG", {"name": "Lost"}, format="json", HTTP_IF_MATCH=tag)
    assert stale.status_code == 412


def test_patch_needs_if_match_and_refuses_a_stale_one(staff_client, stocked):
    missing = staff_client.patch("/api/v1/products/MUG", {"name": "Red mug"}, format="json")
    assert missing.status_code == 428
    assert missing.json()["error"]["code"] == "precondition_required"

    ok = staff_client.patch("/api/v1/products/MUG", {"name": "Red mug"}, format="json", HTTP_IF_MATCH='"1"')
    assert ok.status_code == 200
    assert ok["ETag"] == '"2-10"' and ok.json()["name"] == "Red mug"

    stale = staff_client.patch("/api/v1/products/MUG", {"name": "Lost"}, format="json", HTTP_IF_MATCH='"1"')
    assert stale.status_code == 412
    assert Product.objects.get(sku="MUG").name == "Red mug"


@pytest.mark.parametrize(
    "body", [{"price": "-1"}, {"sku": "NEW"}, {}, {"name": "x" * 201}, {"low_stock_threshold": 1.5}]
)
def test_patch_bad_bodies_are_400_and_change_nothing(staff_client, stocked, body):
    response = staff_client.patch("/api/v1/products/MUG", body, format="json", HTTP_IF_MATCH='"1"')

    assert response.status_code == 400
    assert Product.objects.get(sku="MUG").version == 1


def test_create_product_and_refuse_duplicates(staff_client, db):
    body = {"sku": "TEA", "name": "Tea", "price": "3.50"}

    created = staff_client.post("/api/v1/products", body, format="json")
    duplicate = staff_client.post("/api/v1/products", body, format="json")

    assert created.status_code == 201 and created.json()["price"] == "3.50"
    assert duplicate.status_code == 400 and "sku" in duplicate.json()["error"]["fields"]


def test_customers_cannot_write_the_catalogue_or_see_stock(customer_client, stocked):
    assert (
        customer_client.post("/api/v1/products", {"sku": "X", "name": "X", "price": "1"}, format="json").status_code
        == 403
    )
    assert (
        customer_client.patch("/api/v1/products/MUG", {"name": "X"}, format="json", HTTP_IF_MATCH='"1"').status_code
        == 403
    )
    assert customer_client.get("/api/v1/stock").status_code == 403
    body = {"sku": "MUG", "warehouse": "MAIN", "delta": 5, "reason": "x"}
    assert customer_client.post("/api/v1/stock/adjustments", body, format="json").status_code == 403


def test_stock_list_adjust_count_transfer(staff_client, stocked):
    listed = staff_client.get("/api/v1/stock", {"sku": "MUG", "warehouse": "MAIN"}).json()["results"]
    assert listed == [
        {
            "sku": "MUG", "warehouse": "MAIN", "on_hand": 7, "reserved": 0, "available": 7, "incoming": 0,
            "backordered": 0, "backorder_cap": 0, "safety_stock": 0, "reorder_point": None, "reorder_quantity": 0,
            "version": 2,
        }
    ]  # fmt: skip

    adjusted = staff_client.post(
        "/api/v1/stock/adjustments",
        {"sku": "MUG", "warehouse": "MAIN", "delta": -2, "reason": "broken", "expected_version": 2},
        format="json",
    )
    assert adjusted.status_code == 201 and adjusted.json()["on_hand"] == 5

    stale = staff_client.post(
        "/api/v1/stock/adjustments",
        {"sku": "MUG", "warehouse": "MAIN", "delta": -1, "reason": "x", "expected_version": 2},
        format="json",
    )
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "version_conflict"

    counted = staff_client.post(
        "/api/v1/stock/counts", {"sku": "MUG", "warehouse": "MAIN", "on_hand": 9, "expected_version": 3}, format="json"
    )
    assert counted.status_code == 201 and counted.json()["on_hand"] == 9

    moved = staff_client.post(
        "/api/v1/stock/transfers", {"sku": "MUG", "from": "MAIN", "to": "EAST", "quantity": 4}, format="json"
    )
    assert moved.status_code == 201
    assert (moved.json()["from"]["on_hand"], moved.json()["to"]["on_hand"]) == (5, 7)

    invalid = staff_client.post(
        "/api/v1/stock/adjustments", {"sku": "MUG", "warehouse": "MAIN", "delta": -50, "reason": "x"}, format="json"
    )
    assert invalid.status_code == 409 and invalid.json()["error"]["code"] == "invalid_stock"


@pytest.mark.parametrize(
    ("path", "body", "bad_field"),
    [
        ("adjustments", {"sku": "NOPE", "warehouse": "MAIN", "delta": 1, "reason": "x"}, "sku"),
        ("adjustments", {"sku": "MUG", "warehouse": "NOWHERE", "delta": 1, "reason": "x"}, "warehouse"),
        ("adjustments", {"sku": "MUG", "warehouse": "MAIN", "delta": 1.5, "reason": "x"}, "delta"),
        ("adjustments", {"sku": "MUG", "warehouse": "MAIN", "delta": 0, "reason": "x"}, "delta"),
        ("adjustments", {"sku": "MUG", "warehouse": "MAIN", "delta": "ten", "reason": "x"}, "delta"),
        ("adjustments", {"sku": "MUG", "warehouse": "MAIN", "delta": 1, "reason": "x" * 201}, "reason"),
        ("adjustments", {"sku": "M" * 65, "warehouse": "MAIN", "delta": 1, "reason": "x"}, "sku"),
        ("counts", {"sku": "MUG", "warehouse": "MAIN", "on_hand": -1, "expected_version": 2}, "on_hand"),
        ("counts", {"sku": "MUG", "warehouse": "MAIN", "on_hand": 5}, "expected_version"),
        ("transfers", {"sku": "MUG", "from": "MAIN", "to": "MAIN", "quantity": 1}, "to"),
        ("transfers", {"sku": "MUG", "from": "MAIN", "to": "EAST", "quantity": 0}, "quantity"),
        ("transfers", {"sku": "MUG", "from": "NOWHERE", "to": "EAST", "quantity": 1}, "from"),
    ],
)
def test_bad_stock_input_is_400_with_field_errors_and_writes_nothing(staff_client, stocked, path, body, bad_field):
    movements = StockMovement.objects.count()

    response = staff_client.post(f"/api/v1/stock/{path}", body, format="json")

    assert response.status_code == 400, response.content
    assert bad_field in response.json()["error"]["fields"]
    assert StockMovement.objects.count() == movements

"""The purchase order endpoints: staff record what a supplier will deliver, receive it delivery by
delivery (once per Idempotency-Key), and cancel what will not come."""

import pytest
from rest_framework.test import APIClient

from inventory import services
from inventory.models import PurchaseOrder, PurchaseOrderLine, PurchaseOrderReceipt, StockLevel, StockMovement
from tests.conftest import bearer
from tests.factories import ProductFactory, WarehouseFactory
from users.services import api_key_create

pytestmark = pytest.mark.django_db

URL = "/api/v1/purchase-orders"


@pytest.fixture
def shop():
    WarehouseFactory(code="MAIN", priority=1)
    WarehouseFactory(code="EAST", priority=2)
    ProductFactory(sku="MUG")
    ProductFactory(sku="TEA")
    services.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=4)


def _body(**changes) -> dict:
    body = {
        "warehouse": "MAIN",
        "supplier_reference": "ACME-991",
        "expected_on": "2026-12-24",
        "note": "Christmas restock",
        "lines": [{"sku": "MUG", "quantity": 10}, {"sku": "TEA", "quantity": 5}],
    }
    return {**body, **changes}


def _create(client: APIClient, **changes) -> dict:
    response = client.post(URL, _body(**changes), format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def _receive(client: APIClient, order_id: int, key: str | None, lines: list[dict], **extra):
    headers = {} if key is None else {"HTTP_IDEMPOTENCY_KEY": key}
    return client.post(f"{URL}/{order_id}/receipts", {"lines": lines, **extra}, format="json", **headers)


def _on_hand(sku: str, warehouse: str = "MAIN") -> int:
    level = StockLevel.objects.filter(product__sku=sku, warehouse__code=warehouse).first()
    return 0 if level is None else level.on_hand


def _envelope(response, status_code: int, code: str) -> dict:
    assert response.status_code == status_code, response.content
    error = response.json()["error"]
    assert error["code"] == code and error["detail"]
    return error


def test_a_created_purchase_order_reads_back_the_same(staff_client, shop):
    response = staff_client.post(URL, _body(), format="json")

    assert response.status_code == 201
    created = response.json()
    assert response["Location"].endswith(f"{URL}/{created['id']}")
    assert staff_client.get(f"{URL}/{created['id']}").json() == created
    assert {k: v for k, v in created.items() if k not in ("id", "created_at", "updated_at")} == {
        "reference": f"PO-{created['id']}",
        "supplier_reference": "ACME-991",
        "warehouse": "MAIN",
        "expected_on": "2026-12-24",
        "status": "open",
        "note": "Christmas restock",
        "version": 1,
        "lines": [
            {"sku": "MUG", "ordered": 10, "received": 0, "outstanding": 10},
            {"sku": "TEA", "ordered": 5, "received": 0, "outstanding": 5},
        ],
    }
    order = PurchaseOrder.objects.get(pk=created["id"])
    assert order.created_by.email == "staff@example.com"
    assert _on_hand("MUG") == 4  # nothing moves until it is received


def test_optional_fields_may_be_left_out_or_null(staff_client, shop):
    created = _create(staff_client, expected_on=None, supplier_reference="", note="")
    minimal = staff_client.post(URL, {"warehouse": "EAST", "lines": [{"sku": "TEA", "quantity": 1}]}, format="json")

    assert created["expected_on"] is None
    assert minimal.status_code == 201
    assert minimal.json()["expected_on"] is None and minimal.json()["supplier_reference"] == ""


def test_the_list_is_newest_first_and_filters_by_status_and_warehouse(staff_client, shop):
    first = _create(staff_client)
    second = _create(staff_client, warehouse="EAST")
    third = _create(staff_client)
    staff_client.post(f"{URL}/{third['id']}/cancel")

    def ids(**query) -> list[int]:
        response = staff_client.get(URL, query)
        assert response.status_code == 200
        assert set(response.json()) == {"results", "next", "previous"}
        return [item["id"] for item in response.json()["results"]]

    assert ids() == [third["id"], second["id"], first["id"]]
    assert ids(status="open") == [second["id"], first["id"]]
    assert ids(status="cancelled") == [third["id"]]
    assert ids(status="received") == []
    assert ids(warehouse="EAST") == [second["id"]]
    assert ids(warehouse="MAIN", status="open") == [first["id"]]
    assert ids(warehouse="NOWHERE") == []


def test_the_list_pages_with_a_cursor(staff_client, shop):
    made = [_create(staff_client)["id"] for _ in range(3)]

    page = staff_client.get(URL, {"page_size": 2}).json()
    rest = staff_client.get(page["next"]).json()

    assert [item["id"] for item in page["results"] + rest["results"]] == made[::-1]
    assert rest["next"] is None
    assert page["results"][0]["lines"][0] == {"sku": "MUG", "ordered": 10, "received": 0, "outstanding": 10}


def test_the_list_has_no_n_plus_one(staff_client, shop, django_assert_max_num_queries):
    for _ in range(5):
        _create(staff_client)

    # The key's lookup, one query for the page and one for all its lines (with their products).
    with django_assert_max_num_queries(3):
        response = staff_client.get(URL, {"page_size": 5})

    assert len(response.json()["results"]) == 5


def test_an_unknown_status_is_a_400(staff_client, shop):
    error = _envelope(staff_client.get(URL, {"status": "lost"}), 400, "invalid")
    assert "status" in error["fields"]


def test_only_staff_with_the_staff_scope_may_use_purchase_orders(api_client, customer_client, staff_user, shop):
    order = PurchaseOrder.objects.create(warehouse_id=StockLevel.objects.get().warehouse_id)
    _, key = api_key_create(user=staff_user, scopes=["read", "write"])
    staff_without_scope = bearer(APIClient(), key)

    for client in (customer_client, staff_without_scope):
        assert client.get(URL).status_code == 403
        assert client.post(URL, _body(), format="json").status_code == 403
        assert client.get(f"{URL}/{order.pk}").status_code == 403
        assert _receive(client, order.pk, "d-1", [{"sku": "MUG", "quantity": 1}]).status_code == 403
        _envelope(client.post(f"{URL}/{order.pk}/cancel"), 403, "permission_denied")
    assert api_client.get(URL).status_code in (401, 403)
    assert PurchaseOrder.objects.count() == 1 and PurchaseOrder.objects.get().status == "open"


def test_receiving_in_two_deliveries_fills_the_order_and_the_levels(staff_client, shop):
    order = _create(staff_client)

    first = _receive(staff_client, order["id"], "delivery-1", [{"sku": "MUG", "quantity": 6}])

    assert first.status_code == 201
    assert first.json()["status"] == "open" and first.json()["version"] == 2
    assert first.json()["lines"] == [
        {"sku": "MUG", "ordered": 10, "received": 6, "outstanding": 4},
        {"sku": "TEA", "ordered": 5, "received": 0, "outstanding": 5},
    ]
    assert _on_hand("MUG") == 10

    rest = _receive(
        staff_client, order["id"], "delivery-2", [{"sku": "TEA", "quantity": 5}, {"sku": "MUG", "quantity": 4}]
    )

    assert rest.status_code == 201
    assert rest.json()["status"] == "received" and rest.json()["version"] == 3
    assert [line["outstanding"] for line in rest.json()["lines"]] == [0, 0]
    assert (_on_hand("MUG"), _on_hand("TEA")) == (14, 5)  # TEA's level at MAIN made on the way
    ledger = StockMovement.objects.filter(reference=f"PO-{order['id']}").order_by("id")
    assert [(m.level.product.sku, m.delta_on_hand, m.reason) for m in ledger] == [
        ("MUG", 6, "receipt"),
        *sorted([("MUG", 4, "receipt"), ("TEA", 5, "receipt")], key=lambda row: _level_id(row[0])),
    ]
    assert all(m.actor.email == "staff@example.com" and m.level.warehouse.code == "MAIN" for m in ledger)
    assert staff_client.get(f"{URL}/{order['id']}").json() == rest.json()


def _level_id(sku: str) -> int:
    return StockLevel.objects.get(product__sku=sku, warehouse__code="MAIN").pk


def test_the_same_delivery_key_twice_receives_once(staff_client, shop):
    order = _create(staff_client)
    lines = [{"sku": "MUG", "quantity": 3}]

    first = _receive(staff_client, order["id"], "delivery-1", lines)
    again = _receive(staff_client, order["id"], "delivery-1", lines)

    assert first.status_code == 201 and "Idempotent-Replayed" not in first
    assert again.status_code == 200 and again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert _on_hand("MUG") == 7
    assert StockMovement.objects.filter(reference=f"PO-{order['id']}").count() == 1
    assert PurchaseOrderReceipt.objects.get().units == 3


def test_a_replay_still_answers_once_the_order_is_received(staff_client, shop):
    order = _create(staff_client, lines=[{"sku": "MUG", "quantity": 2}])
    lines = [{"sku": "MUG", "quantity": 2}]
    assert _receive(staff_client, order["id"], "all-of-it", lines).status_code == 201

    again = _receive(staff_client, order["id"], "all-of-it", lines)

    assert again.status_code == 200 and again.json()["status"] == "received"
    assert _on_hand("MUG") == 6


def test_the_same_delivery_key_with_other_lines_is_a_422(staff_client, shop):
    order = _create(staff_client)
    _receive(staff_client, order["id"], "delivery-1", [{"sku": "MUG", "quantity": 3}])

    reused = _receive(staff_client, order["id"], "delivery-1", [{"sku": "MUG", "quantity": 4}])

    _envelope(reused, 422, "idempotency_key_reused")
    assert _on_hand("MUG") == 7
    assert PurchaseOrderLine.objects.get(product__sku="MUG").received == 3


def test_over_receipt_is_refused_unless_allowed(staff_client, shop):
    order = _create(staff_client)
    too_many = [{"sku": "MUG", "quantity": 11}]

    refused = _receive(staff_client, order["id"], "big", too_many)

    error = _envelope(refused, 400, "invalid")
    assert "lines" in error["fields"]
    assert _on_hand("MUG") == 4 and not PurchaseOrderReceipt.objects.exists()

    allowed = _receive(staff_client, order["id"], "big-ok", too_many, allow_over_receipt=True)

    assert allowed.status_code == 201
    assert allowed.json()["lines"][0] == {"sku": "MUG", "ordered": 10, "received": 11, "outstanding": 0}
    assert allowed.json()["status"] == "open"  # TEA is still expected
    assert _on_hand("MUG") == 15


def test_a_sku_not_on_the_order_is_a_400(staff_client, shop):
    ProductFactory(sku="PEN")
    order = _create(staff_client)

    error = _envelope(_receive(staff_client, order["id"], "d", [{"sku": "PEN", "quantity": 1}]), 400, "invalid")

    assert "lines" in error["fields"]
    assert _on_hand("PEN") == 0


def test_a_cancelled_order_receives_nothing(staff_client, shop):
    order = _create(staff_client)
    _receive(staff_client, order["id"], "early", [{"sku": "MUG", "quantity": 2}])

    cancelled = staff_client.post(f"{URL}/{order['id']}/cancel")
    again = staff_client.post(f"{URL}/{order['id']}/cancel")
    late = _receive(staff_client, order["id"], "late", [{"sku": "MUG", "quantity": 1}])

    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["lines"][0]["received"] == 2  # what arrived stays on hand
    assert again.status_code == 200 and again.json() == cancelled.json()
    _envelope(late, 409, "purchase_order_closed")
    assert _on_hand("MUG") == 6


def test_a_received_order_cannot_be_cancelled(staff_client, shop):
    order = _create(staff_client, lines=[{"sku": "MUG", "quantity": 1}])
    _receive(staff_client, order["id"], "all", [{"sku": "MUG", "quantity": 1}])

    _envelope(staff_client.post(f"{URL}/{order['id']}/cancel"), 409, "purchase_order_closed")


def test_a_receipt_needs_a_well_formed_idempotency_key(staff_client, shop):
    order = _create(staff_client)
    lines = [{"sku": "MUG", "quantity": 1}]

    _envelope(_receive(staff_client, order["id"], None, lines), 400, "idempotency_key_required")
    for bad in ["", "has space", "x" * 65]:
        error = _envelope(_receive(staff_client, order["id"], bad, lines), 400, "invalid")
        assert "Idempotency-Key" in error["fields"]
    assert _on_hand("MUG") == 4 and not PurchaseOrderReceipt.objects.exists()
    assert _receive(staff_client, order["id"], "x" * 64, lines).status_code == 201


BAD_CREATE_BODIES = [
    _body(warehouse="NOWHERE"),
    _body(warehouse="lower case"),
    _body(lines=[]),
    _body(lines="MUG"),
    _body(lines={"sku": "MUG", "quantity": 1}),
    _body(lines=[{"sku": "MUG", "quantity": 0}]),
    _body(lines=[{"sku": "MUG", "quantity": 1_000_000_001}]),
    _body(lines=[{"sku": "MUG", "quantity": "many"}]),
    _body(lines=[{"sku": "MUG", "quantity": 1.5}]),
    _body(lines=[{"sku": "MUG", "quantity": True}]),
    _body(lines=[{"sku": "NOPE", "quantity": 1}]),
    _body(lines=[{"sku": "bad sku!", "quantity": 1}]),
    _body(lines=[{"sku": "M" * 65, "quantity": 1}]),
    _body(lines=[{"sku": "MUG", "quantity": 1}, {"sku": "MUG", "quantity": 2}]),
    _body(lines=[["MUG", 1]]),
    _body(lines=[{"sku": "MUG", "quantity": 1}] * 501),
    _body(expected_on="next week"),
    _body(expected_on=20261224),
    _body(supplier_reference="x" * 65),
    _body(supplier_reference="nul\x00byte"),
    _body(note="n" * 201),
    _body(note={"a": 1}),
    {"lines": [{"sku": "MUG", "quantity": 1}]},
    [],
    "text",
]


@pytest.mark.parametrize("body", BAD_CREATE_BODIES)
def test_a_bad_purchase_order_is_a_400_and_writes_nothing(staff_client, shop, body):
    error = _envelope(staff_client.post(URL, body, format="json"), 400, "invalid")

    assert len(str(error)) < 5_000  # bounded, whatever the input
    assert not PurchaseOrder.objects.exists() and not PurchaseOrderLine.objects.exists()


def test_a_huge_list_is_refused_with_one_message(staff_client, shop):
    body = _body(lines=[{}] * 200_000)  # under the body limit, each line bad

    error = _envelope(staff_client.post(URL, body, format="json"), 400, "invalid")

    assert error["fields"]["lines"] == ["A purchase order or delivery has at most 500 lines."]


@pytest.mark.parametrize(
    ("content", "content_type", "code"),
    [
        (b"{not json", "application/json", "parse_error"),
        (b"\xff\xfe", "application/json", "parse_error"),
        (b'{"warehouse": "MAIN", "lines": [{"sku": "MUG", "quantity": 1e400}]}', "application/json", "invalid"),
        (b'{"lines": [{"sku": "\\ud800", "quantity": 1}], "warehouse": "MAIN"}', "application/json", "invalid"),
        (b"warehouse=MAIN", "text/plain", "unsupported_media_type"),
    ],
)
def test_a_body_that_is_not_json_is_refused_with_the_envelope(staff_client, shop, content, content_type, code):
    response = staff_client.generic("POST", URL, content, content_type=content_type)

    assert 400 <= response.status_code < 500
    assert response.json()["error"]["code"] == code
    assert not PurchaseOrder.objects.exists()


BAD_RECEIPT_BODIES = [
    {"lines": []},
    {"lines": None},
    {"lines": [{"sku": "MUG"}]},
    {"lines": [{"sku": "MUG", "quantity": -3}]},
    {"lines": [{"sku": "MUG", "quantity": 1}, {"sku": "MUG", "quantity": 1}]},
    {"lines": [{"sku": "MUG", "quantity": 1}], "allow_over_receipt": "perhaps"},
    {"lines": [{"sku": "MUG", "quantity": 1}] * 501},
    {},
    [],
]


@pytest.mark.parametrize("body", BAD_RECEIPT_BODIES)
def test_a_bad_delivery_is_a_400_and_receives_nothing(staff_client, shop, body):
    order = _create(staff_client)

    response = staff_client.post(f"{URL}/{order['id']}/receipts", body, format="json", HTTP_IDEMPOTENCY_KEY="d-1")

    _envelope(response, 400, "invalid")
    assert _on_hand("MUG") == 4 and _on_hand("TEA") == 0
    assert not PurchaseOrderReceipt.objects.exists()
    assert not StockMovement.objects.filter(reference=f"PO-{order['id']}").exists()
    assert PurchaseOrder.objects.get().version == 1


@pytest.mark.parametrize("order_id", ["0", "999999", "9" * 30])
def test_an_unknown_purchase_order_is_a_404(staff_client, shop, order_id):
    lines = [{"sku": "MUG", "quantity": 1}]

    _envelope(staff_client.get(f"{URL}/{order_id}"), 404, "not_found")
    _envelope(_receive(staff_client, order_id, "d-1", lines), 404, "not_found")
    _envelope(staff_client.post(f"{URL}/{order_id}/cancel"), 404, "not_found")
    assert _on_hand("MUG") == 4


def test_a_path_that_is_no_id_is_a_404(staff_client, shop):
    _envelope(staff_client.get(f"{URL}/PO-1"), 404, "not_found")
    _envelope(staff_client.post(f"{URL}/-1/cancel"), 404, "not_found")

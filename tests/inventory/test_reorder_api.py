"""The reorder job's drafts over the API: listed with `?status=draft`, edited with PATCH, confirmed
(`POST .../confirm`: then incoming) or discarded (`POST .../cancel`)."""

import pytest
from rest_framework.test import APIClient

from inventory import reorder, services
from inventory.models import PurchaseOrder, StockLevel
from tests.conftest import bearer
from tests.factories import ProductFactory, WarehouseFactory
from users.services import api_key_create

pytestmark = pytest.mark.django_db

URL = "/api/v1/purchase-orders"


@pytest.fixture
def draft() -> PurchaseOrder:
    """The reorder job's draft for MAIN: 8 MUG (2 on hand, point 10)."""
    WarehouseFactory(code="MAIN")
    ProductFactory(sku="MUG")
    ProductFactory(sku="TEA")
    services.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=2)
    StockLevel.objects.filter(product__sku="MUG").update(reorder_point=10)  # fixture setup: not this feature's
    (draft,) = reorder.reorder_proposals_draft()
    return draft


def _envelope(response, status_code: int, code: str) -> dict:
    assert response.status_code == status_code, response.content
    error = response.json()["error"]
    assert error["code"] == code and error["detail"]
    return error


def _stock(client: APIClient) -> tuple[int, int]:
    (row,) = client.get("/api/v1/stock", {"sku": "MUG", "warehouse": "MAIN"}).json()["results"]
    return row["on_hand"], row["incoming"]


def test_drafts_are_listed_with_their_status(staff_client, draft):
    opened = services.purchase_order_create(warehouse_code="MAIN", lines=[("TEA", 1)])

    drafts = staff_client.get(URL, {"status": "draft"}).json()["results"]
    everything = staff_client.get(URL).json()["results"]

    assert [(d["id"], d["status"], d["note"]) for d in drafts] == [(draft.pk, "draft", "Proposed by the reorder job")]
    assert drafts[0]["lines"] == [{"sku": "MUG", "ordered": 8, "received": 0, "outstanding": 8}]
    assert [d["id"] for d in everything] == [opened.pk, draft.pk]


def test_confirming_a_draft_opens_it_and_its_units_show_as_incoming(staff_client, draft):
    assert _stock(staff_client) == (2, 0)

    response = staff_client.post(f"{URL}/{draft.pk}/confirm", {"expected_version": 1}, format="json")

    assert response.status_code == 200, response.content
    assert (response.json()["status"], response.json()["version"]) == ("open", 2)
    assert _stock(staff_client) == (2, 8)


def test_confirming_twice_is_a_409_and_a_stale_version_a_conflict(staff_client, draft):
    _envelope(
        staff_client.post(f"{URL}/{draft.pk}/confirm", {"expected_version": 7}, format="json"), 409, "version_conflict"
    )
    assert staff_client.post(f"{URL}/{draft.pk}/confirm").status_code == 200

    _envelope(staff_client.post(f"{URL}/{draft.pk}/confirm"), 409, "purchase_order_not_draft")
    _envelope(staff_client.post(f"{URL}/{draft.pk + 1000}/confirm"), 404, "not_found")
    _envelope(staff_client.post(f"{URL}/{draft.pk}/confirm", {"expected_version": 0}, format="json"), 400, "invalid")


def test_a_draft_cannot_be_received_and_discarding_it_cancels_it(staff_client, draft):
    receipt = staff_client.post(
        f"{URL}/{draft.pk}/receipts",
        {"lines": [{"sku": "MUG", "quantity": 8}]},
        format="json",
        HTTP_IDEMPOTENCY_KEY="d1",
    )
    _envelope(receipt, 409, "purchase_order_closed")

    response = staff_client.post(f"{URL}/{draft.pk}/cancel")

    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert _stock(staff_client) == (2, 0)
    _envelope(staff_client.post(f"{URL}/{draft.pk}/confirm"), 409, "purchase_order_not_draft")


def test_staff_edit_a_drafts_lines_with_patch(staff_client, draft):
    response = staff_client.patch(
        f"{URL}/{draft.pk}",
        {"lines": [{"sku": "MUG", "quantity": 12}, {"sku": "TEA", "quantity": 3}], "expected_version": 1},
        format="json",
    )

    assert response.status_code == 200, response.content
    assert response.json()["version"] == 2
    assert [(line["sku"], line["ordered"]) for line in response.json()["lines"]] == [("MUG", 12), ("TEA", 3)]
    response = staff_client.patch(f"{URL}/{draft.pk}", {"lines": [{"sku": "TEA", "quantity": 0}]}, format="json")
    assert [(line["sku"], line["ordered"]) for line in response.json()["lines"]] == [("MUG", 12)]


@pytest.mark.parametrize(
    "lines",
    [
        [],
        [{"sku": "MUG", "quantity": -1}],
        [{"sku": "MUG"}],
        [{"sku": "NOPE", "quantity": 1}],
        [{"sku": "MUG", "quantity": 0}],  # no line left: cancel the draft instead
        [{"sku": "MUG", "quantity": 1}, {"sku": "MUG", "quantity": 2}],
    ],
)
def test_a_bad_patch_is_a_400_envelope_and_changes_nothing(staff_client, draft, lines):
    error = _envelope(staff_client.patch(f"{URL}/{draft.pk}", {"lines": lines}, format="json"), 400, "invalid")

    assert "lines" in error["fields"]
    assert [(line.product.sku, line.ordered) for line in draft.lines.all()] == [("MUG", 8)]


def test_an_open_order_cannot_be_patched(staff_client, draft):
    staff_client.post(f"{URL}/{draft.pk}/confirm")

    response = staff_client.patch(f"{URL}/{draft.pk}", {"lines": [{"sku": "MUG", "quantity": 1}]}, format="json")

    _envelope(response, 409, "purchase_order_not_draft")


def test_only_staff_with_the_staff_scope_may_confirm_or_edit(api_client, customer_client, staff_user, draft):
    _, key = api_key_create(user=staff_user, scopes=["read", "write"])
    for client in (customer_client, bearer(APIClient(), key)):
        _envelope(client.post(f"{URL}/{draft.pk}/confirm"), 403, "permission_denied")
        patch = client.patch(f"{URL}/{draft.pk}", {"lines": [{"sku": "MUG", "quantity": 1}]}, format="json")
        assert patch.status_code == 403
    assert api_client.post(f"{URL}/{draft.pk}/confirm").status_code in (401, 403)
    draft.refresh_from_db()
    assert (draft.status, draft.version) == ("draft", 1)

"""POST /api/v1/stock/levels/bulk: absolute on_hand for many levels, compare-and-set per row,
idempotent per key, all_or_nothing or reject_failed_rows (inventory.bulk, inventory.api_bulk)."""

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from inventory import bulk
from inventory import services as stock
from inventory.api_bulk import BulkSetSerializer, _well_formed_bulk_request
from inventory.models import BulkStockRequest, StockBucket, StockLevel, StockMovement
from inventory.tasks import prune_import_files
from orders import services as orders
from orders.api import render_order
from tests.factories import ProductFactory, UserFactory, WarehouseFactory
from tests.invariants import assert_stock_invariants
from tests.orders.conftest import ADDRESS

pytestmark = pytest.mark.django_db

URL = "/api/v1/stock/levels/bulk"


@pytest.fixture
def stocked(db):
    """MUG: 7 in MAIN, 3 in EAST. TEA: known, no level yet."""
    WarehouseFactory(code="MAIN", priority=1)
    WarehouseFactory(code="EAST", priority=2)
    ProductFactory(sku="MUG")
    ProductFactory(sku="TEA")
    stock.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=7)
    stock.stock_receive(sku="MUG", warehouse_code="EAST", quantity=3)


def post(client, body, key=None):
    return client.post(URL, body, format="json", HTTP_IDEMPOTENCY_KEY=key or uuid.uuid4().hex)


def level(sku="MUG", code="MAIN") -> StockLevel:
    return StockLevel.objects.get(product__sku=sku, warehouse__code=code)


def counts() -> list[tuple]:
    return list(
        StockMovement.objects.filter(reason__in=["count", "adjustment"])
        .order_by("id")
        .values_list("level__product__sku", "level__warehouse__code", "delta_on_hand", "reason", "reference")
    )


def place(user, lines):
    return orders.order_place(
        user=user,
        lines=[orders.OrderLineRequest(sku, quantity) for sku, quantity in lines],
        shipping_address=ADDRESS,
        render=render_order,
        idempotency_key=uuid.uuid4().hex,
        fingerprint=str(lines),
    )


# --- setting stock -------------------------------------------------------------------------------


def test_sets_each_level_and_writes_one_ledger_row_per_change_with_the_reference(staff_client, stocked):
    before = level().version
    response = post(
        staff_client,
        {
            "rows": [
                {"sku": "MUG", "warehouse": "MAIN", "on_hand": 10, "expected_on_hand": 7},
                {"sku": "MUG", "warehouse": "EAST", "on_hand": 3},
                {"sku": "TEA", "warehouse": "MAIN", "on_hand": 5},
            ],
            "reference": "CC-42",
        },
    )

    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["updated"], body["unchanged"], body["refused"]) == (2, 1, 0)
    assert [(r["index"], r["status"], r["on_hand"], r["previous_on_hand"]) for r in body["results"]] == [
        (0, "updated", 10, 7),
        (1, "unchanged", 3, 3),
        (2, "updated", 5, 0),
    ]
    assert level().on_hand == 10 and level().version == before + 1 == body["results"][0]["version"]
    assert level("MUG", "EAST").version == body["results"][1]["version"]  # unchanged: no version bump
    assert level("TEA").on_hand == 5
    assert counts() == [("MUG", "MAIN", 3, "count", "CC-42"), ("TEA", "MAIN", 5, "count", "CC-42")]
    assert_stock_invariants()


def test_reason_adjustment_is_written_on_the_ledger_rows(staff_client, stocked):
    response = post(staff_client, {"rows": [{"sku": "MUG", "warehouse": "MAIN", "on_hand": 2}], "reason": "adjustment"})

    assert response.status_code == 200
    assert counts() == [("MUG", "MAIN", -5, "adjustment", "")]


def test_a_batch_that_changes_nothing_writes_nothing(staff_client, stocked):
    rows = [
        {"sku": "MUG", "warehouse": "MAIN", "on_hand": 7, "expected_on_hand": 7},
        {"sku": "TEA", "warehouse": "MAIN", "on_hand": 0},  # no level: 0 units already
    ]
    response = post(staff_client, {"rows": rows})

    assert response.status_code == 200 and response.json()["unchanged"] == 2
    assert response.json()["results"][1]["version"] is None
    assert counts() == [] and level().version == 2
    assert not StockLevel.objects.filter(product__sku="TEA").exists()


# --- all_or_nothing ------------------------------------------------------------------------------


def test_all_or_nothing_refuses_the_whole_batch_for_one_stale_row_and_writes_nothing(staff_client, stocked):
    versions = dict(StockLevel.objects.values_list("pk", "version"))
    response = post(
        staff_client,
        {
            "rows": [
                {"sku": "MUG", "warehouse": "MAIN", "on_hand": 10},
                {"sku": "TEA", "warehouse": "EAST", "on_hand": 4},  # would create a level
                {"sku": "MUG", "warehouse": "EAST", "on_hand": 1, "expected_on_hand": 2},
            ]
        },
    )

    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "rows_refused"
    assert error["rows"] == [
        {
            "index": 2,
            "sku": "MUG",
            "warehouse": "EAST",
            "code": "stale_quantity",
            "detail": error["rows"][0]["detail"],
            "current_on_hand": 3,
        }
    ]
    assert dict(StockLevel.objects.values_list("pk", "version")) == versions  # no level created or changed
    assert counts() == []
    assert_stock_invariants()


def test_all_or_nothing_lists_every_refused_row_by_index(staff_client, stocked):
    user = UserFactory()
    place(user, [("MUG", 5)])  # MAIN: 5 of 7 reserved

    response = post(
        staff_client,
        {
            "rows": [
                {"sku": "NOPE", "warehouse": "MAIN", "on_hand": 1},
                {"sku": "MUG", "warehouse": "WEST", "on_hand": 1},
                {"sku": "MUG", "warehouse": "MAIN", "on_hand": 4},
                {"sku": "MUG", "warehouse": "EAST", "on_hand": 9},
            ]
        },
    )

    assert response.status_code == 409
    rows = response.json()["error"]["rows"]
    assert [(r["index"], r["code"]) for r in rows] == [
        (0, "unknown_sku"),
        (1, "unknown_warehouse"),
        (2, "invalid_stock"),
    ]
    assert rows[2]["reserved"] == 5 and rows[2]["current_on_hand"] == 7
    assert level("MUG", "EAST").on_hand == 3 and counts() == []


# --- reject_failed_rows --------------------------------------------------------------------------


def test_reject_failed_rows_applies_the_good_rows_and_lists_the_refused_ones(staff_client, stocked):
    user = UserFactory()
    place(user, [("MUG", 6)])  # MAIN: 6 reserved

    response = post(
        staff_client,
        {
            "error_policy": "reject_failed_rows",
            "reference": "CC-7",
            "rows": [
                {"sku": "MUG", "warehouse": "MAIN", "on_hand": 5},  # below the 6 reserved
                {"sku": "MUG", "warehouse": "EAST", "on_hand": 8, "expected_on_hand": 3},
                {"sku": "TEA", "warehouse": "EAST", "on_hand": 2, "expected_on_hand": 1},  # stale: it is 0
                {"sku": "GHOST", "warehouse": "EAST", "on_hand": 2},
                {"sku": "TEA", "warehouse": "MAIN", "on_hand": 6},
            ],
        },
    )

    assert response.status_code == 200
    body = response.json()
    assert [(r["status"], r.get("error", {}).get("code")) for r in body["results"]] == [
        ("refused", "invalid_stock"),
        ("updated", None),
        ("refused", "stale_quantity"),
        ("refused", "unknown_sku"),
        ("updated", None),
    ]
    assert body["results"][2]["error"]["current_on_hand"] == 0
    assert body["results"][3]["on_hand"] is None
    assert (body["updated"], body["unchanged"], body["refused"]) == (2, 0, 3)
    assert level().on_hand == 7 and level("MUG", "EAST").on_hand == 8 and level("TEA").on_hand == 6
    assert not StockLevel.objects.filter(product__sku="TEA", warehouse__code="EAST").exists()  # refused: not created
    assert counts() == [("MUG", "EAST", 5, "count", "CC-7"), ("TEA", "MAIN", 6, "count", "CC-7")]
    assert_stock_invariants()


# --- what a count may and may not do -------------------------------------------------------------


def test_a_hot_level_is_counted_down_to_what_orders_hold_its_buckets_given_back(staff_client, db):
    WarehouseFactory(code="MAIN", priority=1)
    ProductFactory(sku="HOT")
    stock.stock_receive(sku="HOT", warehouse_code="MAIN", quantity=10)
    stock.product_set_buckets(sku="HOT", buckets=4)
    place(UserFactory(), [("HOT", 3)])  # fills the buckets with the 7 free units
    assert sum(StockBucket.objects.values_list("units", flat=True)) == 7

    refused = post(staff_client, {"rows": [{"sku": "HOT", "warehouse": "MAIN", "on_hand": 2}]})
    assert sum(StockBucket.objects.values_list("units", flat=True)) == 7  # the refusal undid the reclaim too
    accepted = post(staff_client, {"rows": [{"sku": "HOT", "warehouse": "MAIN", "on_hand": 3}]})

    assert refused.status_code == 409 and refused.json()["error"]["rows"][0]["reserved"] == 3
    assert accepted.status_code == 200
    hot = level("HOT")
    assert (hot.on_hand, hot.reserved) == (3, 3)
    assert sum(StockBucket.objects.values_list("units", flat=True)) == 0
    assert_stock_invariants()


def test_safety_stock_and_backorders_do_not_refuse_a_count_and_a_count_up_fills_no_backorder(staff_client, db):
    WarehouseFactory(code="MAIN", priority=1)
    ProductFactory(sku="PRE")
    stock.stock_receive(sku="PRE", warehouse_code="MAIN", quantity=4)
    product = stock.product_update(
        sku="PRE", expected_version=1, changes={"backorder_policy": "backorder", "backorder_cap": 10}
    )
    stock.stock_level_configure(sku="PRE", warehouse_code="MAIN", changes={"safety_stock": 3})
    place(UserFactory(), [("PRE", 3)])  # 1 from the shelf (4 - 3 safety), 2 backordered
    waiting = level("PRE")
    assert (waiting.reserved, waiting.backordered) == (1, 2) and product.backorder_cap == 10

    response = post(staff_client, {"rows": [{"sku": "PRE", "warehouse": "MAIN", "on_hand": 2}]})
    assert response.status_code == 200  # below the safety stock: still a valid count
    response = post(staff_client, {"rows": [{"sku": "PRE", "warehouse": "MAIN", "on_hand": 20}]})

    assert response.status_code == 200
    counted = level("PRE")
    # As a cycle count (stock_count): not an arrival; the periodic fill takes the backorders.
    assert (counted.on_hand, counted.reserved, counted.backordered) == (20, 1, 2)
    assert_stock_invariants()


# --- idempotency ---------------------------------------------------------------------------------


def test_the_same_key_and_body_replays_the_first_answer_and_changes_nothing_more(staff_client, stocked):
    body = {"rows": [{"sku": "MUG", "warehouse": "MAIN", "on_hand": 1}], "reason": "adjustment"}
    first = post(staff_client, body, key="count-1")
    stock.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=4)  # MAIN: 5 now

    again = post(staff_client, {"reason": "adjustment", "rows": body["rows"]}, key="count-1")  # other key order

    assert first.status_code == again.status_code == 200
    assert again.json() == first.json() and again["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first
    assert level().on_hand == 5 and len(counts()) == 1


def test_a_refusal_is_stored_and_replayed_too(staff_client, stocked):
    body = {"rows": [{"sku": "MUG", "warehouse": "MAIN", "on_hand": 2, "expected_on_hand": 5}]}
    first = post(staff_client, body, key="count-2")
    stock.stock_adjust(sku="MUG", warehouse_code="MAIN", delta=-2)  # now it would match

    again = post(staff_client, body, key="count-2")

    assert first.status_code == again.status_code == 409
    assert again.json() == first.json() and again["Idempotent-Replayed"] == "true"
    assert level().on_hand == 5


def test_the_same_key_with_another_body_is_422(staff_client, stocked):
    post(staff_client, {"rows": [{"sku": "MUG", "warehouse": "MAIN", "on_hand": 2}]}, key="count-3")

    response = post(staff_client, {"rows": [{"sku": "MUG", "warehouse": "MAIN", "on_hand": 3}]}, key="count-3")

    assert response.status_code == 422 and response.json()["error"]["code"] == "idempotency_key_reused"
    assert level().on_hand == 2


def test_keys_belong_to_their_user(stocked, staff_client):
    other = UserFactory(is_staff=True)
    body = {"rows": [{"sku": "MUG", "warehouse": "MAIN", "on_hand": 2}]}
    post(staff_client, body, key="shared")

    result = bulk.stock_levels_set_bulk(
        user=other, key="shared", fingerprint="another", rows=[bulk.BulkRow("MUG", "MAIN", 4)]
    )

    assert result.status == 200 and not result.replayed and level().on_hand == 4


def test_a_missing_or_malformed_key_is_400(staff_client, stocked):
    body = {"rows": [{"sku": "MUG", "warehouse": "MAIN", "on_hand": 2}]}
    missing = staff_client.post(URL, body, format="json")
    malformed = post(staff_client, body, key="has spaces")

    assert missing.status_code == 400 and missing.json()["error"]["code"] == "idempotency_key_required"
    assert malformed.status_code == 400 and "Idempotency-Key" in malformed.json()["error"]["fields"]
    assert level().on_hand == 7 and not BulkStockRequest.objects.exists()


def test_old_keys_are_pruned_by_the_inventory_housekeeping_job(staff_client, stocked, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    post(staff_client, {"rows": [{"sku": "MUG", "warehouse": "MAIN", "on_hand": 2}]}, key="old")
    post(staff_client, {"rows": [{"sku": "MUG", "warehouse": "MAIN", "on_hand": 3}]}, key="new")
    BulkStockRequest.objects.filter(key="old").update(
        created_at=timezone.now() - timedelta(hours=settings.IDEMPOTENCY_KEEP_HOURS + 1)
    )

    prune_import_files()

    assert list(BulkStockRequest.objects.values_list("key", flat=True)) == ["new"]


# --- bad input -----------------------------------------------------------------------------------


def test_more_than_1000_rows_are_refused_before_any_row_is_looked_at(staff_client, stocked):
    response = post(staff_client, {"rows": ["not a row"] * 1001})

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid" and error["fields"] == {"rows": ["At most 1000 rows per request."]}


def test_the_same_level_twice_in_one_batch_is_400_and_nothing_is_written(staff_client, stocked):
    response = post(
        staff_client,
        {
            "error_policy": "reject_failed_rows",
            "rows": [
                {"sku": "MUG", "warehouse": "MAIN", "on_hand": 1},
                {"sku": "MUG", "warehouse": "EAST", "on_hand": 1},
                {"sku": "MUG", "warehouse": "MAIN", "on_hand": 2},
            ],
        },
    )

    assert response.status_code == 400
    assert response.json()["error"]["fields"]["rows"] == ["Row 2 repeats row 0 (MUG in MAIN): one row per level."]
    assert counts() == [] and not BulkStockRequest.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        [],
        "rows",
        {},
        {"rows": []},
        {"rows": "MUG"},
        {"rows": {"sku": "MUG"}},
        {"rows": [None]},
        {"rows": [["MUG", "MAIN", 1]]},
        {"rows": [{"sku": "MUG", "warehouse": "MAIN"}]},
        {"rows": [{"sku": "MUG", "warehouse": "MAIN", "on_hand": -1}]},
        {"rows": [{"sku": "MUG", "warehouse": "MAIN", "on_hand": 10**30}]},
        {"rows": [{"sku": "MUG", "warehouse": "MAIN", "on_hand": "many"}]},
        {"rows": [{"sku": "MUG", "warehouse": "MAIN", "on_hand": True}]},
        {"rows": [{"sku": "MUG", "warehouse": "MAIN", "on_hand": 1, "expected_on_hand": [1]}]},
        {"rows": [{"sku": "MU\x00G", "warehouse": "MAIN", "on_hand": 1}]},
        {"rows": [{"sku": {"a": 1}, "warehouse": "MAIN", "on_hand": 1}]},
        {"rows": [{"sku": "MUG", "warehouse": "main", "on_hand": 1}]},
        {"rows": [{"sku": "MUG", "warehouse": "MAIN", "on_hand": 1}], "error_policy": "some"},
        {"rows": [{"sku": "MUG", "warehouse": "MAIN", "on_hand": 1}], "reason": "receipt"},
        {"rows": [{"sku": "MUG", "warehouse": "MAIN", "on_hand": 1}], "reference": "x" * 65},
    ],
)
def test_malformed_bodies_are_400_and_write_nothing(staff_client, stocked, body):
    response = post(staff_client, body)

    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "invalid"
    assert level().on_hand == 7 and counts() == [] and not BulkStockRequest.objects.exists()


def test_the_service_refuses_what_the_serializer_would(stocked):
    user = UserFactory(is_staff=True)
    for rows in ([], [bulk.BulkRow("MUG", "MAIN", -1)], [bulk.BulkRow("MUG", "MAIN", 1)] * 2, ["row"]):
        with pytest.raises(bulk.InvalidInput):
            bulk.stock_levels_set_bulk(user=user, key="k", fingerprint="f", rows=rows)
    assert not BulkStockRequest.objects.exists()


def test_only_staff_may_set_stock(customer_client, api_client, stocked):
    body = {"rows": [{"sku": "MUG", "warehouse": "MAIN", "on_hand": 2}]}

    assert post(customer_client, body).status_code == 403
    assert post(api_client, body).status_code == 401
    assert level().on_hand == 7


@pytest.mark.parametrize(
    "body",
    [
        {"rows": [{"sku": "MUG", "warehouse": "MAIN", "on_hand": 3}]},
        {
            "rows": [
                {"sku": "MUG", "warehouse": "MAIN", "on_hand": 0, "expected_on_hand": 7},
                {"sku": "TEA", "warehouse": "EAST", "on_hand": 1_000_000_000, "expected_on_hand": None},
            ],
            "error_policy": "reject_failed_rows",
            "reason": "adjustment",
            "reference": "CC-1",
        },
    ],
)
def test_the_fast_path_gives_what_the_serializer_gives(body):
    params = BulkSetSerializer(data=body)
    assert params.is_valid(), params.errors

    fast = _well_formed_bulk_request(body)

    assert fast == {**params.validated_data, "rows": [dict(row) for row in params.validated_data["rows"]]}


@pytest.mark.parametrize(
    "body",
    [
        {"rows": [{"sku": " MUG", "warehouse": "MAIN", "on_hand": 3}]},  # the serializer trims it
        {"rows": [{"sku": "MUG", "warehouse": "MAIN", "on_hand": "3"}]},  # the serializer parses it
        {"rows": [{"sku": "MUG", "warehouse": "MAIN", "on_hand": 3, "extra": 1}]},
        {"rows": [{"sku": "MUG", "warehouse": "MAIN", "on_hand": True}]},
        {"rows": [{"sku": "MUG", "warehouse": "MAIN", "on_hand": 3}], "reference": "x\x00"},
    ],
)
def test_the_fast_path_leaves_anything_unusual_to_the_serializer(body):
    assert _well_formed_bulk_request(body) is None

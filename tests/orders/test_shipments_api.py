"""Shipments, returns and shipping progress through the REST API, on real PostgreSQL."""

import json
import re
import uuid
from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from inventory import services as stock
from inventory.models import StockLevel, StockMovement
from orders.models import IdempotencyKey, Order, OrderReturn, Shipment
from tests.conftest import bearer
from tests.factories import UserFactory
from tests.invariants import assert_stock_invariants
from tests.orders.conftest import place
from users.services import api_key_create


def level(sku: str, code: str) -> tuple[int, int]:
    """(on_hand, reserved) of a SKU in a warehouse."""
    row = StockLevel.objects.filter(product__sku=sku, warehouse__code=code).first()
    return (row.on_hand, row.reserved) if row else (0, 0)


def order_status(number: str) -> str:
    return Order.objects.values_list("status", flat=True).get(number=number)


def paid(client, *lines) -> str:
    number = place(client, *lines).json()["number"]
    assert client.post(f"/api/v1/orders/{number}/pay").status_code == 200
    return number


def fulfilled(customer_client, staff_client, *lines) -> str:
    number = paid(customer_client, *lines)
    assert staff_client.post(f"/api/v1/orders/{number}/fulfil").status_code == 200
    return number


def shipment_body(warehouse: str, *lines, **extra) -> dict:
    return {"warehouse": warehouse, "lines": [{"sku": sku, "quantity": n} for sku, n in lines], **extra}


def create(client, number: str, warehouse: str, *lines, key: str | None = None, **extra):
    """POST a shipment; keyword arguments are body fields, or headers when named HTTP_*."""
    headers = {name: value for name, value in extra.items() if name.startswith("HTTP_")}
    fields = {name: value for name, value in extra.items() if name not in headers}
    return client.post(
        f"/api/v1/orders/{number}/shipments",
        shipment_body(warehouse, *lines, **fields),
        format="json",
        HTTP_IDEMPOTENCY_KEY=key or uuid.uuid4().hex,
        **headers,
    )


def ship(client, number: str, shipment_id: int, body=None, **headers):
    return client.post(f"/api/v1/orders/{number}/shipments/{shipment_id}/ship", body, format="json", **headers)


def cancel(client, number: str, shipment_id: int, **headers):
    return client.post(f"/api/v1/orders/{number}/shipments/{shipment_id}/cancel", **headers)


def return_body(reason: str, *lines) -> dict:
    return {
        "reason": reason,
        "lines": [{"sku": sku, "quantity": n, "warehouse": code, "disposition": kind} for sku, n, code, kind in lines],
    }


def give_back(client, number: str, reason: str, *lines, key: str | None = None, **headers):
    return client.post(
        f"/api/v1/orders/{number}/returns",
        return_body(reason, *lines),
        format="json",
        HTTP_IDEMPOTENCY_KEY=key or uuid.uuid4().hex,
        **headers,
    )


def order_version(client, number: str) -> str:
    return client.get(f"/api/v1/orders/{number}")["ETag"]


# --- shipments ------------------------------------------------------------------------------------


def test_a_shipment_is_created_listed_and_shipped_with_etags(customer_client, staff_client, shop):
    number = paid(customer_client, ("MUG", 3), ("TEA", 1))
    version = order_version(staff_client, number)

    created = create(staff_client, number, "MAIN", ("MUG", 2), carrier="DHL", HTTP_IF_MATCH=version)

    assert created.status_code == 201, created.content
    body = created.json()
    assert body["status"] == "pending"
    assert (body["warehouse"], body["carrier"], body["tracking_number"], body["version"]) == ("MAIN", "DHL", "", 1)
    assert body["lines"] == [{"sku": "MUG", "quantity": 2}]
    assert body["shipped_at"] is None and body["cancelled_at"] is None and body["created_at"]
    assert created["ETag"] == '"1"'
    assert created["Location"] == f"/api/v1/orders/{number}/shipments/{body['id']}"
    assert staff_client.get(created["Location"]).json() == body
    assert level("MUG", "MAIN") == (5, 3)  # promised, nothing consumed yet
    # The shipment changed what the order shows: its ETag moved on, and the old one is stale.
    assert order_version(staff_client, number) != version
    stale = create(staff_client, number, "MAIN", ("TEA", 1), HTTP_IF_MATCH=version)
    assert stale.status_code == 412
    assert Shipment.objects.count() == 1

    listed = staff_client.get(f"/api/v1/orders/{number}/shipments").json()
    assert listed == {"results": [body], "next": None, "previous": None}

    assert ship(staff_client, number, body["id"], HTTP_IF_MATCH='"2"').status_code == 412
    shipped = ship(staff_client, number, body["id"], {"tracking_number": "1Z999"}, HTTP_IF_MATCH='"1"')

    assert shipped.status_code == 200, shipped.content
    assert shipped["ETag"] == '"2"'
    after = shipped.json()
    assert (after["status"], after["tracking_number"], after["carrier"], after["version"]) == (
        "shipped",
        "1Z999",
        "DHL",
        2,
    )
    assert after["shipped_at"]
    assert ship(staff_client, number, body["id"]).json()["error"]["code"] == "invalid_transition"
    assert_stock_invariants()


def test_partial_shipments_make_the_order_partially_fulfilled_then_fulfilled(customer_client, staff_client, shop):
    number = paid(customer_client, ("MUG", 7), ("TEA", 1))  # MUG: 5 in MAIN, 2 in EAST
    assert level("MUG", "MAIN") == (5, 5) and level("MUG", "EAST") == (5, 2)

    first = create(staff_client, number, "MAIN", ("MUG", 5)).json()
    assert level("MUG", "MAIN") == (5, 5)  # pending consumes nothing
    assert ship(staff_client, number, first["id"]).status_code == 200

    assert order_status(number) == "partially_fulfilled"
    assert level("MUG", "MAIN") == (0, 0)  # on_hand and reserved drop where it shipped from only
    assert level("MUG", "EAST") == (5, 2)
    assert level("TEA", "MAIN") == (3, 1)
    ledger = StockMovement.objects.filter(reference=f"{number}/S{first['id']}")
    assert list(ledger.values_list("reason", "delta_on_hand", "delta_reserved")) == [("fulfilment", -5, -5)]

    second = create(staff_client, number, "EAST", ("MUG", 2)).json()
    third = create(staff_client, number, "MAIN", ("TEA", 1)).json()
    assert ship(staff_client, number, second["id"]).status_code == 200
    assert order_status(number) == "partially_fulfilled"
    assert ship(staff_client, number, third["id"]).status_code == 200

    assert order_status(number) == "fulfilled"
    assert level("MUG", "EAST") == (3, 0) and level("TEA", "MAIN") == (2, 0)
    # Nothing is left to ship: a new shipment is refused.
    assert create(staff_client, number, "MAIN", ("TEA", 1)).status_code == 409
    assert_stock_invariants()


def test_cancelling_a_pending_shipment_leaves_its_units_to_ship_again(customer_client, staff_client, shop):
    number = paid(customer_client, ("MUG", 3))
    pending = create(staff_client, number, "MAIN", ("MUG", 3)).json()
    assert create(staff_client, number, "MAIN", ("MUG", 1)).status_code == 409

    assert cancel(staff_client, number, pending["id"], HTTP_IF_MATCH='"7"').status_code == 412
    cancelled = cancel(staff_client, number, pending["id"], HTTP_IF_MATCH='"1"')

    assert cancelled.status_code == 200
    assert cancelled["ETag"] == '"2"'
    assert (cancelled.json()["status"], cancelled.json()["cancelled_at"] is not None) == ("cancelled", True)
    assert cancel(staff_client, number, pending["id"]).status_code == 409
    assert ship(staff_client, number, pending["id"]).json()["error"]["code"] == "invalid_transition"
    assert level("MUG", "MAIN") == (5, 3)  # still reserved for the order
    assert order_status(number) == "paid"
    assert create(staff_client, number, "MAIN", ("MUG", 3)).status_code == 201
    assert_stock_invariants()


def test_more_than_is_left_to_ship_is_refused_pending_shipments_included(customer_client, staff_client, shop):
    number = paid(customer_client, ("MUG", 4))
    assert create(staff_client, number, "MAIN", ("MUG", 3)).status_code == 201

    refused = create(staff_client, number, "MAIN", ("MUG", 2))

    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "not_shippable"
    assert refused.json()["error"]["left"] == 1
    assert create(staff_client, number, "MAIN", ("MUG", 5)).status_code == 409
    assert Shipment.objects.count() == 1
    assert create(staff_client, number, "MAIN", ("MUG", 1)).status_code == 201
    assert_stock_invariants()


def test_a_warehouse_without_the_allocation_needs_move_allocation(customer_client, staff_client, shop):
    number = paid(customer_client, ("TEA", 2))  # reserved in MAIN
    stock.stock_receive(sku="TEA", warehouse_code="EAST", quantity=4)

    refused = create(staff_client, number, "EAST", ("TEA", 2))

    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "not_shippable"
    assert "move_allocation" in refused.json()["error"]["detail"]
    assert level("TEA", "MAIN") == (3, 2) and level("TEA", "EAST") == (4, 0)

    moved = create(staff_client, number, "EAST", ("TEA", 2), move_allocation=True)

    assert moved.status_code == 201, moved.content
    assert level("TEA", "MAIN") == (3, 0) and level("TEA", "EAST") == (4, 2)
    (tea,) = staff_client.get(f"/api/v1/orders/{number}").json()["lines"]
    assert tea["allocations"] == [{"warehouse": "EAST", "quantity": 2, "backordered": 0}]
    assert ship(staff_client, number, moved.json()["id"]).status_code == 200
    assert level("TEA", "EAST") == (2, 0)
    assert order_status(number) == "fulfilled"
    assert_stock_invariants()


def test_moving_the_allocation_needs_the_units_available_there(customer_client, staff_client, shop):
    number = paid(customer_client, ("TEA", 2))  # reserved in MAIN; EAST has no TEA at all

    refused = create(staff_client, number, "EAST", ("TEA", 2), move_allocation=True)

    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "insufficient_stock"
    assert level("TEA", "MAIN") == (3, 2)
    assert not StockLevel.objects.filter(product__sku="TEA", warehouse__code="EAST").exists()
    assert not Shipment.objects.exists()
    assert_stock_invariants()


def test_cancelling_the_order_cancels_its_pending_shipments_and_releases_moved_units(
    customer_client, staff_client, shop
):
    number = paid(customer_client, ("TEA", 2))
    stock.stock_receive(sku="TEA", warehouse_code="EAST", quantity=1)
    pending = create(staff_client, number, "EAST", ("TEA", 1), move_allocation=True).json()
    assert level("TEA", "MAIN") == (3, 1) and level("TEA", "EAST") == (1, 1)

    assert customer_client.post(f"/api/v1/orders/{number}/cancel").status_code == 200

    assert staff_client.get(f"/api/v1/orders/{number}/shipments/{pending['id']}").json()["status"] == "cancelled"
    assert level("TEA", "MAIN") == (3, 0) and level("TEA", "EAST") == (1, 0)
    assert ship(staff_client, number, pending["id"]).json()["error"]["code"] == "invalid_transition"
    assert_stock_invariants()


def test_the_whole_order_fulfil_ships_pending_shipments_and_the_rest(customer_client, staff_client, shop):
    number = paid(customer_client, ("MUG", 7))
    first = create(staff_client, number, "EAST", ("MUG", 1)).json()
    create(staff_client, number, "MAIN", ("MUG", 2))
    assert cancel(staff_client, number, first["id"]).status_code == 200
    ship(staff_client, number, create(staff_client, number, "MAIN", ("MUG", 1)).json()["id"])

    assert staff_client.post(f"/api/v1/orders/{number}/fulfil").status_code == 200

    statuses = [s["status"] for s in staff_client.get(f"/api/v1/orders/{number}/shipments").json()["results"]]
    assert statuses[:3] == ["cancelled", "shipped", "shipped"]
    assert set(statuses[3:]) == {"shipped"}
    assert level("MUG", "MAIN") == (0, 0) and level("MUG", "EAST") == (3, 0)
    progress = staff_client.get(f"/api/v1/orders/{number}/shipping").json()
    assert [(line["shipped"], line["pending"], line["left"]) for line in progress] == [(7, 0, 0)]
    assert_stock_invariants()


def test_shipments_are_for_paid_orders_only(customer_client, staff_client, shop):
    number = place(customer_client, ("MUG", 1)).json()["number"]

    refused = create(staff_client, number, "MAIN", ("MUG", 1))

    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "invalid_transition"
    assert not Shipment.objects.exists()


def test_customers_read_their_own_shipments_and_cannot_write_them(customer_client, staff_client, shop):
    number = paid(customer_client, ("MUG", 2))
    shipment = create(staff_client, number, "MAIN", ("MUG", 1)).json()
    stranger = bearer(APIClient(), api_key_create(user=UserFactory())[1])

    assert create(customer_client, number, "MAIN", ("MUG", 1)).status_code == 403
    assert ship(customer_client, number, shipment["id"]).status_code == 403
    assert cancel(customer_client, number, shipment["id"]).status_code == 403
    assert give_back(customer_client, number, "x", ("MUG", 1, "MAIN", "restock")).status_code == 403
    assert customer_client.get(f"/api/v1/orders/{number}/shipments").json()["results"] == [shipment]
    assert customer_client.get(f"/api/v1/orders/{number}/shipments/{shipment['id']}").status_code == 200
    assert customer_client.get(f"/api/v1/orders/{number}/shipping").status_code == 200
    assert customer_client.get(f"/api/v1/orders/{number}/returns").json()["results"] == []
    for path in ["shipments", f"shipments/{shipment['id']}", "shipping", "returns"]:
        response = stranger.get(f"/api/v1/orders/{number}/{path}")
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"
    assert Shipment.objects.get().status == "pending"


def test_a_staff_members_key_without_the_staff_scope_cannot_ship(staff_user, customer_client, shop):
    number = paid(customer_client, ("MUG", 1))
    client = bearer(APIClient(), api_key_create(user=staff_user, scopes=["read", "write"])[1])

    assert create(client, number, "MAIN", ("MUG", 1)).status_code == 403
    assert client.get(f"/api/v1/orders/{number}/shipments").status_code == 404  # not their order
    assert not Shipment.objects.exists()


def test_a_shipment_id_that_is_not_one_of_the_orders_is_404(customer_client, staff_client, shop):
    number = paid(customer_client, ("MUG", 1))
    other = paid(customer_client, ("TEA", 1))
    theirs = create(staff_client, other, "MAIN", ("TEA", 1)).json()["id"]

    for shipment_id in [theirs, "abc", "-1", "1.5", "9" * 30, "0"]:
        for response in [
            ship(staff_client, number, shipment_id),
            cancel(staff_client, number, shipment_id),
            staff_client.get(f"/api/v1/orders/{number}/shipments/{shipment_id}"),
        ]:
            assert response.status_code == 404, (shipment_id, response.content)
            assert response.json()["error"]["code"] == "not_found"
    assert staff_client.get("/api/v1/orders/SR-NONE-0000/shipments").status_code == 404
    assert Shipment.objects.get().status == "pending"


def test_the_same_key_and_body_create_one_shipment(customer_client, staff_client, shop):
    number = paid(customer_client, ("MUG", 3))

    first = create(staff_client, number, "MAIN", ("MUG", 1), key="ship-1")
    again = staff_client.post(
        f"/api/v1/orders/{number}/shipments",
        {"lines": [{"quantity": 1, "sku": "MUG"}], "warehouse": "MAIN"},  # same JSON, other key order
        format="json",
        HTTP_IDEMPOTENCY_KEY="ship-1",
    )

    assert first.status_code == again.status_code == 201
    assert "Idempotent-Replayed" not in first
    assert again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert (again["ETag"], again["Location"]) == (first["ETag"], first["Location"])
    assert Shipment.objects.count() == 1

    other = create(staff_client, number, "MAIN", ("MUG", 2), key="ship-1")
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert Shipment.objects.count() == 1
    assert_stock_invariants()


def test_a_refused_shipment_is_replayed_to_its_key(customer_client, staff_client, shop):
    number = paid(customer_client, ("MUG", 1))
    first = create(staff_client, number, "MAIN", ("MUG", 2), key="too-many")

    again = create(staff_client, number, "MAIN", ("MUG", 2), key="too-many")

    assert first.status_code == again.status_code == 409
    assert again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert IdempotencyKey.objects.get(key="too-many").response_status == 409


@pytest.mark.parametrize(
    ("key", "code"),
    [(None, "idempotency_key_required"), ("has space", "invalid"), ("x" * 256, "invalid")],
)
def test_creating_needs_a_well_formed_idempotency_key(customer_client, staff_client, shop, key, code):
    number = paid(customer_client, ("MUG", 1))
    headers = {} if key is None else {"HTTP_IDEMPOTENCY_KEY": key}
    for path, body in [
        ("shipments", shipment_body("MAIN", ("MUG", 1))),
        ("returns", return_body("x", ("MUG", 1, "MAIN", "restock"))),
    ]:
        response = staff_client.post(f"/api/v1/orders/{number}/{path}", body, format="json", **headers)
        assert response.status_code == 400, path
        assert response.json()["error"]["code"] == code
    assert not Shipment.objects.exists() and not IdempotencyKey.objects.filter(user__is_staff=True).exists()


def test_shipping_shows_what_is_left_of_each_line_by_warehouse(customer_client, staff_client, shop):
    number = paid(customer_client, ("MUG", 7), ("TEA", 2))
    shipped = create(staff_client, number, "MAIN", ("MUG", 3)).json()
    ship(staff_client, number, shipped["id"])
    create(staff_client, number, "EAST", ("MUG", 1))

    response = staff_client.get(f"/api/v1/orders/{number}/shipping")

    assert response.status_code == 200
    assert response.json() == [
        {
            "sku": "MUG",
            "ordered": 7,
            "shipped": 3,
            "pending": 1,
            "left": 3,
            "returned": 0,
            "returnable": 3,
            "warehouses": [
                {"warehouse": "MAIN", "allocated": 5, "shipped": 3, "pending": 0, "left": 2},
                {"warehouse": "EAST", "allocated": 2, "shipped": 0, "pending": 1, "left": 1},
            ],
        },
        {
            "sku": "TEA",
            "ordered": 2,
            "shipped": 0,
            "pending": 0,
            "left": 2,
            "returned": 0,
            "returnable": 0,
            "warehouses": [{"warehouse": "MAIN", "allocated": 2, "shipped": 0, "pending": 0, "left": 2}],
        },
    ]
    assert_stock_invariants()


def test_lists_page_oldest_first(customer_client, staff_client, shop):
    number = paid(customer_client, ("MUG", 3))
    ids = [create(staff_client, number, "MAIN", ("MUG", 1)).json()["id"] for _ in range(3)]

    first = staff_client.get(f"/api/v1/orders/{number}/shipments", {"page_size": 2}).json()
    second = staff_client.get(first["next"]).json()

    assert [s["id"] for s in first["results"]] == ids[:2]
    assert [s["id"] for s in second["results"]] == ids[2:]
    assert second["next"] is None
    bad_cursor = staff_client.get(f"/api/v1/orders/{number}/shipments", {"cursor": "nope"})
    assert bad_cursor.status_code == 404


LONG_LINES = [{"sku": f"S{n}", "quantity": 1} for n in range(20_000)]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], None),
        ("MAIN", None),
        (5, None),
        (None, None),
        ({"lines": [{"sku": "MUG", "quantity": 1}]}, "warehouse"),
        (shipment_body("MAIN"), "lines"),
        ({"warehouse": "MAIN", "lines": "MUG"}, "lines"),
        ({"warehouse": "MAIN", "lines": {"sku": "MUG"}}, "lines"),
        ({"warehouse": "MAIN", "lines": ["MUG"]}, "lines"),
        (shipment_body("MAIN", ("MUG", 0)), "lines"),
        (shipment_body("MAIN", ("MUG", -1)), "lines"),
        (shipment_body("MAIN", ("MUG", 1.5)), "lines"),
        (shipment_body("MAIN", ("MUG", "many")), "lines"),
        (shipment_body("MAIN", ("MUG", 10**30)), "lines"),
        (shipment_body("MAIN", ("MUG", True)), "lines"),
        (shipment_body("MAIN", ("MUG", 1), ("MUG", 1)), "lines"),
        (shipment_body("MAIN", ("TEA", 1)), "lines"),  # not on this order
        (shipment_body("MAIN", ("NO SUCH SKU", 1)), "lines"),
        (shipment_body("NOWHERE", ("MUG", 1)), "warehouse"),
        (shipment_body("main\x00", ("MUG", 1)), "warehouse"),
        (shipment_body(["MAIN"], ("MUG", 1)), "warehouse"),
        (shipment_body("MAIN", ("MUG", 1), carrier="c" * 51), "carrier"),
        (shipment_body("MAIN", ("MUG", 1), tracking_number="t" * 101), "tracking_number"),
        (shipment_body("MAIN", ("MUG", 1), move_allocation="perhaps"), "move_allocation"),
        ({"warehouse": "MAIN", "lines": LONG_LINES}, "lines"),
    ],
)
def test_bad_shipments_are_400_with_the_envelope(customer_client, staff_client, shop, body, field):
    number = paid(customer_client, ("MUG", 2))

    response = staff_client.post(
        f"/api/v1/orders/{number}/shipments",
        json.dumps(body),
        content_type="application/json",
        HTTP_IDEMPOTENCY_KEY=uuid.uuid4().hex,
    )

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid"
    if field is not None:
        assert field in error["fields"], error
    assert len(response.content) < 10_000  # one message for a list too long, not one per item
    assert not Shipment.objects.exists()
    assert level("MUG", "MAIN") == (5, 2)


def test_too_many_lines_are_refused_before_any_is_looked_at(customer_client, staff_client, shop, settings):
    number = paid(customer_client, ("MUG", 1), ("TEA", 1))
    settings.ORDER_MAX_LINES = 1

    response = create(staff_client, number, "MAIN", ("MUG", 1), ("TEA", 1))

    assert response.status_code == 400
    assert response.json()["error"]["fields"]["lines"] == ["A shipment has at most 1 lines."]


@pytest.mark.parametrize(
    "body",
    [[], "x", None, {"tracking_number": "t" * 101}, {"carrier": 5 * "carrier" * 10}, {"tracking_number": ["x"]}],
)
def test_a_bad_ship_body_is_400_and_ships_nothing(customer_client, staff_client, shop, body):
    number = paid(customer_client, ("MUG", 1))
    shipment = create(staff_client, number, "MAIN", ("MUG", 1)).json()

    response = staff_client.post(
        f"/api/v1/orders/{number}/shipments/{shipment['id']}/ship", json.dumps(body), content_type="application/json"
    )

    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "invalid"
    assert Shipment.objects.get().status == "pending"
    assert level("MUG", "MAIN") == (5, 1)


def test_an_unreadable_if_match_is_412(customer_client, staff_client, shop):
    number = paid(customer_client, ("MUG", 1))

    response = create(staff_client, number, "MAIN", ("MUG", 1), HTTP_IF_MATCH="yesterday")

    assert response.status_code == 412
    assert not Shipment.objects.exists()


# --- returns --------------------------------------------------------------------------------------


def test_returns_restock_or_write_off_and_record_the_refund(customer_client, staff_client, shop):
    number = fulfilled(customer_client, staff_client, ("MUG", 3), ("TEA", 1))  # all from MAIN
    main_mug, east_mug = level("MUG", "MAIN"), level("MUG", "EAST")

    first = give_back(
        staff_client,
        number,
        "one broken in transit",
        ("MUG", 1, "EAST", "restock"),
        ("MUG", 1, "MAIN", "damaged"),
        HTTP_IF_MATCH=order_version(staff_client, number),
    )

    assert first.status_code == 201, first.content
    body = first.json()
    assert body["reason"] == "one broken in transit"
    assert body["refund_amount"] == "25.00"
    assert body["created_at"]
    assert body["lines"] == [
        {"sku": "MUG", "quantity": 1, "warehouse": "EAST", "disposition": "restock"},
        {"sku": "MUG", "quantity": 1, "warehouse": "MAIN", "disposition": "damaged"},
    ]
    assert first["Location"] == f"/api/v1/orders/{number}/returns/{body['id']}"
    assert staff_client.get(first["Location"]).json() == body
    assert order_status(number) == "partially_returned"
    assert level("MUG", "EAST") == (east_mug[0] + 1, 0)  # back on sale
    assert level("MUG", "MAIN") == main_mug  # written off: on hand unchanged
    ledger = StockMovement.objects.filter(reference=f"{number}/R{body['id']}").order_by("id")
    rows = [(row.level.warehouse.code, row.reason, row.delta_on_hand) for row in ledger]
    assert sorted(rows) == [("EAST", "return", 1), ("MAIN", "damaged", -1), ("MAIN", "return", 1)]

    second = give_back(
        staff_client, number, "changed mind", ("MUG", 1, "MAIN", "restock"), ("TEA", 1, "MAIN", "restock")
    )

    assert second.status_code == 201, second.content
    assert second.json()["refund_amount"] == "16.50"
    order = Order.objects.get(number=number)
    assert (order.status, order.refunded_amount) == ("returned", Decimal("41.50"))
    assert level("MUG", "MAIN") == (main_mug[0] + 1, 0)
    listed = customer_client.get(f"/api/v1/orders/{number}/returns").json()
    assert [r["id"] for r in listed["results"]] == [body["id"], second.json()["id"]]
    assert listed["results"][0] == body
    shipping = {line["sku"]: line for line in staff_client.get(f"/api/v1/orders/{number}/shipping").json()}
    assert (shipping["MUG"]["returned"], shipping["MUG"]["returnable"]) == (3, 0)
    assert_stock_invariants()


def test_returning_more_than_shipped_is_409_and_changes_nothing(customer_client, staff_client, shop):
    number = fulfilled(customer_client, staff_client, ("MUG", 2))
    before = level("MUG", "MAIN")

    too_many = give_back(staff_client, number, "x", ("MUG", 3, "MAIN", "restock"))
    split = give_back(staff_client, number, "x", ("MUG", 2, "MAIN", "restock"), ("MUG", 1, "MAIN", "damaged"))

    for response in (too_many, split):
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "not_returnable"
    assert level("MUG", "MAIN") == before
    assert not OrderReturn.objects.exists()
    assert order_status(number) == "fulfilled"
    assert_stock_invariants()


def test_only_a_fulfilled_order_takes_returns(customer_client, staff_client, shop):
    number = paid(customer_client, ("MUG", 2))
    assert give_back(staff_client, number, "x", ("MUG", 1, "MAIN", "restock")).status_code == 409
    shipment = create(staff_client, number, "MAIN", ("MUG", 1)).json()
    ship(staff_client, number, shipment["id"])

    response = give_back(staff_client, number, "x", ("MUG", 1, "MAIN", "restock"))

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "invalid_transition"
    assert not OrderReturn.objects.exists()
    assert_stock_invariants()


def test_the_same_key_and_body_record_one_return(customer_client, staff_client, shop):
    number = fulfilled(customer_client, staff_client, ("MUG", 2))

    first = give_back(staff_client, number, "dented", ("MUG", 1, "MAIN", "damaged"), key="ret-1")
    again = give_back(staff_client, number, "dented", ("MUG", 1, "MAIN", "damaged"), key="ret-1")
    other = give_back(staff_client, number, "dented", ("MUG", 2, "MAIN", "damaged"), key="ret-1")

    assert first.status_code == again.status_code == 201
    assert again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert other.status_code == 422
    assert OrderReturn.objects.count() == 1
    assert Order.objects.get(number=number).refunded_amount == Decimal("12.50")
    assert_stock_invariants()


def test_a_stale_if_match_refuses_a_return(customer_client, staff_client, shop):
    number = fulfilled(customer_client, staff_client, ("MUG", 1))

    response = give_back(staff_client, number, "x", ("MUG", 1, "MAIN", "restock"), HTTP_IF_MATCH='"1"')

    assert response.status_code == 412
    assert not OrderReturn.objects.exists()


def _return(*lines, reason="because") -> dict:
    return return_body(reason, *lines)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], None),
        ("x", None),
        (None, None),
        ({"lines": [{"sku": "MUG", "quantity": 1, "warehouse": "MAIN", "disposition": "restock"}]}, "reason"),
        (_return(("MUG", 1, "MAIN", "restock"), reason=""), "reason"),
        (_return(("MUG", 1, "MAIN", "restock"), reason="   "), "reason"),
        (_return(("MUG", 1, "MAIN", "restock"), reason="r" * 201), "reason"),
        (_return(("MUG", 1, "MAIN", "restock"), reason=["why"]), "reason"),
        (_return(), "lines"),
        ({"reason": "x", "lines": "MUG"}, "lines"),
        (_return(("MUG", 0, "MAIN", "restock")), "lines"),
        (_return(("MUG", -2, "MAIN", "restock")), "lines"),
        (_return(("MUG", 10**12, "MAIN", "restock")), "lines"),
        (_return(("MUG", "1", "MAIN", "lost")), "lines"),
        (_return(("MUG", 1, "MAIN", None)), "lines"),
        (_return(("TEA", 1, "MAIN", "restock")), "lines"),  # not on this order
        (_return(("MUG", 1, "NOWHERE", "restock")), "lines"),
        (_return(("MUG", 1, "bad code", "restock")), "lines"),
        ({"reason": "x", "lines": [{"sku": "MUG", "quantity": 1}]}, "lines"),
        (
            {"reason": "x", "lines": [{**LONG_LINES[0], "warehouse": "MAIN", "disposition": "restock"}] * 20_000},
            "lines",
        ),
    ],
)
def test_bad_returns_are_400_with_the_envelope(customer_client, staff_client, shop, body, field):
    number = fulfilled(customer_client, staff_client, ("MUG", 2))
    before = level("MUG", "MAIN")

    response = staff_client.post(
        f"/api/v1/orders/{number}/returns",
        json.dumps(body),
        content_type="application/json",
        HTTP_IDEMPOTENCY_KEY=uuid.uuid4().hex,
    )

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid"
    if field is not None:
        assert field in error["fields"], error
    assert len(response.content) < 10_000
    assert not OrderReturn.objects.exists()
    assert level("MUG", "MAIN") == before
    assert order_status(number) == "fulfilled"


def test_shipments_and_returns_appear_in_the_order_ledger_by_reference(customer_client, staff_client, shop):
    number = paid(customer_client, ("MUG", 1))
    shipment = create(staff_client, number, "MAIN", ("MUG", 1)).json()
    ship(staff_client, number, shipment["id"])
    record = give_back(staff_client, number, "x", ("MUG", 1, "MAIN", "restock")).json()

    references = StockMovement.objects.filter(reference__startswith=number).order_by("id")
    shapes = [re.sub(r"\d+$", "N", row.reference.removeprefix(number)) for row in references]

    assert shapes == ["", "/SN", "/RN"]
    assert references[1].reference == f"{number}/S{shipment['id']}"
    assert references[2].reference == f"{number}/R{record['id']}"
    assert order_status(number) == "returned"
    assert_stock_invariants()

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from inventory.models import StockLevel, StockMovement
from orders.models import IdempotencyKey, Order
from tests.conftest import bearer
from tests.factories import UserFactory
from tests.invariants import assert_stock_invariants
from tests.orders.conftest import ADDRESS, order_body, place
from tests.support import other_connection
from users.services import api_key_create


def reserved(sku: str) -> int:
    return sum(StockLevel.objects.filter(product__sku=sku).values_list("reserved", flat=True))


def test_placing_an_order_reserves_across_warehouses(customer_client, shop):
    response = place(customer_client, ("MUG", 7), ("TEA", 1), reference="PO-77")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "reserved"
    assert body["total"] == "91.50"
    assert body["reference"] == "PO-77"
    mug = next(line for line in body["lines"] if line["sku"] == "MUG")
    assert sorted((a["warehouse"], a["quantity"]) for a in mug["allocations"]) == [("EAST", 2), ("MAIN", 5)]
    assert response["ETag"] == '"1"'
    assert reserved("MUG") == 7
    assert_stock_invariants()


def test_short_stock_is_409_listing_each_short_sku_and_reserves_nothing(customer_client, shop):
    response = place(customer_client, ("MUG", 11), ("TEA", 4))

    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "insufficient_stock"
    assert error["items"] == [
        {"sku": "MUG", "requested": 11, "available": 10},
        {"sku": "TEA", "requested": 4, "available": 3},
    ]
    assert reserved("MUG") == reserved("TEA") == 0
    assert not Order.objects.exists()


def test_missing_idempotency_key_is_400(customer_client, shop):
    response = customer_client.post("/api/v1/orders", order_body(("MUG", 1)), format="json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "idempotency_key_required"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (order_body(("NOPE", 1)), "lines"),
        (order_body(("MUG", 0)), "lines"),
        (order_body(("MUG", 1.5)), "lines"),
        (order_body(("MUG", 1), ("MUG", 2)), "lines"),
        (order_body(), "lines"),
        ({"lines": [{"sku": "MUG", "quantity": 1}]}, "shipping_address"),
        (
            {"lines": [{"sku": "MUG", "quantity": 1}], "shipping_address": {**ADDRESS, "country": "France"}},
            "shipping_address",
        ),
        ({"lines": [{"sku": "MUG", "quantity": 1}], "shipping_address": {**ADDRESS, "city": ""}}, "shipping_address"),
        (order_body(("MUG", 1), reference="x" * 65), "reference"),
        ({"lines": "MUG", "shipping_address": ADDRESS}, "lines"),
    ],
)
def test_bad_orders_are_400_with_field_errors_and_reserve_nothing(customer_client, shop, body, field):
    response = customer_client.post("/api/v1/orders", body, format="json", HTTP_IDEMPOTENCY_KEY="k-bad")

    assert response.status_code == 400, response.content
    assert field in response.json()["error"]["fields"]
    assert not Order.objects.exists()
    assert reserved("MUG") == 0


def test_too_many_lines_is_400(customer_client, shop, settings):
    settings.ORDER_MAX_LINES = 1

    response = place(customer_client, ("MUG", 1), ("TEA", 1))

    assert response.status_code == 400


def test_inactive_product_is_400(customer_client, shop):
    from inventory.models import Product

    Product.objects.filter(sku="TEA").update(active=False)

    response = place(customer_client, ("TEA", 1))

    assert response.status_code == 400
    assert response.json()["error"]["fields"]["lines"][0]["sku"]


def test_same_key_same_body_replays_the_first_response(customer_client, shop):
    first = place(customer_client, ("MUG", 2), key="order-1")
    second = customer_client.post(
        "/api/v1/orders",
        {"shipping_address": ADDRESS, "lines": [{"quantity": 2, "sku": "MUG"}]},  # same JSON, other key order
        format="json",
        HTTP_IDEMPOTENCY_KEY="order-1",
    )

    assert first.status_code == second.status_code == 201
    assert second["Idempotent-Replayed"] == "true"
    assert second.json() == first.json()
    assert Order.objects.count() == 1
    assert reserved("MUG") == 2


def test_same_key_other_body_is_422(customer_client, shop):
    place(customer_client, ("MUG", 2), key="order-1")

    response = place(customer_client, ("MUG", 3), key="order-1")

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "idempotency_key_reused"
    assert Order.objects.count() == 1


def test_a_domain_refusal_is_stored_and_replayed(customer_client, shop):
    first = place(customer_client, ("MUG", 50), key="big")
    from inventory import services as stock

    stock.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=100)
    second = place(customer_client, ("MUG", 50), key="big")

    assert first.status_code == second.status_code == 409
    assert second["Idempotent-Replayed"] == "true"
    assert second.json() == first.json()
    assert not Order.objects.exists()


def test_a_key_in_flight_is_409_at_once(customer_client, shop, customer):
    IdempotencyKey.objects.create(
        user=customer,
        key="busy",
        fingerprint="whatever",
        lease_expires_at=timezone.now() + timedelta(seconds=30),
    )
    from project.api.idempotency import request_fingerprint

    body = order_body(("MUG", 1))
    IdempotencyKey.objects.filter(key="busy").update(fingerprint=request_fingerprint("POST", "/api/v1/orders", body))

    response = customer_client.post("/api/v1/orders", body, format="json", HTTP_IDEMPOTENCY_KEY="busy")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "request_in_flight"


def test_an_abandoned_claim_is_taken_over_after_its_lease(customer_client, shop, customer):
    from project.api.idempotency import request_fingerprint

    body = order_body(("MUG", 1))
    IdempotencyKey.objects.create(
        user=customer,
        key="crashed",
        fingerprint=request_fingerprint("POST", "/api/v1/orders", body),
        lease_expires_at=timezone.now() - timedelta(seconds=1),
    )

    response = customer_client.post("/api/v1/orders", body, format="json", HTTP_IDEMPOTENCY_KEY="crashed")

    assert response.status_code == 201
    assert IdempotencyKey.objects.get(key="crashed").state == "complete"


def test_a_twin_still_running_in_sql_is_409_at_once_and_leaves_no_claim(customer_client, shop, customer, settings):
    """In one round trip the claim and the order share a transaction: a twin holds the key's
    advisory lock while it runs (held here from another session), and this request stops there."""
    settings.ORDER_PLACEMENT_IN_SQL = True
    with other_connection(autocommit=True) as twin:
        twin.execute(
            "SELECT pg_advisory_lock(hashtextextended('orders_idempotency_key:' || %s || ':' || %s, 0))",
            [customer.pk, "twin"],
        )
        response = place(customer_client, ("MUG", 1), key="twin")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "request_in_flight"
    assert not IdempotencyKey.objects.filter(key="twin").exists()
    assert place(customer_client, ("MUG", 1), key="twin").status_code == 201


@pytest.mark.django_db(transaction=True)
def test_an_order_that_fails_with_a_5xx_in_sql_leaves_no_claim_so_the_retry_runs_again(customer_client, shop, settings):
    settings.ORDER_PLACEMENT_IN_SQL = True
    level = StockLevel.objects.filter(product__sku="MUG").order_by("id").first()
    with connection.cursor() as cursor:
        cursor.execute("SET lock_timeout = '20ms'")
    try:
        with other_connection() as holder:
            holder.execute("SELECT 1 FROM inventory_stocklevel WHERE id = %s FOR UPDATE", [level.pk])
            refused = place(customer_client, ("MUG", 1), key="retry-me")
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET lock_timeout")

    assert refused.status_code == 503
    assert not IdempotencyKey.objects.filter(key="retry-me").exists()
    retried = place(customer_client, ("MUG", 1), key="retry-me")
    assert retried.status_code == 201
    assert "Idempotent-Replayed" not in retried
    assert Order.objects.count() == 1


def test_keys_are_per_user(customer_client, shop):
    other = UserFactory()
    _, key = api_key_create(user=other)

    assert place(customer_client, ("MUG", 1), key="same").status_code == 201
    assert place(bearer(APIClient(), key), ("MUG", 1), key="same").status_code == 201
    assert Order.objects.count() == 2


def test_lifecycle_pay_fulfil_return(customer_client, staff_client, shop):
    number = place(customer_client, ("MUG", 6)).json()["number"]

    paid = customer_client.post(f"/api/v1/orders/{number}/pay", HTTP_IF_MATCH='"1"')
    assert paid.status_code == 200
    assert paid.json()["status"] == "paid"
    assert paid.json()["paid_amount"] == "75.00"
    assert paid["ETag"] == '"2"'

    assert customer_client.post(f"/api/v1/orders/{number}/fulfil").status_code == 403
    fulfilled = staff_client.post(f"/api/v1/orders/{number}/fulfil")
    assert fulfilled.json()["status"] == "fulfilled"
    assert sum(StockLevel.objects.filter(product__sku="MUG").values_list("on_hand", flat=True)) == 4
    assert reserved("MUG") == 0

    returned = staff_client.post(f"/api/v1/orders/{number}/return")
    assert returned.json()["status"] == "returned"
    assert sum(StockLevel.objects.filter(product__sku="MUG").values_list("on_hand", flat=True)) == 10
    # The reservation is the order's; each shipment (one per warehouse) and the return name theirs.
    ledger = list(StockMovement.objects.filter(reference__startswith=number).order_by("id"))
    assert [row.reason for row in ledger] == [
        "reservation",
        "reservation",
        "fulfilment",
        "fulfilment",
        "return",
        "return",
    ]
    shapes = [re.sub(r"\d+$", "N", row.reference.removeprefix(number)) for row in ledger]
    assert shapes == ["", "", "/SN", "/SN", "/RN", "/RN"]
    assert ledger[2].reference != ledger[3].reference  # two warehouses, two parcels
    assert ledger[4].reference == ledger[5].reference  # one return
    assert_stock_invariants()


@pytest.mark.parametrize(
    ("before", "action", "allowed"),
    [
        ("reserved", "pay", True),
        ("reserved", "cancel", True),
        ("reserved", "fulfil", False),
        ("reserved", "return", False),
        ("paid", "pay", False),
        ("paid", "cancel", True),
        ("paid", "fulfil", True),
        ("paid", "return", False),
        ("fulfilled", "cancel", False),
        ("fulfilled", "pay", False),
        ("fulfilled", "return", True),
        ("cancelled", "pay", False),
        ("cancelled", "cancel", False),
        ("returned", "return", False),
    ],
)
def test_each_transition_is_allowed_or_refused(staff_client, customer_client, shop, before, action, allowed):
    number = place(customer_client, ("MUG", 2)).json()["number"]
    path = {
        "paid": ["pay"],
        "fulfilled": ["pay", "fulfil"],
        "cancelled": ["cancel"],
        "returned": ["pay", "fulfil", "return"],
    }
    for step in path.get(before, []):
        assert staff_client.post(f"/api/v1/orders/{number}/{step}").status_code == 200

    response = staff_client.post(f"/api/v1/orders/{number}/{action}")

    assert response.status_code == (200 if allowed else 409), response.content
    if not allowed:
        assert response.json()["error"]["code"] == "invalid_transition"
    assert_stock_invariants()


def test_cancel_releases_the_stock(customer_client, shop):
    number = place(customer_client, ("MUG", 7)).json()["number"]

    response = customer_client.post(f"/api/v1/orders/{number}/cancel")

    assert response.json()["status"] == "cancelled"
    assert reserved("MUG") == 0
    assert_stock_invariants()


def test_stale_if_match_is_412(customer_client, shop):
    number = place(customer_client, ("MUG", 1)).json()["number"]
    customer_client.post(f"/api/v1/orders/{number}/pay")

    response = customer_client.post(f"/api/v1/orders/{number}/cancel", HTTP_IF_MATCH='"1"')

    assert response.status_code == 412
    assert Order.objects.get(number=number).status == "paid"


def test_paying_after_expiry_is_refused_even_before_the_sweep(customer_client, shop):
    number = place(customer_client, ("MUG", 1)).json()["number"]
    Order.objects.filter(number=number).update(expires_at=timezone.now() - timedelta(seconds=1))

    response = customer_client.post(f"/api/v1/orders/{number}/pay")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "reservation_expired"
    assert Order.objects.get(number=number).status == "reserved"


def test_detail_etag_and_list_filters(customer_client, shop):
    first = place(customer_client, ("MUG", 1)).json()["number"]
    second = place(customer_client, ("TEA", 1)).json()["number"]
    customer_client.post(f"/api/v1/orders/{second}/pay")

    detail = customer_client.get(f"/api/v1/orders/{first}")
    assert detail.status_code == 200
    assert customer_client.get(f"/api/v1/orders/{first}", HTTP_IF_NONE_MATCH=detail["ETag"]).status_code == 304
    assert [o["number"] for o in customer_client.get("/api/v1/orders").json()["results"]] == [second, first]
    assert [o["number"] for o in customer_client.get("/api/v1/orders", {"status": "paid"}).json()["results"]] == [
        second
    ]
    assert customer_client.get("/api/v1/orders", {"status": "lost"}).status_code == 400


def test_no_user_reads_or_changes_another_users_order(customer_client, shop):
    number = place(customer_client, ("MUG", 1)).json()["number"]
    stranger = bearer(APIClient(), api_key_create(user=UserFactory())[1])

    assert stranger.get(f"/api/v1/orders/{number}").status_code == 404
    assert stranger.post(f"/api/v1/orders/{number}/pay").status_code == 404
    assert stranger.post(f"/api/v1/orders/{number}/cancel").status_code == 404
    assert stranger.post(f"/api/v1/orders/{number}/fulfil").status_code == 403
    assert stranger.post(f"/api/v1/orders/{number}/return").status_code == 403
    assert stranger.get("/api/v1/orders").json()["results"] == []
    assert Order.objects.get(number=number).status == "reserved"


def test_staff_see_every_order_and_filter_by_customer(customer_client, staff_client, shop, customer):
    number = place(customer_client, ("MUG", 1)).json()["number"]

    assert staff_client.get(f"/api/v1/orders/{number}").status_code == 200
    listed = staff_client.get("/api/v1/orders", {"user": customer.email}).json()["results"]
    assert [o["number"] for o in listed] == [number]


def test_a_read_only_key_cannot_place_or_pay(customer, shop):
    client = bearer(APIClient(), api_key_create(user=customer, scopes=["read"])[1])

    assert place(client, ("MUG", 1)).status_code == 403
    assert client.get("/api/v1/orders").status_code == 200

"""One definition of the order body: OrderSerializer. Every producer of it (the SQL placement's
jsonb, the ORM placement and order_payload, the idempotency key's stored response) gives what
the serializer gives for the same order, for orders of every shape, and both placement paths
refuse with the same envelopes."""

import json
import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from orders import services
from orders.api import render_order
from orders.models import Order
from orders.placement.body import sql_body
from orders.selectors import order_for
from orders.serializers import LINE_FIELDS, ORDER_FIELDS, OrderSerializer, order_payload
from tests.factories import ProductFactory
from tests.orders.conftest import ADDRESS, place

SHAPES = {
    "one line": [("TEA", 1)],
    "several lines": [("MUG", 2), ("TEA", 3)],
    "a line split across two warehouses": [("MUG", 7), ("TEA", 1)],  # MUG: 5 from MAIN, 2 from EAST
}


@pytest.fixture(params=["sql", "orm"])
def path(request, settings):
    """Each placement path behind the switch (orders.placement.order_place)."""
    settings.ORDER_PLACEMENT_IN_SQL = request.param == "sql"
    return request.param


def serialized(number: str) -> dict:
    order = Order.objects.get(number=number)
    data = OrderSerializer(order_for(user=order.user, number=number)).data
    return json.loads(json.dumps(data))  # plain dicts and lists, in the serializer's key order


def assert_same_body(body: dict, expected: dict) -> None:
    assert body == expected
    assert list(body) == list(expected)  # the same key order too
    assert [list(line) for line in body["lines"]] == [list(line) for line in expected["lines"]]


def test_the_field_lists_are_the_serializers():
    assert list(ORDER_FIELDS) == list(OrderSerializer().fields)
    assert list(LINE_FIELDS) == list(OrderSerializer().fields["lines"].child.fields)


@pytest.mark.parametrize("shape", SHAPES)
def test_a_placed_order_body_is_the_serializers_output(customer_client, shop, path, shape):
    response = place(customer_client, *SHAPES[shape], reference="R-7")

    assert response.status_code == 201, response.json()
    expected = serialized(response.json()["number"])
    assert_same_body(response.json(), expected)
    assert_same_body(order_payload(Order.objects.get(number=expected["number"])), expected)
    assert_same_body(customer_client.get(f"/api/v1/orders/{expected['number']}").json(), expected)
    if shape == "a line split across two warehouses":
        assert expected["lines"][0]["allocations"] == [
            {"warehouse": "MAIN", "quantity": 5, "backordered": 0},
            {"warehouse": "EAST", "quantity": 2, "backordered": 0},
        ]


def test_a_replayed_body_is_the_serializers_output(customer_client, shop, path):
    key = uuid.uuid4().hex
    first = place(customer_client, ("MUG", 7), ("TEA", 1), key=key)
    again = place(customer_client, ("MUG", 7), ("TEA", 1), key=key)

    assert (first.status_code, again.status_code) == (201, 201)
    assert again["Idempotent-Replayed"] == "true"
    expected = serialized(first.json()["number"])
    assert again.json() == first.json() == expected


def test_the_sql_body_is_put_in_the_serializers_order():
    expected = {key: None for key in ORDER_FIELDS} | {"lines": [dict.fromkeys(LINE_FIELDS)]}
    scrambled = {key: expected[key] for key in sorted(expected)} | {"lines": [dict.fromkeys(sorted(LINE_FIELDS))]}

    assert_same_body(sql_body(scrambled), expected)


REFUSALS = {
    "insufficient stock": [("MUG", 11), ("TEA", 4)],
    "an unknown SKU": [("MUG", 1), ("NOPE", 1)],
    "a SKU no longer sold": [("GONE", 1)],
}


@pytest.mark.parametrize("refusal", REFUSALS)
def test_both_paths_refuse_with_the_same_envelope_first_and_on_replay(customer_client, shop, settings, refusal):
    ProductFactory(sku="GONE", active=False)
    answers = {}
    for in_sql in (True, False):
        settings.ORDER_PLACEMENT_IN_SQL = in_sql
        key = uuid.uuid4().hex
        first = place(customer_client, *REFUSALS[refusal], key=key)
        again = place(customer_client, *REFUSALS[refusal], key=key)
        assert again["Idempotent-Replayed"] == "true"
        answers[in_sql] = [(first.status_code, first.json()), (again.status_code, again.json())]

    assert answers[True] == answers[False]
    (status, envelope), replayed = answers[True]
    assert replayed == (status, envelope)
    assert status in (400, 409) and set(envelope) == {"error"}
    assert not Order.objects.exists()


def test_the_orm_path_renders_its_new_order_without_a_query(customer, shop, settings):
    settings.ORDER_PLACEMENT_IN_SQL = False
    queries_while_rendering = []

    def render(order, lines):
        with CaptureQueriesContext(connection) as queries:
            body = render_order(order, lines)
        queries_while_rendering.append(len(queries))
        return body

    result = services.order_place(
        user=customer, lines=[services.OrderLineRequest("MUG", 7)], shipping_address=ADDRESS, render=render
    )

    assert queries_while_rendering == [0]  # stock rows are locked meanwhile
    assert_same_body(result.body, serialized(result.body["number"]))

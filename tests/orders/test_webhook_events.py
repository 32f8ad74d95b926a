"""Every change of an order's status emits its webhook event in the change's own transaction: the
SQL placement and expiry paths and the Python services alike, one delivery per endpoint that wants
the type, the payload the order as the change left it."""

import pytest
from django.db import transaction

from inventory.errors import InsufficientStock
from orders import jobs, services
from orders.errors import InvalidTransition
from orders.models import Order
from orders.serializers import OrderWebhookLineSerializer, OrderWebhookSerializer, order_payload
from project.webhooks.models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from tests.orders.conftest import place_paid, place_reserved

ORDER_EVENTS = [
    "order.placed", "order.paid", "order.cancelled", "order.expired", "order.shipped", "order.fulfilled",
    "order.returned",
]  # fmt: skip
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def endpoint(events=ORDER_EVENTS, *, active=True, url="https://hooks.example.com/a") -> WebhookEndpoint:
    return WebhookEndpoint.objects.create(url=url, events=list(events), secret=SECRET, active=active)


def events_of(order: Order) -> list[tuple[str, str]]:
    return list(
        WebhookEvent.objects.filter(ordering_key=f"order:{order.number}")
        .order_by("id")
        .values_list("type", "payload__order__status")
    )


def place(*lines, settings, in_sql=True) -> Order:
    settings.ORDER_PLACEMENT_IN_SQL = in_sql
    return place_reserved(*lines)


@pytest.mark.parametrize("in_sql", [True, False], ids=["sql", "orm"])
def test_placing_emits_order_placed_with_the_order_as_the_api_shows_it(shop, settings, in_sql):
    hooks = [endpoint(), endpoint(url="https://hooks.example.com/b")]
    endpoint(["order.paid"], url="https://hooks.example.com/only-paid")
    endpoint(ORDER_EVENTS, active=False, url="https://hooks.example.com/off")

    order = place(("MUG", 2), ("TEA", 1), settings=settings, in_sql=in_sql)

    event = WebhookEvent.objects.get()
    assert (event.type, event.ordering_key) == ("order.placed", f"order:{order.number}")
    assert event.key == f"order.placed:{order.pk}:1"
    api = order_payload(Order.objects.select_related("user").get(pk=order.pk))
    body = event.payload["order"]
    same = ["number", "status", "customer", "reference", "total", "currency", "paid_amount", "version"]
    assert {k: body[k] for k in same} == {k: api[k] for k in same}
    assert body["created_at"] == api["created_at"] and body["updated_at"] == api["updated_at"]
    assert body["lines"] == [{k: line[k] for k in ("sku", "quantity", "unit_price")} for line in api["lines"]]
    # What the schema documents (OrderWebhookSerializer) is what is sent, field for field.
    assert set(body) == set(OrderWebhookSerializer().fields)
    assert set(body["lines"][0]) == set(OrderWebhookLineSerializer().fields)
    # One delivery for each active endpoint that wants the type, none for the others.
    deliveries = WebhookDelivery.objects.filter(event=event).order_by("endpoint_id")
    assert [d.endpoint_id for d in deliveries] == [h.pk for h in hooks]
    assert {(d.state, d.attempts, d.ordering_key) for d in deliveries} == {("pending", 0, f"order:{order.number}")}


def test_without_an_endpoint_that_wants_it_nothing_is_written(shop, settings):
    endpoint(["stock.changed"])
    order = place(("MUG", 1), settings=settings)
    services.order_pay(order_id=order.pk)
    assert not WebhookEvent.objects.exists()
    assert not WebhookDelivery.objects.exists()


def test_each_transition_emits_its_event_in_order_with_the_status_it_left(shop, settings):
    endpoint()
    order = place(("MUG", 3), ("TEA", 1), settings=settings)
    services.order_pay(order_id=order.pk)
    shipment = services.shipment_create(
        order_id=order.pk,
        warehouse="MAIN",
        lines=[services.ShipmentLineRequest(order.lines.get(product__sku="MUG").pk, 1)],
    )
    services.shipment_ship(order_id=order.pk, shipment_id=shipment.pk, tracking_number="T-1")
    services.order_fulfil(order_id=order.pk)
    services.order_return(order_id=order.pk)

    assert events_of(order) == [
        ("order.placed", "reserved"),
        ("order.paid", "paid"),
        ("order.shipped", "partially_fulfilled"),
        ("order.fulfilled", "fulfilled"),
        ("order.returned", "returned"),
    ]
    versions = [e.payload["order"]["version"] for e in WebhookEvent.objects.order_by("id")]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)


def test_a_partial_return_emits_order_returned_with_the_partial_status(shop):
    endpoint(["order.returned"])
    order = place_paid(("MUG", 2))
    services.order_fulfil(order_id=order.pk)
    line = order.lines.get().pk
    services.return_create(
        order_id=order.pk, reason="one broken", lines=[services.ReturnLineRequest(line, 1, "MAIN", "restock")]
    )
    assert events_of(order) == [("order.returned", "partially_returned")]


def test_cancel_emits_and_a_refused_transition_emits_nothing(shop, settings):
    endpoint()
    order = place(("MUG", 1), settings=settings)
    services.order_cancel(order_id=order.pk)
    with pytest.raises(InvalidTransition):
        services.order_pay(order_id=order.pk)
    assert events_of(order) == [("order.placed", "reserved"), ("order.cancelled", "cancelled")]


def test_a_rolled_back_change_leaves_no_event(shop, settings):
    endpoint()
    order = place(("MUG", 1), settings=settings)
    with pytest.raises(RuntimeError), transaction.atomic():
        services.order_pay(order_id=order.pk)
        raise RuntimeError("the caller's transaction fails after the service")
    assert events_of(order) == [("order.placed", "reserved")]
    assert WebhookDelivery.objects.count() == 1


@pytest.mark.parametrize("sweep", ["sql chunk", "one order"])
def test_expiry_emits_order_expired_from_the_sql_sweep_and_the_service(shop, settings, sweep):
    endpoint(["order.expired"])
    orders = [place(("MUG", 1), settings=settings), place(("TEA", 1), settings=settings)]
    Order.objects.filter(pk__in=[o.pk for o in orders]).update(expires_at="2000-01-01T00:00:00Z")
    if sweep == "sql chunk":
        assert jobs.expire_reservations() == 2
    else:
        for order in orders:
            services.order_expire(order_id=order.pk)
    for order in orders:
        assert events_of(order) == [("order.expired", "expired")]
    # Expiring again (a second sweep) emits nothing more.
    jobs.expire_reservations()
    assert WebhookEvent.objects.count() == 2


@pytest.mark.parametrize("in_sql", [True, False], ids=["sql", "orm"])
def test_a_refused_placement_emits_nothing(shop, settings, in_sql):
    endpoint()
    with pytest.raises(InsufficientStock):
        place(("MUG", 11), settings=settings, in_sql=in_sql)  # 10 in stock
    assert not WebhookEvent.objects.exists()
    assert not WebhookDelivery.objects.exists()

"""The shopper's order page once an order ships and comes back by line: parcels with their tracking
numbers, what is still to come, returns and refunds, and when the cancel button is offered."""

import re

import pytest
from django.contrib.messages import get_messages
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from orders import services
from orders.models import Order
from orders.services import ReturnLineRequest, ShipmentLineRequest
from tests.factories import UserFactory
from tests.invariants import assert_stock_invariants
from tests.orders.conftest import ADDRESS

pytestmark = pytest.mark.django_db


def place_paid(user, *lines) -> Order:
    """An order placed and paid through the services (MUG splits MAIN first, then EAST)."""
    result = services.order_place(
        user=user,
        lines=[services.OrderLineRequest(sku, quantity) for sku, quantity in lines],
        shipping_address=ADDRESS,
        render=lambda order, lines: {"number": order.number},
    )
    order = Order.objects.get(number=result.body["number"])
    return services.order_pay(order_id=order.pk)


def line_id(order: Order, sku: str) -> int:
    return order.lines.get(product__sku=sku).pk


def parcel(order: Order, warehouse: str, *lines, tracking: str = "", carrier: str = "", ship: bool = True):
    shipment = services.shipment_create(
        order_id=order.pk,
        warehouse=warehouse,
        lines=[ShipmentLineRequest(line_id(order, sku), quantity) for sku, quantity in lines],
        carrier=carrier,
        tracking_number=tracking,
    )
    if ship:
        shipment = services.shipment_ship(order_id=order.pk, shipment_id=shipment.pk)
    return shipment


def section(body: str, css_class: str) -> str:
    """The HTML inside the first <ul> with this class (its nested lists included)."""
    match = re.search(rf'<ul class="[^"]*\b{css_class}\b[^"]*">(.*?)</ul>\s*(?:<h2|<p|<form|$)', body, flags=re.S)
    assert match, f"no {css_class} list on the page"
    return match.group(1)


def text(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def items(html: str) -> list[tuple[int, str]]:
    """(quantity, SKU) of each "<n> \u00d7 <name> <sku>" item, in page order."""
    found = re.findall(r'<li>(\d+) \u00d7 [^<]*<span class="sku">([^<]+)</span></li>', html)
    return [(int(quantity), sku) for quantity, sku in found]


@pytest.fixture
def shopper(customer) -> Client:
    client = Client()
    client.force_login(customer)
    return client


@pytest.fixture
def partly_shipped(shop, customer) -> Order:
    """MUG 7 (5 from MAIN, 2 from EAST) and TEA 2: two parcels gone, one being prepared."""
    order = place_paid(customer, ("MUG", 7), ("TEA", 2))
    parcel(order, "MAIN", ("MUG", 3), ("TEA", 1), carrier="DHL", tracking="JD0001MAIN")
    parcel(order, "EAST", ("MUG", 1), carrier="UPS", tracking="1Z999EAST")
    parcel(order, "EAST", ("MUG", 1), carrier="UPS", tracking="1ZPENDING", ship=False)
    order.refresh_from_db()
    assert order.status == Order.Status.PARTIALLY_FULFILLED
    return order


def test_each_shipped_parcel_shows_its_carrier_tracking_number_and_lines(partly_shipped, shopper):
    response = shopper.get(f"/orders/{partly_shipped.number}/")
    assert response.status_code == 200
    body = response.content.decode()
    parcels = section(body, "parcels").split('<li class="card parcel">')[1:]
    assert len(parcels) == 2  # the pending third parcel is not on its way yet
    first, second = parcels
    assert "Parcel 1" in text(first) and "DHL" in first and "JD0001MAIN" in first
    assert items(first) == [(3, "MUG"), (1, "TEA")]
    assert "Parcel 2" in text(second) and "UPS" in second and "1Z999EAST" in second
    assert items(second) == [(1, "MUG")]
    # A parcel still being prepared is not a parcel on its way yet.
    assert "1ZPENDING" not in body
    assert "Partly shipped" in body


def test_what_is_still_to_come_splits_being_prepared_from_not_shipped_yet(partly_shipped, shopper):
    body = shopper.get(f"/orders/{partly_shipped.number}/").content.decode()
    to_come = text(section(body, "to-come"))
    mug, tea = to_come.split("TEA")
    # MUG: 7 ordered, 4 shipped, 1 in the pending parcel, 2 not in any parcel yet.
    assert "1 being prepared, 2 not shipped yet" in mug and "(7 ordered, 4 shipped)" in mug
    assert "1 not shipped yet" in tea and "being prepared" not in tea and "(2 ordered, 1 shipped)" in tea


def test_a_partly_shipped_order_has_no_cancel_button_and_cannot_be_cancelled(partly_shipped, shopper):
    page = shopper.get(f"/orders/{partly_shipped.number}/")
    assert page.context["can_cancel"] is False
    assert "Cancel this order" not in page.content.decode()
    refused = shopper.post(f"/orders/{partly_shipped.number}/cancel/", {"version": partly_shipped.version})
    assert refused.status_code == 302
    assert any("can no longer be cancelled" in str(text) for text in get_messages(refused.wsgi_request))
    partly_shipped.refresh_from_db()
    assert partly_shipped.status == Order.Status.PARTIALLY_FULFILLED
    assert_stock_invariants()


def test_a_paid_order_with_a_parcel_only_being_prepared_can_still_be_cancelled(shop, customer, shopper):
    order = place_paid(customer, ("MUG", 2))
    parcel(order, "MAIN", ("MUG", 2), tracking="NOTYET", ship=False)
    body = shopper.get(f"/orders/{order.number}/").content.decode()
    assert "Cancel this order" in body
    assert "2 being prepared" in text(section(body, "to-come"))
    assert "NOTYET" not in body and 'class="parcels"' not in body


@pytest.mark.parametrize("action", ["", "cancel/"])
def test_another_customers_shipped_order_is_a_404(partly_shipped, action):
    intruder = Client()
    intruder.force_login(UserFactory())
    url = f"/orders/{partly_shipped.number}/{action}"
    response = intruder.post(url, {"version": partly_shipped.version}) if action else intruder.get(url)
    assert response.status_code == 404
    assert b"JD0001MAIN" not in response.content
    partly_shipped.refresh_from_db()
    assert partly_shipped.status == Order.Status.PARTIALLY_FULFILLED


def test_returns_show_the_quantities_and_the_refund(partly_shipped, shopper):
    services.order_fulfil(order_id=partly_shipped.pk)  # ships the pending parcel and what was left
    services.return_create(
        order_id=partly_shipped.pk,
        lines=[ReturnLineRequest(line_id(partly_shipped, "MUG"), 1, "MAIN", "damaged")],
        reason="arrived broken",
    )
    body = shopper.get(f"/orders/{partly_shipped.number}/").content.decode()
    assert "Partly returned" in body
    returns = section(body, "returns")
    assert items(returns) == [(1, "MUG")] and "refund 12.50 EUR" in text(returns)
    assert "refunded 12.50 EUR" in body
    assert 'class="lines compact to-come"' not in body  # everything has shipped
    assert "Cancel this order" not in body
    assert_stock_invariants()


def test_the_page_reads_the_same_number_of_queries_however_many_parcels_and_returns(shop, customer, shopper):
    def queries(order: Order) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert shopper.get(f"/orders/{order.number}/").status_code == 200
        return len(captured)

    def give_back(order: Order, sku: str) -> None:
        services.return_create(
            order_id=order.pk, lines=[ReturnLineRequest(line_id(order, sku), 1, "MAIN", "restock")], reason="unwanted"
        )

    many = place_paid(customer, ("MUG", 4), ("TEA", 3))  # all from MAIN
    for n in range(3):
        parcel(many, "MAIN", ("MUG", 1), ("TEA", 1), tracking=f"B{n}")
    services.order_fulfil(order_id=many.pk)
    give_back(many, "TEA")
    give_back(many, "MUG")
    one = place_paid(customer, ("MUG", 1))  # the last MUG in MAIN
    parcel(one, "MAIN", ("MUG", 1), tracking="A1")
    give_back(one, "MUG")
    assert queries(many) == queries(one)

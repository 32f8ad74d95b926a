"""A shopper in a real browser follows an order shipped in two parcels from two warehouses, one unit
of which came back damaged."""

import pytest
from playwright.sync_api import expect

from inventory import services as stock
from orders import services as orders
from orders.models import Order
from orders.services import ReturnLineRequest, ShipmentLineRequest
from tests.e2e.conftest import PASSWORD, PHONE, shoot
from tests.factories import UserFactory, WarehouseFactory
from tests.invariants import assert_stock_invariants

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ADDRESS = {
    "name": "Ada Lovelace",
    "line1": "12 Analytical St",
    "city": "London",
    "postal_code": "N1 9GU",
    "country": "GB",
}


def shipped_in_two_parcels_with_a_damaged_return(user) -> Order:
    """MUG 3 and TEA 2, all reserved in MAIN: TEA and one MUG leave MAIN, two MUGs leave EAST (their
    reservation moved there), then one MUG comes back broken and is written off."""
    WarehouseFactory(code="EAST", priority=2)
    stock.stock_receive(sku="MUG", warehouse_code="EAST", quantity=4)
    placed = orders.order_place(
        user=user,
        lines=[orders.OrderLineRequest("MUG", 3), orders.OrderLineRequest("TEA", 2)],
        shipping_address=ADDRESS,
        render=lambda order, lines: {"number": order.number},
    )
    order = orders.order_pay(order_id=Order.objects.get(number=placed.body["number"]).pk)
    mug, tea = (order.lines.get(product__sku=sku).pk for sku in ("MUG", "TEA"))
    first = orders.shipment_create(
        order_id=order.pk,
        warehouse="MAIN",
        lines=[ShipmentLineRequest(mug, 1), ShipmentLineRequest(tea, 2)],
        carrier="DHL",
        tracking_number="JD014600006281",
    )
    orders.shipment_ship(order_id=order.pk, shipment_id=first.pk)
    second = orders.shipment_create(
        order_id=order.pk,
        warehouse="EAST",
        lines=[ShipmentLineRequest(mug, 2)],
        carrier="UPS",
        move_allocation=True,
    )
    orders.shipment_ship(order_id=order.pk, shipment_id=second.pk, tracking_number="1Z999AA10123456784")
    orders.return_create(
        order_id=order.pk, lines=[ReturnLineRequest(mug, 1, "MAIN", "damaged")], reason="arrived broken"
    )
    order.refresh_from_db()
    return order


def test_the_shopper_sees_both_parcels_and_the_return(page, shop, tmp_path):
    shopper = UserFactory(email="ha@example.com")
    order = shipped_in_two_parcels_with_a_damaged_return(shopper)
    assert order.status == Order.Status.PARTIALLY_RETURNED and str(order.refunded_amount) == "12.50"
    assert_stock_invariants()

    page.goto("/accounts/login/")
    page.get_by_label("Email").fill(shopper.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator(".messages")).to_contain_text(f"Signed in as {shopper.email}")
    page.get_by_role("link", name="Orders", exact=True).click()
    page.get_by_role("link", name=order.number).click()

    expect(page.get_by_role("heading", name=f"Order {order.number}")).to_be_visible()
    expect(page.locator(".status")).to_have_text("Partly returned")
    parcels = page.locator(".parcels .parcel")
    expect(parcels).to_have_count(2)
    expect(parcels.nth(0)).to_contain_text("DHL")
    expect(parcels.nth(0)).to_contain_text("JD014600006281")
    expect(parcels.nth(1)).to_contain_text("UPS")
    expect(parcels.nth(1)).to_contain_text("1Z999AA10123456784")
    expect(page.locator(".returns")).to_contain_text("refund 12.50 EUR")
    expect(page.locator(".to-come")).to_have_count(0)  # everything has shipped
    expect(page.get_by_role("button", name="Cancel this order")).to_have_count(0)

    page.set_viewport_size(PHONE)
    screenshot = tmp_path / "order-shipped-and-returned-phone.png"
    page.screenshot(path=screenshot, full_page=True)
    assert screenshot.exists() and screenshot.stat().st_size > 0
    shoot(page, "order-shipped-and-returned")

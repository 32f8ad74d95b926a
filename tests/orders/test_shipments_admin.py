"""Shipping and returns by line in the orders admin: the order page's Shipping section, the Ship and
Return forms, a pending shipment's buttons, and the read-only shipment and return pages."""

import re

import pytest
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from inventory import services as stock
from inventory.models import StockLevel, StockMovement
from orders import services
from orders.api import render_order
from orders.models import Order, OrderReturn, Shipment
from tests.factories import ProductFactory
from tests.invariants import assert_stock_invariants
from tests.orders.conftest import ADDRESS
from users.models import User

pytestmark = pytest.mark.django_db


@pytest.fixture
def pens(shop):
    """A third product beside the shop's MUG and TEA: PEN, 4 in MAIN and 4 in EAST."""
    ProductFactory(sku="PEN", price="2.00")
    stock.stock_receive(sku="PEN", warehouse_code="MAIN", quantity=4)
    stock.stock_receive(sku="PEN", warehouse_code="EAST", quantity=4)


def url(name: str, *args) -> str:
    return reverse(f"admin:orders_{name}", args=args)


def place(user, *lines) -> Order:
    result = services.order_place(
        user=user,
        lines=[services.OrderLineRequest(sku, quantity) for sku, quantity in lines],
        shipping_address=ADDRESS,
        render=render_order,
    )
    return result.order


def paid(user, *lines) -> Order:
    order = place(user, *lines)
    return services.order_pay(order_id=order.pk)


def fulfilled(user, *lines) -> Order:
    order = paid(user, *lines)
    return services.order_fulfil(order_id=order.pk)


def line_ids(order: Order) -> dict[str, int]:
    return {line.product.sku: line.pk for line in order.lines.select_related("product")}


def notes(response) -> list[tuple[str, str]]:
    return [(message.level_tag, str(message)) for message in get_messages(response.wsgi_request)]


def figures() -> dict[tuple[str, str], tuple[int, int]]:
    """(sku, warehouse) -> (on hand, reserved)."""
    levels = StockLevel.objects.select_related("product", "warehouse")
    return {(level.product.sku, level.warehouse.code): (level.on_hand, level.reserved) for level in levels}


def snapshot(order: Order) -> tuple:
    """Everything a refused form must leave as it was."""
    order.refresh_from_db()
    return (
        order.status,
        order.version,
        figures(),
        StockMovement.objects.count(),
        list(Shipment.objects.values_list("pk", "status", "version")),
        OrderReturn.objects.count(),
    )


def row_cells(content: str, row_start: str) -> list[str]:
    """The text of each cell of the table row that opens with `row_start`."""
    match = re.search(re.escape(row_start) + r"(.*?)</tr>", content, re.S)
    assert match, row_start
    return [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td>(.*?)</td>", match.group(1), re.S)]


def hidden_version(content: str) -> str:
    return re.search(r'name="expected_version" value="(\d+)"', content).group(1)


def field_value(content: str, name: str) -> str:
    return re.search(rf'<input[^>]*name="{name}"[^>]*value="([^"]*)"', content).group(1)


def ship_data(order: Order, version: str, warehouse: str, quantities: dict[str, int], **extra) -> dict:
    ids = line_ids(order)
    data = {"expected_version": version, "warehouse": warehouse, "carrier": "", "tracking_number": "", **extra}
    data.update({f"line_{ids[sku]}_quantity": str(n) for sku, n in quantities.items()})
    return data


# --- the order's page -------------------------------------------------------------------------------


def test_order_page_shows_what_is_left_per_line_and_warehouse(admin, shop, customer):
    order = paid(customer, ("MUG", 7), ("TEA", 1))  # MUG: 5 in MAIN, 2 in EAST; TEA: 1 in MAIN
    ids = line_ids(order)
    pending = services.shipment_create(
        order_id=order.pk, warehouse="MAIN", lines=[services.ShipmentLineRequest(ids["MUG"], 2)], carrier="DHL"
    )

    response = admin.get(url("order_change", order.pk))

    assert response.status_code == 200
    content = response.content.decode()
    assert "Shipping" in content
    # Per line: ordered, shipped, in pending shipments, left to ship, returned, returnable.
    assert row_cells(content, f'<tr id="shipping-line-{ids["MUG"]}"')[2:] == ["7", "0", "2", "5", "0", "0"]
    assert row_cells(content, f'<tr id="shipping-line-{ids["TEA"]}"')[2:] == ["1", "0", "0", "1", "0", "0"]
    # Per line and warehouse: allocated, shipped, in pending shipments, left to ship.
    at = '<tr class="shipping-at" data-sku="{}" data-warehouse="{}">'
    assert row_cells(content, at.format("MUG", "MAIN")) == ["MUG", "MAIN", "5", "0", "2", "3"]
    assert row_cells(content, at.format("MUG", "EAST")) == ["MUG", "EAST", "2", "0", "0", "2"]
    assert row_cells(content, at.format("TEA", "MAIN")) == ["TEA", "MAIN", "1", "0", "0", "1"]
    # The pending shipment, with its buttons carrying its version.
    cells = row_cells(content, f'<tr id="shipment-{pending.pk}"')
    assert cells[:6] == [f"S{pending.pk}", "MAIN", "pending", "DHL", "-", "2 x MUG"]
    assert f'action="{url("order_shipment_ship", order.pk, pending.pk)}"' in content
    assert f'action="{url("order_shipment_cancel", order.pk, pending.pk)}"' in content
    assert f'href="{url("order_ship", order.pk)}"' in content
    assert f'href="{url("order_return", order.pk)}"' not in content  # nothing shipped yet
    assert "No returns." in content


def test_order_page_queries_do_not_grow_with_shipments_and_returns(admin, pens, customer):
    def queries_for(order: Order) -> int:
        with CaptureQueriesContext(connection) as queries:
            assert admin.get(url("order_change", order.pk)).status_code == 200
        return len(queries)

    def shipped_and_returned(parcels: int) -> Order:
        """PEN x4 in `parcels` shipments of one and a last one of the rest; then `parcels` returns."""
        order = paid(customer, ("PEN", 4))
        (line_id,) = line_ids(order).values()
        for _ in range(parcels):
            shipment = services.shipment_create(
                order_id=order.pk, warehouse="MAIN", lines=[services.ShipmentLineRequest(line_id, 1)]
            )
            services.shipment_ship(order_id=order.pk, shipment_id=shipment.pk)
        services.order_fulfil(order_id=order.pk)
        for _ in range(parcels):
            services.return_create(
                order_id=order.pk,
                lines=[services.ReturnLineRequest(line_id, 1, "MAIN", "restock")],
                reason="too many",
            )
        return order

    assert queries_for(shipped_and_returned(3)) == queries_for(shipped_and_returned(1))
    assert_stock_invariants()


# --- the Ship form ----------------------------------------------------------------------------------


def test_shipping_two_lines_then_the_third_from_another_warehouse_fulfils_the_order(admin, admin_user, pens, customer):
    order = paid(customer, ("MUG", 2), ("TEA", 1), ("PEN", 1))  # all allocated to MAIN
    ids = line_ids(order)
    before = figures()

    form = admin.get(url("order_ship", order.pk))
    assert form.status_code == 200
    content = form.content.decode()
    # Defaults: the first warehouse with units left, and each line's units left there.
    assert re.search(r'<option value="MAIN"[^>]* selected>', content)
    assert [field_value(content, f"line_{ids[sku]}_quantity") for sku in ["MUG", "TEA", "PEN"]] == ["2", "1", "1"]
    assert re.search(r'name="ship_now"[^>]* checked', content)

    # Two of the three lines from MAIN, shipped at once.
    response = admin.post(
        url("order_ship", order.pk),
        ship_data(
            order,
            hidden_version(content),
            "MAIN",
            {"MUG": 2, "TEA": 1, "PEN": 0},
            carrier="DHL",
            tracking_number="TRK-1",
            ship_now="on",
        ),
    )

    assert response.status_code == 302
    assert response["Location"] == url("order_change", order.pk)
    order.refresh_from_db()
    assert order.status == "partially_fulfilled"
    first = Shipment.objects.get(order=order)
    assert (first.status, first.warehouse.code, first.carrier, first.tracking_number) == (
        "shipped",
        "MAIN",
        "DHL",
        "TRK-1",
    )
    assert sorted((item.line_id, item.quantity) for item in first.lines.all()) == sorted(
        [(ids["MUG"], 2), (ids["TEA"], 1)]
    )
    ((tag, text),) = notes(response)
    assert tag == "success"
    assert text.startswith(f"{order.number}/S{first.pk}: shipped 2 x MUG, 1 x TEA from MAIN.")
    assert text.endswith(f"is now partially_fulfilled (version {order.version}).")
    after_first = figures()
    assert after_first[("MUG", "MAIN")] == (before[("MUG", "MAIN")][0] - 2, before[("MUG", "MAIN")][1] - 2)
    assert after_first[("TEA", "MAIN")] == (before[("TEA", "MAIN")][0] - 1, before[("TEA", "MAIN")][1] - 1)
    assert after_first[("PEN", "MAIN")] == before[("PEN", "MAIN")]
    assert_stock_invariants()

    # The third line from EAST, where it is not allocated: the form starts at 0 there, and
    # asking for it without moving the allocation is refused.
    page = admin.get(url("order_ship", order.pk), {"warehouse": "EAST"}).content.decode()
    assert field_value(page, f"line_{ids['PEN']}_quantity") == "0"
    assert f'name="line_{ids["MUG"]}_quantity"' not in page  # nothing left to ship of it
    unchanged = snapshot(order)
    refused = admin.post(
        url("order_ship", order.pk), ship_data(order, hidden_version(page), "EAST", {"PEN": 1}, ship_now="on")
    )
    assert refused.status_code == 200
    assert snapshot(order) == unchanged
    ((tag, text),) = notes(refused)
    assert tag == "error"
    assert text.startswith(f"{order.number} was not shipped: Line {ids['PEN']} (PEN) has 0 units allocated to EAST")

    response = admin.post(
        url("order_ship", order.pk),
        ship_data(order, hidden_version(page), "EAST", {"PEN": 1}, move_allocation="on", ship_now="on"),
    )

    assert response.status_code == 302
    order.refresh_from_db()
    assert order.status == "fulfilled"
    assert list(Shipment.objects.filter(order=order).values_list("warehouse__code", "status")) == [
        ("MAIN", "shipped"),
        ("EAST", "shipped"),
    ]
    final = figures()
    assert final[("PEN", "MAIN")] == (before[("PEN", "MAIN")][0], before[("PEN", "MAIN")][1] - 1)  # released
    assert final[("PEN", "EAST")] == (before[("PEN", "EAST")][0] - 1, before[("PEN", "EAST")][1])  # shipped
    assert final[("MUG", "EAST")] == before[("MUG", "EAST")]
    by_staff = StockMovement.objects.filter(actor=admin_user)
    assert set(by_staff.values_list("reason", flat=True)) == {"fulfilment", "release", "reservation"}
    history = admin.get(url("order_history", order.pk)).content.decode()
    assert "Ship: " in history
    assert_stock_invariants()


def test_a_pending_shipment_is_shipped_or_cancelled_from_the_order_page(admin, pens, customer):
    order = paid(customer, ("MUG", 2), ("PEN", 1))
    ids = line_ids(order)
    form = admin.get(url("order_ship", order.pk)).content.decode()

    # "Ship now" unticked (an unticked checkbox is not posted): the shipment waits.
    response = admin.post(
        url("order_ship", order.pk), ship_data(order, hidden_version(form), "MAIN", {"MUG": 2, "PEN": 0})
    )
    assert response.status_code == 302
    first = Shipment.objects.get(order=order)
    order.refresh_from_db()
    assert (first.status, order.status) == ("pending", "paid")
    assert "waiting to be shipped (pending)" in notes(response)[0][1]
    assert figures()[("MUG", "MAIN")] == (5, 2)  # promised, not consumed

    second = services.shipment_create(
        order_id=order.pk, warehouse="MAIN", lines=[services.ShipmentLineRequest(ids["PEN"], 1)]
    )
    page = admin.get(url("order_change", order.pk)).content.decode()
    assert row_cells(page, f'<tr id="shipping-line-{ids["MUG"]}"')[2:6] == ["2", "0", "2", "0"]

    cancelled = admin.post(url("order_shipment_cancel", order.pk, second.pk), {"expected_version": "1"})
    shipped = admin.post(
        url("order_shipment_ship", order.pk, first.pk), {"expected_version": "1", "tracking_number": "TRK-9"}
    )

    assert cancelled.status_code == shipped.status_code == 302
    first.refresh_from_db()
    second.refresh_from_db()
    order.refresh_from_db()
    assert (first.status, first.tracking_number, second.status) == ("shipped", "TRK-9", "cancelled")
    assert order.status == "partially_fulfilled"
    # Versions: placed 1, paid 2, the form's shipment 3, the second shipment 4, its cancelling 5.
    assert notes(cancelled) == [
        ("success", f"{order.number}/S{second.pk} cancelled. {order.number} is now paid (version 5).")
    ]
    assert (
        "success",
        f"{order.number}/S{first.pk} shipped. {order.number} is now partially_fulfilled (version {order.version}).",
    ) in notes(shipped)
    assert figures()[("MUG", "MAIN")] == (3, 0)
    page = admin.get(url("order_change", order.pk)).content.decode()
    assert row_cells(page, f'<tr id="shipping-line-{ids["PEN"]}"')[2:6] == ["1", "0", "0", "1"]  # left again
    assert f'action="{url("order_shipment_ship", order.pk, second.pk)}"' not in page
    assert_stock_invariants()


def test_a_stale_ship_form_shows_the_conflict_and_changes_nothing(admin, shop, customer):
    order = paid(customer, ("MUG", 2), ("TEA", 1))
    ids = line_ids(order)
    form = admin.get(url("order_ship", order.pk)).content.decode()
    # Someone else, meanwhile: a shipment of the tea (the order's version moves on).
    services.shipment_create(order_id=order.pk, warehouse="MAIN", lines=[services.ShipmentLineRequest(ids["TEA"], 1)])
    unchanged = snapshot(order)

    response = admin.post(
        url("order_ship", order.pk),
        ship_data(order, hidden_version(form), "MAIN", {"MUG": 2, "TEA": 1}, ship_now="on"),
    )

    assert response.status_code == 200
    assert snapshot(order) == unchanged
    ((tag, text),) = notes(response)
    assert tag == "error"
    assert text.startswith(f"{order.number} was not shipped: it was changed by someone else since this page was loaded")
    assert f"(it is now at version {order.version})" in text
    assert "Reload with the current figures" in response.content.decode()
    assert_stock_invariants()


def test_a_stale_shipment_button_is_refused(admin, shop, customer):
    order = paid(customer, ("MUG", 2))
    (line_id,) = line_ids(order).values()
    pending = services.shipment_create(
        order_id=order.pk, warehouse="MAIN", lines=[services.ShipmentLineRequest(line_id, 2)]
    )
    page = admin.get(url("order_change", order.pk)).content.decode()
    shown = re.search(
        rf'action="{url("order_shipment_ship", order.pk, pending.pk)}".*?name="expected_version" value="(\d+)"',
        page,
        re.S,
    ).group(1)
    services.shipment_cancel(order_id=order.pk, shipment_id=pending.pk)  # someone else
    unchanged = snapshot(order)

    response = admin.post(url("order_shipment_ship", order.pk, pending.pk), {"expected_version": shown})

    assert response.status_code == 302
    assert snapshot(order) == unchanged
    ((tag, text),) = notes(response)
    assert tag == "error"
    assert text.startswith(f"{order.number}/S{pending.pk} was not shipped: it was changed by someone else")
    assert_stock_invariants()


def test_shipping_more_than_is_left_shows_an_error_and_changes_nothing(admin, shop, customer):
    order = paid(customer, ("MUG", 2), ("TEA", 1))
    ids = line_ids(order)
    unchanged = snapshot(order)

    response = admin.post(
        url("order_ship", order.pk),
        ship_data(order, str(order.version), "MAIN", {"MUG": 3, "TEA": 1}, move_allocation="on", ship_now="on"),
    )

    assert response.status_code == 200
    assert snapshot(order) == unchanged
    assert notes(response) == [
        ("error", f"{order.number} was not shipped: Line {ids['MUG']} (MUG) has 2 units left to ship, not 3.")
    ]
    assert field_value(response.content.decode(), f"line_{ids['MUG']}_quantity") == "3"  # the form as posted
    assert_stock_invariants()


def test_moving_the_allocation_to_a_warehouse_without_the_stock_is_refused(admin, shop, customer):
    order = paid(customer, ("TEA", 1))  # TEA is stocked in MAIN only
    unchanged = snapshot(order)

    response = admin.post(
        url("order_ship", order.pk),
        ship_data(order, str(order.version), "EAST", {"TEA": 1}, move_allocation="on", ship_now="on"),
    )

    assert response.status_code == 200
    assert snapshot(order) == unchanged
    assert notes(response) == [
        ("error", f"{order.number} was not shipped: Not enough stock: TEA needs 1, 0 available.")
    ]
    assert_stock_invariants()


@pytest.mark.parametrize(
    ("quantities", "extra", "error"),
    [
        ({"MUG": 0, "TEA": 0}, {}, "Enter at least one unit"),
        ({"MUG": -1, "TEA": 1}, {}, "greater than or equal to 0"),
        ({"MUG": 1, "TEA": 1}, {"warehouse": "NOWHERE"}, "Select a valid choice"),
        ({"MUG": 1, "TEA": 1}, {"expected_version": ""}, "This page lost the order"),
    ],
)
def test_ship_form_with_bad_input_changes_nothing(admin, shop, customer, quantities, extra, error):
    order = paid(customer, ("MUG", 2), ("TEA", 1))
    unchanged = snapshot(order)

    response = admin.post(
        url("order_ship", order.pk), {**ship_data(order, str(order.version), "MAIN", quantities), **extra}
    )

    assert response.status_code == 200
    assert snapshot(order) == unchanged
    assert error in response.content.decode()


def test_ship_form_refuses_an_order_that_is_not_paid(admin, shop, customer):
    order = place(customer, ("MUG", 1))

    page = admin.get(url("order_ship", order.pk))
    assert page.status_code == 302 and page["Location"] == url("order_change", order.pk)
    assert notes(page) == [("warning", f"{order.number} is reserved: it cannot be shipped now.")]
    unchanged = snapshot(order)
    response = admin.post(
        url("order_ship", order.pk), ship_data(order, str(order.version), "MAIN", {"MUG": 1}, ship_now="on")
    )

    assert response.status_code == 200
    assert snapshot(order) == unchanged
    assert ("error", f"{order.number} was not shipped: A reserved order cannot do this.") in notes(response)


# --- the Return form --------------------------------------------------------------------------------


def test_returning_one_unit_as_damaged_writes_it_off_and_partially_returns_the_order(admin, admin_user, shop, customer):
    order = fulfilled(customer, ("MUG", 7))  # shipped 5 from MAIN, 2 from EAST
    (line_id,) = line_ids(order).values()
    before = figures()

    form = admin.get(url("order_return", order.pk))
    assert form.status_code == 200
    content = form.content.decode()
    assert field_value(content, f"line_{line_id}_quantity") == "0"
    assert re.search(rf'name="line_{line_id}_warehouse".*?<option value="MAIN" selected>', content, re.S)

    response = admin.post(
        url("order_return", order.pk),
        {
            "expected_version": hidden_version(content),
            "reason": "arrived cracked",
            f"line_{line_id}_quantity": "1",
            f"line_{line_id}_warehouse": "MAIN",
            f"line_{line_id}_disposition": "damaged",
        },
    )

    assert response.status_code == 302
    order.refresh_from_db()
    assert (order.status, str(order.refunded_amount)) == ("partially_returned", "12.50")
    record = OrderReturn.objects.get(order=order)
    assert (record.reason, str(record.refund_amount)) == ("arrived cracked", "12.50")
    ledger = StockMovement.objects.filter(reference=f"{order.number}/R{record.pk}").order_by("id")
    assert [(m.reason, m.delta_on_hand, m.level.warehouse.code, m.actor_id) for m in ledger] == [
        ("return", 1, "MAIN", admin_user.pk),
        ("damaged", -1, "MAIN", admin_user.pk),
    ]
    assert figures() == before  # received and written off: on hand ends where it was
    ((tag, text),) = notes(response)
    assert tag == "success"
    assert text.startswith(f"{order.number}/R{record.pk}: took back 1 x MUG into MAIN, written off; refund 12.50")
    page = admin.get(url("order_change", order.pk)).content.decode()
    assert row_cells(page, f'<tr id="return-{record.pk}"')[1:4] == [
        "arrived cracked",
        f"12.50 {order.currency}",
        "1 x MUG into MAIN, written off",
    ]
    assert row_cells(page, f'<tr id="shipping-line-{line_id}"')[6:] == ["1", "6"]
    assert_stock_invariants()


def test_returning_more_than_returnable_or_from_a_stale_form_changes_nothing(admin, shop, customer):
    order = fulfilled(customer, ("TEA", 2))
    (line_id,) = line_ids(order).values()
    form = admin.get(url("order_return", order.pk)).content.decode()
    data = {
        "expected_version": hidden_version(form),
        "reason": "unwanted",
        f"line_{line_id}_warehouse": "MAIN",
        f"line_{line_id}_disposition": "restock",
    }
    unchanged = snapshot(order)

    too_many = admin.post(url("order_return", order.pk), {**data, f"line_{line_id}_quantity": "3"})

    assert too_many.status_code == 200
    assert snapshot(order) == unchanged
    assert notes(too_many) == [
        ("error", f"{order.number} was not returned: Line {line_id} (TEA) has 2 shipped units not yet returned.")
    ]

    services.return_create(  # someone else, meanwhile
        order_id=order.pk, lines=[services.ReturnLineRequest(line_id, 1, "MAIN", "restock")], reason="first"
    )
    unchanged = snapshot(order)
    stale = admin.post(url("order_return", order.pk), {**data, f"line_{line_id}_quantity": "1"})

    assert stale.status_code == 200
    assert snapshot(order) == unchanged
    ((tag, text),) = notes(stale)
    assert tag == "error" and "was not returned: it was changed by someone else" in text
    assert_stock_invariants()


# --- who may use the forms --------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["anonymous", "customer"])
def test_non_staff_cannot_reach_the_forms(shop, customer, who):
    order = paid(customer, ("MUG", 2))
    (line_id,) = line_ids(order).values()
    pending = services.shipment_create(
        order_id=order.pk, warehouse="MAIN", lines=[services.ShipmentLineRequest(line_id, 1)]
    )
    client = Client()
    if who == "customer":
        client.force_login(customer)
    login = reverse("admin:login")
    unchanged = snapshot(order)

    requests = [
        ("get", url("order_ship", order.pk), None),
        ("get", url("order_return", order.pk), None),
        ("post", url("order_ship", order.pk), ship_data(order, str(order.version), "MAIN", {"MUG": 1}, ship_now="on")),
        ("post", url("order_shipment_ship", order.pk, pending.pk), {"expected_version": "1"}),
        ("post", url("order_shipment_cancel", order.pk, pending.pk), {"expected_version": "1"}),
        ("get", url("shipment_changelist"), None),
        ("get", url("orderreturn_changelist"), None),
    ]
    for method, target, data in requests:
        response = getattr(client, method)(target, data)
        assert response.status_code == 302, target
        assert response["Location"].startswith(login), target
    assert snapshot(order) == unchanged


def test_the_forms_need_the_csrf_token(admin_user, shop, customer):
    order = paid(customer, ("MUG", 2))
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    unchanged = snapshot(order)

    data = ship_data(order, str(order.version), "MAIN", {"MUG": 2}, ship_now="on")
    assert client.post(url("order_ship", order.pk), data).status_code == 403
    assert 'name="csrfmiddlewaretoken"' in client.get(url("order_ship", order.pk)).content.decode()
    assert snapshot(order) == unchanged


def test_staff_who_may_only_view_orders_see_the_shipping_but_cannot_use_the_forms(shop, customer, staff_user):
    staff_user.user_permissions.add(Permission.objects.get(codename="view_order"))
    client = Client()
    client.force_login(staff_user)
    order = paid(customer, ("MUG", 2))
    (line_id,) = line_ids(order).values()
    pending = services.shipment_create(
        order_id=order.pk, warehouse="MAIN", lines=[services.ShipmentLineRequest(line_id, 1)]
    )
    unchanged = snapshot(order)

    page = client.get(url("order_change", order.pk)).content.decode()
    assert 'id="order-shipping"' in page and f'<tr id="shipment-{pending.pk}"' in page
    assert url("order_ship", order.pk) not in page
    assert url("order_shipment_ship", order.pk, pending.pk) not in page
    assert client.get(url("order_ship", order.pk)).status_code == 403
    assert client.get(url("order_return", order.pk)).status_code == 403
    data = ship_data(order, str(order.version), "MAIN", {"MUG": 1}, ship_now="on")
    assert client.post(url("order_ship", order.pk), data).status_code == 403
    ship = client.post(url("order_shipment_ship", order.pk, pending.pk), {"expected_version": "1"})
    assert ship.status_code == 403
    assert snapshot(order) == unchanged


# --- the order list and the shipment and return pages -----------------------------------------------


def test_order_list_status_filter_offers_the_partial_statuses(admin, shop, customer):
    partly = paid(customer, ("MUG", 2))
    (line_id,) = line_ids(partly).values()
    shipment = services.shipment_create(
        order_id=partly.pk, warehouse="MAIN", lines=[services.ShipmentLineRequest(line_id, 1)]
    )
    services.shipment_ship(order_id=partly.pk, shipment_id=shipment.pk)
    other = paid(customer, ("TEA", 1))

    listing = admin.get(url("order_changelist")).content.decode()
    assert "?status__exact=partially_fulfilled" in listing and "?status__exact=partially_returned" in listing
    found = admin.get(url("order_changelist"), {"status__exact": "partially_fulfilled"}).content.decode()
    assert partly.number in found and other.number not in found
    assert_stock_invariants()


def test_shipments_and_returns_are_listed_searched_filtered_and_read_only(admin, shop, customer):
    kept = fulfilled(customer, ("MUG", 7))  # two shipments: MAIN and EAST
    (line_id,) = line_ids(kept).values()
    services.return_create(
        order_id=kept.pk, lines=[services.ReturnLineRequest(line_id, 1, "EAST", "damaged")], reason="scratched"
    )
    other = paid(User.objects.create_user(email="other@example.com"), ("TEA", 1))
    (tea_line,) = line_ids(other).values()
    tracked = services.shipment_create(
        order_id=other.pk,
        warehouse="MAIN",
        lines=[services.ShipmentLineRequest(tea_line, 1)],
        tracking_number="ZX-4411",
    )

    def listed(name: str, query: dict) -> str:
        response = admin.get(url(f"{name}_changelist"), query)
        assert response.status_code == 200, query
        return response.content.decode()

    assert kept.number in listed("shipment", {}) and "ZX-4411" in listed("shipment", {})
    for query in [{"q": "ZX-4411"}, {"status__exact": "pending"}]:
        found = listed("shipment", query)
        assert f"{other.number}/S{tracked.pk}" in found and f"{kept.number}/S" not in found, query
    found = listed("shipment", {"q": kept.number})
    assert found.count(f"{kept.number}/S") == 2 and other.number not in found
    east = Shipment.objects.get(order=kept, warehouse__code="EAST")
    found = listed("shipment", {"warehouse__id__exact": east.warehouse_id})
    assert f"{kept.number}/S{east.pk}" in found and f"{other.number}/S" not in found

    record = OrderReturn.objects.get(order=kept)
    for query in [
        {"q": kept.number},
        {"lines__disposition": "damaged"},
        {"lines__warehouse__id__exact": east.warehouse_id},
    ]:
        assert f"{kept.number}/R{record.pk}" in listed("orderreturn", query), query
    assert f"{kept.number}/R" not in listed("orderreturn", {"lines__disposition": "restock"})

    for name, pk in [("shipment", east.pk), ("orderreturn", record.pk)]:
        page = admin.get(url(f"{name}_change", pk))
        assert page.status_code == 200
        assert 'name="_save"' not in page.content.decode()
        assert admin.get(url(f"{name}_add")).status_code == 403
        assert admin.post(url(f"{name}_delete", pk), {"post": "yes"}).status_code == 403
    shipment_page = admin.get(url("shipment_change", east.pk)).content.decode()
    assert re.search(r'field-sku">\s*<p>MUG</p>\s*</td>\s*<td class="field-quantity">\s*<p>2</p>', shipment_page)
    assert "scratched" in admin.get(url("orderreturn_change", record.pk)).content.decode()
    assert Shipment.objects.filter(order=kept).count() == 2 and OrderReturn.objects.count() == 1


def test_shipment_list_does_not_query_per_row(admin, shop, customer):
    def queries_for_page() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert admin.get(url("shipment_changelist")).status_code == 200
        return len(queries)

    fulfilled(customer, ("TEA", 1))
    few = queries_for_page()
    for n in range(4):
        fulfilled(User.objects.create_user(email=f"buyer{n}@example.com"), ("MUG", 1))

    assert queries_for_page() == few

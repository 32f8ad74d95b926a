"""Purchase orders in the admin (inventory/admin/purchase_orders.py): created by a form through
purchase_order_create, received delivery by delivery through purchase_order_receive (the same form
posted twice adds once), cancelled by an action; the order's page is read-only."""

import re

import pytest
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from inventory import reorder, selectors, services
from inventory.admin.purchase_orders import PurchaseOrderAdmin
from inventory.admin.transactions import ServiceTransactionMixin
from inventory.models import PurchaseOrder, PurchaseOrderReceipt, StockLevel, StockMovement
from inventory.selectors import stock_ledger_breaches
from tests.factories import ProductFactory, WarehouseFactory
from tests.inventory.test_admin import form_values
from users.models import User

pytestmark = pytest.mark.django_db


@pytest.fixture
def main():
    return WarehouseFactory(code="MAIN", priority=1)


@pytest.fixture
def east():
    return WarehouseFactory(code="EAST", priority=2)


@pytest.fixture
def products():
    return [ProductFactory(sku="MUG", name="Blue mug"), ProductFactory(sku="TEA", name="Green tea")]


@pytest.fixture
def order(main, products) -> PurchaseOrder:
    """PO for MAIN: 10 MUG and 4 TEA, nothing received yet."""
    return services.purchase_order_create(
        warehouse_code="MAIN", lines=[("MUG", 10), ("TEA", 4)], supplier_reference="SUP-77"
    )


def url(name: str, *args) -> str:
    return reverse(f"admin:inventory_purchaseorder_{name}", args=args)


def messages_of(response) -> list[tuple[str, str]]:
    return [(message.level_tag, str(message)) for message in get_messages(response.wsgi_request)]


def on_hand(sku: str, code: str = "MAIN") -> int:
    level = StockLevel.objects.filter(product__sku=sku, warehouse__code=code).first()
    return level.on_hand if level is not None else 0


def lines_of(order: PurchaseOrder) -> list[tuple[str, int, int]]:
    return [(line.product.sku, line.ordered, line.received) for line in order.lines.order_by("id")]


def add_form(**changes) -> dict:
    data = {"warehouse": "MAIN", "supplier_reference": "SUP-1", "expected_on": "2031-05-04", "note": "", "lines": ""}
    return {**data, **changes}


# --- pages render --------------------------------------------------------------------------------


def test_changelist_and_change_page_render(admin, order):
    services.purchase_order_receive(purchase_order_id=order.pk, key="first", lines=[("MUG", 3)])

    listing = admin.get(url("changelist"))
    page = admin.get(url("change", order.pk))

    assert listing.status_code == 200
    assert page.status_code == 200
    content = page.content.decode()
    assert order.reference in content and "SUP-77" in content
    assert "Deliveries received" in content and "first" in content
    assert "+00:00" not in content  # when it was received, formatted as the admin formats dates
    assert url("receive", order.pk) in content
    # Read-only: nothing to edit, no save button.
    assert 'name="supplier_reference"' not in content
    assert 'name="_save"' not in content


def test_changelist_shows_lines_and_units_still_expected(admin, order):
    services.purchase_order_receive(purchase_order_id=order.pk, key="first", lines=[("MUG", 3)])

    response = admin.get(url("changelist"))

    (row,) = response.context["cl"].result_list
    assert (row.reference, row.line_count, row.expected_units) == (order.reference, 2, 11)


@pytest.mark.parametrize("search", ["MUG", "SUP-77", "po-{pk}", "PO-{pk}"])
def test_changelist_finds_an_order_by_sku_supplier_reference_or_reference(admin, order, main, search):
    other = services.purchase_order_create(warehouse_code="MAIN", lines=[("TEA", 1)], supplier_reference="SUP-9")
    searched = search.format(pk=order.pk)

    response = admin.get(url("changelist"), {"q": searched})

    result = list(response.context["cl"].result_list)
    assert [o.pk for o in result] == [order.pk]
    # A search over the lines does not multiply the figures of an order.
    assert (result[0].line_count, result[0].expected_units) == (2, 14)
    assert other.pk not in [o.pk for o in result]


def test_searching_a_reference_also_finds_a_supplier_reference_that_reads_the_same(admin, order, main):
    theirs = services.purchase_order_create(
        warehouse_code="MAIN", lines=[("TEA", 1)], supplier_reference=f"PO-{order.pk}"
    )

    response = admin.get(url("changelist"), {"q": f"PO-{order.pk}"})

    assert sorted(o.pk for o in response.context["cl"].result_list) == sorted([order.pk, theirs.pk])


def test_changelist_filters_by_status_and_warehouse(admin, order, east):
    elsewhere = services.purchase_order_create(warehouse_code="EAST", lines=[("MUG", 1)])
    services.purchase_order_cancel(purchase_order_id=elsewhere.pk)

    by_status = admin.get(url("changelist"), {"status__exact": "cancelled"})
    by_warehouse = admin.get(url("changelist"), {"warehouse__id__exact": order.warehouse_id})

    assert [o.pk for o in by_status.context["cl"].result_list] == [elsewhere.pk]
    assert by_status.context["cl"].result_list[0].expected_units == 0  # cancelled: nothing expected
    assert [o.pk for o in by_warehouse.context["cl"].result_list] == [order.pk]


def test_changelist_lists_the_newest_first_and_does_not_query_per_row(admin, main, products):
    def queries_for_page() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert admin.get(url("changelist")).status_code == 200
        return len(queries)

    def add_orders(count: int) -> None:
        for _ in range(count):
            services.purchase_order_create(warehouse_code="MAIN", lines=[("MUG", 2), ("TEA", 3)])

    add_orders(2)
    few = queries_for_page()
    add_orders(10)

    assert queries_for_page() == few
    listed = [o.pk for o in admin.get(url("changelist")).context["cl"].result_list]
    assert listed == sorted(listed, reverse=True)


# --- creating --------------------------------------------------------------------------------------


def test_add_page_renders(admin, main):
    response = admin.get(url("add"))

    assert response.status_code == 200
    assert b'name="lines"' in response.content


def test_add_creates_the_order_through_the_service(admin, admin_user, main, products):
    response = admin.post(url("add"), add_form(lines="MUG 24\n\n  TEA\t6  \n"))

    assert response.status_code == 302
    created = PurchaseOrder.objects.get()
    assert lines_of(created) == [("MUG", 24, 0), ("TEA", 6, 0)]
    assert (created.status, created.created_by, created.supplier_reference) == ("open", admin_user, "SUP-1")
    assert str(created.expected_on) == "2031-05-04"
    assert created.warehouse == main
    # Nothing moves on a level until a delivery is received.
    assert not StockMovement.objects.exists()


@pytest.mark.parametrize(
    ("lines", "error"),
    [
        ("MUG 2\nNOPE 3", "Unknown SKU 'NOPE'."),
        ("MUG 2\nTEA 0", "Line 2: the quantity of TEA must be a whole number from 1 to 1,000,000,000."),
        ("MUG 2\nTEA 1\nMUG 5", "Line 3: MUG is already on line 1."),
        ("MUG 2\nsome mugs please", "Line 2 ('some mugs please'): write a SKU, a space and a quantity."),
        ("MUG two", "Line 1: the quantity of MUG must be a whole number from 1 to 1,000,000,000."),
        ("MUG -2", "Line 1: the quantity of MUG must be a whole number from 1 to 1,000,000,000."),
        ("MUG 1.5", "Line 1: the quantity of MUG must be a whole number from 1 to 1,000,000,000."),
        ("M/G 1", "Line 1: 'M/G' is not a SKU (letters, digits, '.', '_' and '-')."),
        ("\n  \n", "Write at least one line: a SKU, a space and a quantity."),
    ],
)
def test_add_with_bad_lines_shows_the_form_again_and_writes_nothing(admin, main, products, lines, error):
    response = admin.post(url("add"), add_form(lines=lines))

    assert response.status_code == 200
    form = response.context["adminform"].form
    assert error in form.errors["lines"]
    assert lines in response.content.decode()  # what was typed, to correct
    assert not PurchaseOrder.objects.exists()


def test_add_names_every_bad_line(admin, main, products):
    response = admin.post(url("add"), add_form(lines="MUG 0\nTEA 1\nTEA 2\njunk"))

    assert response.context["adminform"].form.errors["lines"] == [
        "Line 1: the quantity of MUG must be a whole number from 1 to 1,000,000,000.",
        "Line 3: TEA is already on line 2.",
        "Line 4 ('junk'): write a SKU, a space and a quantity.",
    ]


def test_add_to_an_unknown_warehouse_is_a_form_error(admin, main, products):
    response = admin.post(url("add"), add_form(warehouse="NOWHERE", lines="MUG 1"))

    assert response.status_code == 200
    assert "warehouse" in response.context["adminform"].form.errors
    assert not PurchaseOrder.objects.exists()


# --- receiving a delivery ----------------------------------------------------------------------------


def test_receive_page_is_prefilled_with_what_is_still_expected(admin, order):
    services.purchase_order_receive(purchase_order_id=order.pk, key="first", lines=[("MUG", 4)])

    values = form_values(admin.get(url("receive", order.pk)))

    assert values["lines"].strip().splitlines() == ["MUG 6", "TEA 4"]
    assert re.fullmatch(r"[0-9a-f]{32}", values["key"])
    assert "allow_over_receipt" not in values  # not ticked
    assert form_values(admin.get(url("receive", order.pk)))["key"] != values["key"]  # a new key per form


def test_receiving_adds_stock_and_the_same_form_posted_again_adds_nothing(admin, admin_user, order):
    values = {**form_values(admin.get(url("receive", order.pk))), "lines": "MUG 6\nTEA 4"}

    first = admin.post(url("receive", order.pk), values)
    again = admin.post(url("receive", order.pk), values)

    assert first.status_code == again.status_code == 302
    assert first["Location"] == again["Location"] == url("change", order.pk)
    assert ("success", f"Received 10 units into MAIN for {order.reference}.") in messages_of(first)
    assert ("success", "This delivery was already received; nothing was added.") in messages_of(again)
    assert (on_hand("MUG"), on_hand("TEA")) == (6, 4)
    receipts = StockMovement.objects.filter(reason="receipt").order_by("delta_on_hand")
    assert [(m.level.product.sku, m.delta_on_hand, m.reference, m.actor) for m in receipts] == [
        ("TEA", 4, order.reference, admin_user),
        ("MUG", 6, order.reference, admin_user),
    ]
    order.refresh_from_db()
    assert lines_of(order) == [("MUG", 10, 6), ("TEA", 4, 4)]
    assert order.status == "open"
    (receipt,) = PurchaseOrderReceipt.objects.all()
    assert (receipt.key, receipt.units, receipt.actor) == (values["key"], 10, admin_user)
    assert stock_ledger_breaches() == []


def test_the_delivery_that_completes_the_order_closes_it_and_can_still_be_posted_again(admin, order):
    values = form_values(admin.get(url("receive", order.pk)))  # prefilled: everything outstanding

    first = admin.post(url("receive", order.pk), values)
    again = admin.post(url("receive", order.pk), values)

    assert (
        "success",
        f"Received 14 units into MAIN for {order.reference}. {order.reference} is now received in full.",
    ) in (messages_of(first))
    assert ("success", "This delivery was already received; nothing was added.") in messages_of(again)
    order.refresh_from_db()
    assert order.status == "received"
    assert (on_hand("MUG"), on_hand("TEA")) == (10, 4)
    # A received order offers no more deliveries.
    assert url("receive", order.pk) not in admin.get(url("change", order.pk)).content.decode()
    refused = admin.get(url("receive", order.pk))
    assert refused.status_code == 302
    assert ("warning", f"{order.reference} is received: nothing more to receive.") in messages_of(refused)


def test_a_line_of_zero_is_skipped(admin, order):
    values = {**form_values(admin.get(url("receive", order.pk))), "lines": "MUG 2\nTEA 0"}

    response = admin.post(url("receive", order.pk), values)

    assert response.status_code == 302
    assert (on_hand("MUG"), on_hand("TEA")) == (2, 0)
    assert not StockLevel.objects.filter(product__sku="TEA").exists()


def test_over_receipt_is_refused_unless_allowed(admin, order):
    values = {**form_values(admin.get(url("receive", order.pk))), "lines": "MUG 12"}

    refused = admin.post(url("receive", order.pk), values)

    assert refused.status_code == 200
    assert refused.context["form"].errors["lines"] == ["MUG: 12 received, but only 10 still expected."]
    assert on_hand("MUG") == 0
    assert not PurchaseOrderReceipt.objects.exists()
    # The page keeps the form's key: ticking the box and posting again receives it once.
    assert form_values(refused)["key"] == values["key"]

    allowed = admin.post(url("receive", order.pk), {**form_values(refused), "allow_over_receipt": "on"})

    assert allowed.status_code == 302
    assert on_hand("MUG") == 12
    order.refresh_from_db()
    assert lines_of(order) == [("MUG", 10, 12), ("TEA", 4, 0)]


@pytest.mark.parametrize(
    ("lines", "error"),
    [
        ("MUG 0\nTEA 0", "Nothing to receive: every quantity is 0."),
        ("MUG 1\nMUG 2", "Line 2: MUG is already on line 1."),
        ("MUG lots", "Line 1: the quantity of MUG must be a whole number from 0 to 1,000,000,000."),
        ("", "This field is required."),
    ],
)
def test_bad_delivery_lines_show_the_form_again_and_receive_nothing(admin, order, lines, error):
    values = {**form_values(admin.get(url("receive", order.pk))), "lines": lines}

    response = admin.post(url("receive", order.pk), values)

    assert response.status_code == 200
    assert error in response.context["form"].errors["lines"]
    assert not StockMovement.objects.exists()


def test_a_sku_not_on_the_order_is_refused(admin, order):
    ProductFactory(sku="COFFEE")
    values = {**form_values(admin.get(url("receive", order.pk))), "lines": "MUG 1\nCOFFEE 1"}

    response = admin.post(url("receive", order.pk), values)

    assert response.status_code == 200
    assert response.context["form"].errors["lines"] == ["COFFEE is not on this purchase order."]
    assert not StockMovement.objects.exists()


def test_a_used_form_posted_with_other_lines_is_refused(admin, order):
    values = {**form_values(admin.get(url("receive", order.pk))), "lines": "MUG 2"}
    admin.post(url("receive", order.pk), values)

    response = admin.post(url("receive", order.pk), {**values, "lines": "MUG 3"})

    assert response.status_code == 200
    assert "already used to receive a delivery with other lines" in response.context["form"].non_field_errors()[0]
    assert on_hand("MUG") == 2


def test_a_form_without_its_key_receives_nothing(admin, order):
    response = admin.post(url("receive", order.pk), {"lines": "MUG 2"})

    assert response.status_code == 200
    assert "key" in response.context["form"].errors
    assert on_hand("MUG") == 0


def test_a_delivery_against_a_cancelled_order_is_refused(admin, order):
    values = form_values(admin.get(url("receive", order.pk)))
    services.purchase_order_cancel(purchase_order_id=order.pk)  # someone else, meanwhile

    response = admin.post(url("receive", order.pk), values)

    assert response.status_code == 200
    assert "no longer open" in response.context["form"].non_field_errors()[0]
    assert on_hand("MUG") == 0


def test_receiving_for_a_missing_order_goes_back_to_the_list(admin):
    response = admin.get(url("receive", 999_999))

    assert response.status_code == 302
    assert response["Location"] == url("changelist")


# --- cancelling -----------------------------------------------------------------------------------


def test_cancel_action_reports_which_orders_were_cancelled_and_which_could_not_be(admin, order, main):
    received = services.purchase_order_create(warehouse_code="MAIN", lines=[("MUG", 1)])
    services.purchase_order_receive(purchase_order_id=received.pk, key="all", lines=[("MUG", 1)])
    cancelled = services.purchase_order_create(warehouse_code="MAIN", lines=[("TEA", 1)])
    services.purchase_order_cancel(purchase_order_id=cancelled.pk)

    response = admin.post(
        url("changelist"),
        {"action": "cancel_purchase_orders", "_selected_action": [order.pk, received.pk, cancelled.pk]},
    )

    assert response.status_code == 302
    statuses = dict(PurchaseOrder.objects.values_list("pk", "status"))
    assert statuses == {order.pk: "cancelled", received.pk: "received", cancelled.pk: "cancelled"}
    notes = messages_of(response)
    assert ("success", f"Cancelled: {order.reference}.") in notes
    assert ("info", f"Already cancelled: {cancelled.reference}.") in notes
    assert any(tag == "error" and text.startswith(f"Not cancelled: {received.reference} (") for tag, text in notes)
    # What was received stays on hand.
    assert on_hand("MUG") == 1


# --- permissions ---------------------------------------------------------------------------------


def test_purchase_orders_cannot_be_edited_or_deleted(admin, order):
    assert admin.post(url("change", order.pk), {"supplier_reference": "changed"}).status_code == 403
    assert admin.post(url("delete", order.pk), {"post": "yes"}).status_code == 403
    actions = admin.get(url("changelist")).context["action_form"].fields["action"].choices
    assert [name for name, _ in actions if name] == ["cancel_purchase_orders"]
    order.refresh_from_db()
    assert order.supplier_reference == "SUP-77"


def test_staff_without_the_change_permission_cannot_receive_or_cancel(order, staff_user):
    staff_user.user_permissions.add(Permission.objects.get(codename="view_purchaseorder"))
    client = Client()
    client.force_login(staff_user)

    page = client.get(url("change", order.pk))
    assert page.status_code == 200
    assert url("receive", order.pk) not in page.content.decode()
    assert "MUG" in page.content.decode()  # the lines, part of the order
    assert client.get(url("receive", order.pk)).status_code == 403
    assert client.post(url("receive", order.pk), {"lines": "MUG 2", "key": "k"}).status_code == 403
    client.post(url("changelist"), {"action": "cancel_purchase_orders", "_selected_action": [order.pk]})

    order.refresh_from_db()
    assert order.status == "open"
    assert on_hand("MUG") == 0


# --- transactions -------------------------------------------------------------------------------


def test_the_admin_lets_its_services_open_the_transaction():
    assert issubclass(PurchaseOrderAdmin, ServiceTransactionMixin)


@pytest.mark.django_db(transaction=True)
def test_posted_add_and_delivery_run_their_services_as_the_outermost_transaction(main, products):
    client = Client()
    client.force_login(
        User.objects.create_user(email="admin@example.com", password="x" * 20, is_staff=True, is_superuser=True)
    )
    depths = []

    def observe(execute, sql, params, many, context):
        # The create's INSERT (the ORM's) and the receipt's set-based UPDATE (services._apply_deltas).
        if sql.lstrip().startswith(('INSERT INTO "inventory_purchaseorder"', "UPDATE inventory_stocklevel")):
            depths.append(len(connection.atomic_blocks))  # 1: the service's own transaction
        return execute(sql, params, many, context)

    with connection.execute_wrapper(observe):
        added = client.post(url("add"), add_form(lines="MUG 3"))
        created = PurchaseOrder.objects.get()
        values = form_values(client.get(url("receive", created.pk)))
        received = client.post(url("receive", created.pk), values)

    assert (added.status_code, received.status_code) == (302, 302)
    assert depths == [1, 1]
    assert on_hand("MUG") == 3


# --- drafts of the reorder job (inventory/reorder.py) ---------------------------------------------


@pytest.fixture
def draft(main, products) -> PurchaseOrder:
    """The reorder job's draft for MAIN: 8 MUG and 10 TEA (2 MUG on hand, reorder points 10)."""
    services.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=2)
    services.stock_receive(sku="TEA", warehouse_code="MAIN", quantity=1)
    services.stock_adjust(sku="TEA", warehouse_code="MAIN", delta=-1)
    StockLevel.objects.update(reorder_point=10)  # fixture setup: the level settings are not this feature's
    (draft,) = reorder.reorder_proposals_draft()
    return draft


def incoming(sku: str) -> int:
    return selectors.stock_levels(sku=sku, warehouse_code="MAIN").get().incoming


def test_propose_now_runs_the_job_for_this_user_and_lists_the_drafts(admin, admin_user, main, products):
    services.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=2)
    StockLevel.objects.update(reorder_point=10, reorder_quantity=12)
    listing = admin.get(url("changelist"))
    assert url("propose") in listing.content.decode()

    response = admin.post(url("propose"))

    draft = PurchaseOrder.objects.get()
    assert response.status_code == 302 and response.url == url("changelist")
    assert (draft.status, draft.created_by, lines_of(draft)) == ("draft", admin_user, [("MUG", 12, 0)])
    assert messages_of(response) == [
        (
            "success",
            f"Proposed 1 draft purchase order: {draft.reference}. Check the lines, then confirm or discard each.",
        )
    ]
    again = admin.post(url("propose"))
    assert messages_of(again)[-1][0] == "info" and PurchaseOrder.objects.count() == 1
    assert admin.get(url("propose")).status_code == 405
    listed = admin.get(url("changelist"), {"status__exact": "draft"})
    assert [o.pk for o in listed.context["cl"].result_list] == [draft.pk]
    assert "Draft" in listed.content.decode()


def test_a_drafts_page_offers_edit_confirm_and_discard_but_not_receiving(admin, draft):
    page = admin.get(url("change", draft.pk)).content.decode()

    assert url("edit_lines", draft.pk) in page and url("confirm", draft.pk) in page and url("discard", draft.pk) in page
    assert url("receive", draft.pk) not in page
    assert "csrfmiddlewaretoken" in page
    response = admin.get(url("receive", draft.pk))
    assert response.status_code == 302 and on_hand("MUG") == 2


def test_confirm_opens_the_draft_and_makes_it_incoming(admin, draft):
    response = admin.post(url("confirm", draft.pk), {"version": str(draft.version)})

    assert response.status_code == 302 and response.url == url("change", draft.pk)
    draft.refresh_from_db()
    assert draft.status == "open"
    assert incoming("MUG") == 8
    assert messages_of(response) == [
        ("success", f"Confirmed {draft.reference}: it is open, and its lines are incoming.")
    ]
    page = admin.get(url("change", draft.pk)).content.decode()
    assert url("receive", draft.pk) in page and url("confirm", draft.pk) not in page

    twice = admin.post(url("confirm", draft.pk), {"version": "2"})
    assert messages_of(twice)[-1][0] == "error" and "not confirmed" in messages_of(twice)[-1][1]
    assert admin.get(url("confirm", draft.pk)).status_code == 405


def test_confirm_with_the_version_of_a_stale_page_is_refused(admin, draft):
    reorder.purchase_order_draft_update(purchase_order_id=draft.pk, lines=[("MUG", 9)])

    response = admin.post(url("confirm", draft.pk), {"version": "1"})

    assert messages_of(response)[0][0] == "error"
    draft.refresh_from_db()
    assert draft.status == "draft"


def test_discard_cancels_the_draft_but_never_an_order_confirmed_meanwhile(admin, draft):
    assert reorder.reorder_proposals_draft() == []  # nothing more to propose while the draft stands
    response = admin.post(url("discard", draft.pk), {"version": "1"})

    draft.refresh_from_db()
    assert draft.status == "cancelled"
    assert messages_of(response) == [("success", f"Discarded {draft.reference}.")]

    (second,) = reorder.reorder_proposals_draft()
    reorder.purchase_order_confirm(purchase_order_id=second.pk)
    refused = admin.post(url("discard", second.pk), {"version": "1"})
    second.refresh_from_db()
    assert second.status == "open"
    assert messages_of(refused)[-1][0] == "error"


def test_edit_lines_sets_quantities_drops_and_adds_lines(admin, draft):
    page = admin.get(url("edit_lines", draft.pk))
    values = form_values(page)
    assert values["lines"].split() == ["MUG", "8", "TEA", "10"] and values["version"] == "1"

    response = admin.post(url("edit_lines", draft.pk), {**values, "lines": "MUG 20\nPEN-X 1"})
    assert response.status_code == 200  # unknown SKU: the form again
    assert "Unknown SKU" in response.content.decode()
    ProductFactory(sku="PEN")
    response = admin.post(url("edit_lines", draft.pk), {**values, "lines": "MUG 20\nPEN 3"})

    assert response.status_code == 302
    assert lines_of(draft) == [("MUG", 20, 0), ("PEN", 3, 0)]
    stale = admin.post(url("edit_lines", draft.pk), {**values, "lines": "MUG 1"})
    assert "changed by someone else" in stale.content.decode()
    assert lines_of(draft) == [("MUG", 20, 0), ("PEN", 3, 0)]


def test_staff_without_the_change_permission_cannot_confirm_discard_or_edit(draft, staff_user):
    staff_user.user_permissions.add(Permission.objects.get(codename="view_purchaseorder"))
    client = Client()
    client.force_login(staff_user)

    page = client.get(url("change", draft.pk)).content.decode()
    assert url("confirm", draft.pk) not in page and url("discard", draft.pk) not in page
    assert url("propose") not in client.get(url("changelist")).content.decode()
    assert client.post(url("confirm", draft.pk), {"version": "1"}).status_code == 403
    assert client.post(url("discard", draft.pk), {"version": "1"}).status_code == 403
    assert client.post(url("edit_lines", draft.pk), {"lines": "MUG 1", "version": "1"}).status_code == 403
    assert client.post(url("propose")).status_code == 403
    draft.refresh_from_db()
    assert (draft.status, draft.version) == ("draft", 1)

"""The orders admin: read-only pages, transitions through the services, per-order reports."""

import re
import threading
import uuid
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from inventory.models import StockLevel, StockMovement
from orders import services
from orders.api import render_order
from orders.errors import ReservationExpired
from orders.models import IdempotencyKey, Order
from tests.invariants import assert_stock_invariants
from tests.orders.conftest import ADDRESS
from users.models import User

pytestmark = pytest.mark.django_db


def url(name: str, *args) -> str:
    return reverse(f"admin:orders_{name}", args=args)


def place(user, *lines, reference: str = "", key: str | None = None) -> Order:
    result = services.order_place(
        user=user,
        lines=[services.OrderLineRequest(sku, quantity) for sku, quantity in lines],
        shipping_address=ADDRESS,
        render=render_order,
        reference=reference,
        idempotency_key=key,
        fingerprint=f"{lines}" if key else "",
    )
    return result.order


def order_in(status: str, user, *lines) -> Order:
    """An order taken to `status` through the services, as staff and shoppers would."""
    order = place(user, *(lines or [("MUG", 1)]))
    if status in {"paid", "fulfilled", "returned"}:
        services.order_pay(order_id=order.pk)
    if status in {"fulfilled", "returned"}:
        services.order_fulfil(order_id=order.pk)
    if status == "returned":
        services.order_return(order_id=order.pk)
    if status == "cancelled":
        services.order_cancel(order_id=order.pk)
    if status == "expired":
        Order.objects.filter(pk=order.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
        services.order_expire(order_id=order.pk)
    order.refresh_from_db()
    assert order.status == status
    return order


def notes(response) -> list[tuple[str, str]]:
    return [(message.level_tag, str(message)) for message in get_messages(response.wsgi_request)]


def statuses(*orders: Order) -> list[str]:
    return [Order.objects.get(pk=order.pk).status for order in orders]


def stock_figures() -> list[tuple[str, str, int, int]]:
    levels = StockLevel.objects.select_related("product", "warehouse").order_by("pk")
    return [(level.product.sku, level.warehouse.code, level.on_hand, level.reserved) for level in levels]


def run_action(admin, action: str, *orders: Order):
    return admin.post(url("order_changelist"), {"action": action, "_selected_action": [o.pk for o in orders]})


# --- pages ------------------------------------------------------------------------------------------


def test_changelist_shows_the_orders_columns(admin, shop, customer):
    order = place(customer, ("MUG", 2), reference="PO-77")

    response = admin.get(url("order_changelist"))

    assert response.status_code == 200
    content = response.content.decode()
    for text in [order.number, "customer@example.com", "reserved", "25.00", order.currency]:
        assert text in content
    assert 'value="pay_orders"' in content and 'value="return_orders"' in content
    assert 'value="delete_selected"' not in content


@pytest.mark.parametrize(
    ("query", "only_it"),
    [
        ({"q": "{number}"}, True),
        ({"q": "customer@example"}, True),
        ({"q": "PO-77"}, True),
        ({"status__exact": "reserved"}, True),
        ({"created_at__gte": "{yesterday}"}, False),
        ({"expires_at__gte": "{yesterday}"}, False),
        ({"created_at__year": "{year}"}, False),
    ],
)
def test_changelist_search_and_filters_find_the_order(admin, shop, customer, staff_user, query, only_it):
    order = place(customer, ("MUG", 1), reference="PO-77")
    other = order_in("cancelled", staff_user, ("TEA", 1))
    yesterday = timezone.now() - timedelta(days=1)
    values = {
        k: v.format(number=order.number, yesterday=yesterday.isoformat(), year=yesterday.year) for k, v in query.items()
    }

    response = admin.get(url("order_changelist"), values)

    assert response.status_code == 200
    content = response.content.decode()
    assert order.number in content
    assert (other.number not in content) is only_it


def test_changelist_does_not_query_per_row(admin, shop, customer):
    def queries_for_page() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert admin.get(url("order_changelist")).status_code == 200
        return len(queries)

    place(customer, ("TEA", 1))
    few = queries_for_page()
    for n in range(6):
        place(User.objects.create_user(email=f"buyer{n}@example.com"), ("MUG", 1))

    assert queries_for_page() == few


def test_change_page_shows_lines_with_their_allocations_and_moves(admin, shop, customer):
    order = place(customer, ("MUG", 7), ("TEA", 1), reference="PO-9")

    response = admin.get(url("order_change", order.pk))

    assert response.status_code == 200
    content = response.content.decode()
    assert "Lines and allocations" in content
    assert order.number in content and "PO-9" in content and "Ada Lovelace" in content
    # MUG splits by warehouse priority: 5 from MAIN, 2 from EAST; TEA comes from MAIN.
    assert re.search(r">MAIN</a>: 5, <a [^>]*>EAST</a>: 2", content)
    assert re.search(r">MAIN</a>: 1<", content)
    assert "12.50" in content and "4.00" in content
    # Moves offered from `reserved`, with the version the page shows.
    assert re.search(r'<input type="hidden" name="expected_version" value="1"', content)
    assert 'name="transition" value="pay"' in content and 'name="transition" value="cancel"' in content
    assert 'value="fulfil"' not in content and 'value="return"' not in content
    # Nothing on the page is an editable field of the order or its lines.
    assert 'name="_save"' not in content and 'name="status"' not in content and 'name="lines-0-quantity"' not in content


def test_change_page_of_a_cancelled_order_offers_no_move(admin, shop, customer):
    order = order_in("cancelled", customer)

    response = admin.get(url("order_change", order.pk))

    assert response.status_code == 200
    assert 'name="transition"' not in response.content.decode()
    assert "has no further moves" in response.content.decode()


def test_change_page_of_an_order_past_its_time_does_not_offer_pay(admin, shop, customer):
    order = place(customer, ("MUG", 1))
    Order.objects.filter(pk=order.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    content = admin.get(url("order_change", order.pk)).content.decode()

    assert 'value="pay"' not in content and 'value="cancel"' in content


def test_change_page_queries_do_not_grow_with_lines(admin, shop, customer):
    def queries_for(order: Order) -> int:
        with CaptureQueriesContext(connection) as queries:
            assert admin.get(url("order_change", order.pk)).status_code == 200
        return len(queries)

    one_line = place(customer, ("TEA", 1))
    two_lines_split = place(customer, ("MUG", 7), ("TEA", 1))

    assert queries_for(two_lines_split) == queries_for(one_line)


def test_orders_cannot_be_added_edited_or_deleted(admin, shop, customer):
    order = place(customer, ("MUG", 2))

    assert admin.get(url("order_add")).status_code == 403
    response = admin.post(url("order_change", order.pk), {"status": "paid", "total": "0.01", "version": "9"})
    assert response.status_code == 403
    assert admin.post(url("order_delete", order.pk), {"post": "yes"}).status_code == 403
    order.refresh_from_db()
    assert (order.status, str(order.total), order.version) == ("reserved", "25.00", 1)


# --- actions on the list ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "done", "before", "after"),
    [
        ("pay_orders", "paid", ["reserved", "paid", "reserved", "cancelled"], ["paid", "paid", "paid", "cancelled"]),
        (
            "fulfil_orders",
            "fulfilled",
            ["paid", "reserved", "paid", "fulfilled"],
            ["fulfilled", "reserved", "fulfilled", "fulfilled"],
        ),
        (
            "cancel_orders",
            "cancelled",
            ["reserved", "paid", "fulfilled", "expired"],
            ["cancelled", "cancelled", "fulfilled", "expired"],
        ),
        ("return_orders", "returned", ["fulfilled", "paid", "returned"], ["returned", "paid", "returned"]),
    ],
)
def test_each_action_moves_the_allowed_orders_and_reports_each_refusal(
    admin, shop, customer, action, done, before, after
):
    orders = [order_in(status, customer) for status in before]

    response = run_action(admin, action, *orders)

    assert response.status_code == 302
    assert statuses(*orders) == after
    moved = [o.number for o, b, a in zip(orders, before, after, strict=True) if a == done and b != done]
    refused = [o for o, b, a in zip(orders, before, after, strict=True) if not (a == done and b != done)]
    reported = notes(response)
    successes = [text for tag, text in reported if tag == "success"]
    errors = [text for tag, text in reported if tag == "error"]
    assert successes == [f"{done.capitalize()} {len(moved)} order{'s' if len(moved) > 1 else ''}: {', '.join(moved)}."]
    assert len(errors) == len(refused)
    for order in refused:
        (message,) = [text for text in errors if text.startswith(f"{order.number} was not {done}: ")]
        assert f"{order.status} order cannot do this" in message
    assert_stock_invariants()


def test_pay_action_refuses_an_order_whose_time_ran_out_before_the_sweep(admin, shop, customer):
    on_time = place(customer, ("MUG", 1))
    late = place(customer, ("TEA", 2))
    Order.objects.filter(pk=late.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    response = run_action(admin, "pay_orders", late, on_time)

    assert statuses(late, on_time) == ["reserved", "paid"]
    assert ("success", f"Paid 1 order: {on_time.number}.") in notes(response)
    assert ("error", f"{late.number} was not paid: {ReservationExpired.default_detail}") in notes(response)
    assert_stock_invariants()


def test_actions_release_consume_and_restock_with_ledger_rows(admin, admin_user, shop, customer):
    kept = place(customer, ("MUG", 7))  # 5 from MAIN, 2 from EAST
    dropped = place(customer, ("TEA", 2))

    run_action(admin, "pay_orders", kept)
    run_action(admin, "cancel_orders", dropped)
    assert stock_figures() == [("MUG", "MAIN", 5, 5), ("MUG", "EAST", 5, 2), ("TEA", "MAIN", 3, 0)]
    run_action(admin, "fulfil_orders", kept)
    assert stock_figures() == [("MUG", "MAIN", 0, 0), ("MUG", "EAST", 3, 0), ("TEA", "MAIN", 3, 0)]
    run_action(admin, "return_orders", kept)

    assert stock_figures() == [("MUG", "MAIN", 5, 0), ("MUG", "EAST", 5, 0), ("TEA", "MAIN", 3, 0)]
    by_staff = StockMovement.objects.filter(actor=admin_user)
    assert set(by_staff.values_list("reason", flat=True)) == {"release", "fulfilment", "return"}
    assert_stock_invariants()


def test_actions_are_logged_in_the_admin_history(admin, shop, customer):
    order = place(customer, ("MUG", 1))

    run_action(admin, "pay_orders", order)

    history = admin.get(url("order_history", order.pk))
    assert history.status_code == 200
    assert "Pay (admin action)." in history.content.decode()


def test_too_large_a_selection_is_refused_whole(admin, shop, customer, monkeypatch):
    from orders import admin as orders_admin

    monkeypatch.setattr(orders_admin, "MAX_ORDERS_PER_ACTION", 2)
    orders = [place(customer, ("MUG", 1)) for _ in range(3)]

    response = run_action(admin, "pay_orders", *orders)

    assert statuses(*orders) == ["reserved"] * 3
    assert [tag for tag, _ in notes(response)] == ["error"]
    assert "at most 2 orders" in notes(response)[0][1]


# --- buttons on the order's page --------------------------------------------------------------------


def hidden_version(response) -> str:
    return re.search(r'name="expected_version" value="(\d+)"', response.content.decode()).group(1)


def test_page_button_moves_the_order_with_the_version_it_showed(admin, shop, customer):
    order = place(customer, ("MUG", 2))
    page = admin.get(url("order_change", order.pk))

    response = admin.post(
        url("order_transition", order.pk), {"transition": "pay", "expected_version": hidden_version(page)}
    )

    assert response.status_code == 302
    assert response["Location"] == url("order_change", order.pk)
    order.refresh_from_db()
    assert (order.status, order.version) == ("paid", 2)
    assert ("success", f"{order.number} paid (now version 2).") in notes(response)
    after = admin.get(response["Location"])
    assert hidden_version(after) == "2"
    assert 'value="fulfil"' in after.content.decode()
    assert_stock_invariants()


def test_page_button_from_a_stale_page_is_refused_and_changes_nothing(admin, shop, customer):
    order = place(customer, ("MUG", 2))
    page = admin.get(url("order_change", order.pk))  # shows version 1, reserved: "Cancel" offered
    services.order_pay(order_id=order.pk)  # someone else, meanwhile
    figures, movements = stock_figures(), StockMovement.objects.count()

    response = admin.post(
        url("order_transition", order.pk), {"transition": "cancel", "expected_version": hidden_version(page)}
    )

    assert response.status_code == 302
    order.refresh_from_db()
    assert (order.status, order.version) == ("paid", 2)
    assert stock_figures() == figures
    assert StockMovement.objects.count() == movements
    ((tag, text),) = notes(response)
    assert tag == "error"
    assert text.startswith(f"{order.number} was not cancelled: it was changed by someone else")
    assert "now at version 2" in text
    assert_stock_invariants()


def test_page_button_refusal_from_the_service_is_shown(admin, shop, customer):
    order = place(customer, ("MUG", 2))

    response = admin.post(url("order_transition", order.pk), {"transition": "return", "expected_version": "1"})

    order.refresh_from_db()
    assert order.status == "reserved"
    assert notes(response) == [("error", f"{order.number} was not returned: A reserved order cannot do this.")]


@pytest.mark.parametrize(
    "data",
    [
        {"transition": "pay"},
        {"transition": "pay", "expected_version": "x"},
        {"transition": "ship", "expected_version": "1"},
    ],
)
def test_page_button_with_bad_input_changes_nothing(admin, shop, customer, data):
    order = place(customer, ("MUG", 2))

    response = admin.post(url("order_transition", order.pk), data)

    assert response.status_code == 302
    order.refresh_from_db()
    assert order.status == "reserved"
    assert [tag for tag, _ in notes(response)] == ["error"]


def test_page_button_needs_post_and_an_existing_order(admin, shop, customer):
    order = place(customer, ("MUG", 2))

    assert admin.get(url("order_transition", order.pk)).status_code == 405
    missing = admin.post(url("order_transition", 999_999), {"transition": "pay", "expected_version": "1"})
    assert missing.status_code == 302
    assert missing["Location"] == url("order_changelist")


# --- who may use it ---------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["anonymous", "customer", "inactive_staff"])
def test_non_staff_are_sent_to_the_admin_login(shop, customer, who):
    order = place(customer, ("MUG", 2))
    client = Client()
    if who == "customer":
        client.force_login(customer)
    elif who == "inactive_staff":
        client.force_login(User.objects.create_user(email="gone@example.com", is_staff=True, is_active=False))
    login = reverse("admin:login")

    for page in [url("order_changelist"), url("order_change", order.pk), url("idempotencykey_changelist")]:
        response = client.get(page)
        assert response.status_code == 302, page
        assert response["Location"].startswith(login), page
    for target, data in [
        (url("order_changelist"), {"action": "pay_orders", "_selected_action": [order.pk]}),
        (url("order_transition", order.pk), {"transition": "pay", "expected_version": "1"}),
    ]:
        response = client.post(target, data)
        assert response.status_code == 302
        assert response["Location"].startswith(login)
    assert statuses(order) == ["reserved"]


def test_staff_who_may_only_view_orders_cannot_move_them(shop, customer, staff_user):
    staff_user.user_permissions.add(Permission.objects.get(codename="view_order"))
    client = Client()
    client.force_login(staff_user)
    order = place(customer, ("MUG", 7))

    page = client.get(url("order_change", order.pk))
    assert page.status_code == 200
    assert 'name="transition"' not in page.content.decode()
    assert "EAST" in page.content.decode()  # lines and allocations are part of what they may see
    listing = client.get(url("order_changelist"))
    assert listing.status_code == 200 and 'value="pay_orders"' not in listing.content.decode()
    response = client.post(url("order_transition", order.pk), {"transition": "pay", "expected_version": "1"})
    assert response.status_code == 403
    client.post(url("order_changelist"), {"action": "pay_orders", "_selected_action": [order.pk]})
    assert statuses(order) == ["reserved"]


# --- idempotency keys -------------------------------------------------------------------------------


def test_idempotency_keys_are_listed_searched_and_filtered(admin, shop, customer):
    order = place(customer, ("MUG", 1), key="checkout-123")
    IdempotencyKey.objects.create(
        user=User.objects.create_user(email="other@example.com"),
        key="other-key",
        fingerprint="x",
        lease_expires_at=timezone.now(),
    )

    listing = admin.get(url("idempotencykey_changelist"))
    assert listing.status_code == 200
    content = listing.content.decode()
    assert "checkout-123" in content and "customer@example.com" in content and order.number in content
    for query in [{"q": "checkout"}, {"q": "customer@"}, {"state__exact": "complete"}]:
        found = admin.get(url("idempotencykey_changelist"), query).content.decode()
        assert "checkout-123" in found and "other-key" not in found, query
    found = admin.get(url("idempotencykey_changelist"), {"state__exact": "in_flight"}).content.decode()
    assert "other-key" in found and "checkout-123" not in found


def test_idempotency_keys_are_read_only(admin, shop, customer):
    place(customer, ("MUG", 1), key="checkout-123")
    key = IdempotencyKey.objects.get(key="checkout-123")

    page = admin.get(url("idempotencykey_change", key.pk))
    assert page.status_code == 200
    assert "201" in page.content.decode() and 'name="_save"' not in page.content.decode()
    assert admin.get(url("idempotencykey_add")).status_code == 403
    assert admin.post(url("idempotencykey_change", key.pk), {"key": "changed"}).status_code == 403
    assert admin.post(url("idempotencykey_delete", key.pk), {"post": "yes"}).status_code == 403
    key.refresh_from_db()
    assert (key.key, key.state) == ("checkout-123", "complete")


# --- real lock contention ---------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_an_order_locked_elsewhere_is_reported_busy_and_the_others_still_move(admin, shop, customer):
    first, held, last = (place(customer, ("MUG", 1), key=uuid.uuid4().hex) for _ in range(3))
    locked, release = threading.Event(), threading.Event()

    def hold_the_order_row():
        try:
            with transaction.atomic():
                list(Order.objects.select_for_update().filter(pk=held.pk))
                locked.set()
                release.wait(timeout=30)
        finally:
            connection.close()

    holder = threading.Thread(target=hold_the_order_row)
    holder.start()
    assert locked.wait(timeout=10)
    with connection.cursor() as cursor:
        # This test's own connection only (reset below): wait briefly for the lock before retrying.
        cursor.execute("SET lock_timeout = '100ms'")
    try:
        response = run_action(admin, "pay_orders", first, held, last)
    finally:
        release.set()
        holder.join(timeout=10)
        with connection.cursor() as cursor:
            cursor.execute("RESET lock_timeout")

    assert statuses(first, held, last) == ["paid", "reserved", "paid"]
    assert ("success", f"Paid 2 orders: {first.number}, {last.number}.") in notes(response)
    assert ("error", f"{held.number} was not paid: The stock is busy right now; retry shortly.") in notes(response)
    assert_stock_invariants()

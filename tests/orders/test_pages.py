"""Cart, checkout and order pages: what the shopper sees, bad input, tampering and CSRF."""

import re
import uuid
from datetime import timedelta

import pytest
from django.contrib.messages import get_messages
from django.test import Client, TestCase
from django.utils import timezone

from inventory.models import Product, StockLevel
from inventory.services import product_update
from orders.forms import sign_basket, unsign_basket
from orders.models import IdempotencyKey, Order
from tests.factories import UserFactory
from tests.invariants import assert_stock_invariants

pytestmark = pytest.mark.django_db

ADDRESS = {
    "name": "Ada Lovelace",
    "line1": "12 Analytical St",
    "city": "London",
    "postal_code": "N1 9GU",
    "country": "GB",
}


def texts(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def cart_of(client) -> dict:
    return client.session.get("cart", {})


def reserved(sku: str) -> int:
    return sum(StockLevel.objects.filter(product__sku=sku).values_list("reserved", flat=True))


def retire(sku: str) -> None:
    """Stop selling a product the way staff do (through the service, which invalidates its cache
    on commit; the test transaction never commits, so the callbacks are run here)."""
    product = Product.objects.get(sku=sku)
    with TestCase.captureOnCommitCallbacks(execute=True):
        product_update(sku=sku, expected_version=product.version, changes={"active": False})


def add(client, sku: str, quantity) -> object:
    return client.post("/cart/add/", {"sku": sku, "quantity": quantity})


def checkout_form(client) -> dict:
    """The hidden fields a rendered checkout page carries, plus an address."""
    response = client.get("/checkout/")
    assert response.status_code == 200
    form = response.context["form"]
    return {**ADDRESS, "idempotency_key": form["idempotency_key"].value(), "basket": form["basket"].value()}


def place(client, *lines) -> tuple[object, dict]:
    for sku, quantity in lines:
        add(client, sku, quantity)
    data = checkout_form(client)
    return client.post("/checkout/", data), data


@pytest.fixture
def shopper(client, customer):
    client.force_login(customer)
    return client


@pytest.fixture
def placed(shop, shopper) -> Order:
    response, _ = place(shopper, ("MUG", 2), ("TEA", 1))
    assert response.status_code == 302
    return Order.objects.get()


# --- cart -----------------------------------------------------------------------------------


def test_add_change_remove_and_empty_the_cart(shop, client):
    assert add(client, "MUG", 2).status_code == 302
    add(client, "MUG", 1)
    add(client, "TEA", 1)
    assert cart_of(client) == {"MUG": 3, "TEA": 1}
    page = client.get("/cart/")
    assert page.status_code == 200
    assert "41.50 EUR" in page.content.decode()  # 3 x 12.50 + 4.00

    client.post("/cart/set/", {"sku": "MUG", "quantity": 5})
    assert cart_of(client) == {"MUG": 5, "TEA": 1}
    client.post("/cart/remove/", {"sku": "TEA"})
    assert cart_of(client) == {"MUG": 5}
    response = client.post("/cart/empty/")
    assert response.status_code == 302 and cart_of(client) == {}


def test_add_goes_back_to_the_product_page(shop, client):
    response = client.post("/cart/add/", {"sku": "MUG", "quantity": 1, "next": "/products/MUG/"})
    assert response["Location"] == "/products/MUG/"
    for offsite in ["//evil.example/", "/\\evil.example/", "https://evil.example/", "javascript:alert(1)"]:
        response = client.post("/cart/add/", {"sku": "MUG", "quantity": 1, "next": offsite})
        assert response["Location"] == "/cart/", offsite


@pytest.mark.parametrize("quantity", ["0", "-1", "abc", "1.5", "", "1e3", "1001", "\x00", "9" * 30, " "])
def test_bad_quantities_are_refused_with_a_message_and_nothing_is_lost(shop, client, quantity):
    add(client, "MUG", 2)
    response = add(client, "MUG", quantity)
    assert response.status_code == 302
    assert any("Nothing was added" in text for text in texts(response))
    assert cart_of(client) == {"MUG": 2}
    changed = client.post("/cart/set/", {"sku": "MUG", "quantity": quantity})
    assert changed.status_code == 302
    assert any("not changed" in text for text in texts(changed))
    assert cart_of(client) == {"MUG": 2}


def test_a_cart_line_is_capped_at_the_order_maximum(shop, client, settings):
    settings.ORDER_MAX_QUANTITY = 10
    add(client, "MUG", 8)
    response = add(client, "MUG", 5)
    assert any("At most 10" in text for text in texts(response))
    assert cart_of(client) == {"MUG": 8}


@pytest.mark.parametrize("sku", ["NOPE", "bad sku!", "", "\x00", "x" * 65])
def test_unknown_or_malformed_skus_are_refused(shop, client, sku):
    response = add(client, sku, 1)
    assert response.status_code == 302
    assert any("Nothing was added" in text for text in texts(response))
    assert cart_of(client) == {}


def test_inactive_products_cannot_be_added(shop, client):
    retire("TEA")
    response = add(client, "TEA", 1)
    assert any("no product 'TEA' for sale" in text for text in texts(response))
    assert cart_of(client) == {}


def test_changing_or_removing_what_is_not_in_the_cart_says_so(shop, client):
    add(client, "MUG", 1)
    assert any("not in your cart" in t for t in texts(client.post("/cart/set/", {"sku": "TEA", "quantity": 2})))
    assert any("not in your cart" in t for t in texts(client.post("/cart/remove/", {"sku": "TEA"})))
    assert any("not in your cart" in t for t in texts(client.post("/cart/remove/", {})))
    assert cart_of(client) == {"MUG": 1}


def _tamper(client, value) -> None:
    session = client.session
    session["cart"] = value
    session.save()


def test_a_cart_that_is_not_a_mapping_is_emptied_with_a_message(shop, client):
    add(client, "MUG", 1)
    _tamper(client, ["MUG", 1])
    response = client.get("/cart/")
    assert response.status_code == 200
    assert any("could not be read" in text for text in texts(response))
    assert cart_of(client) == {}


def test_tampered_lines_are_dropped_and_good_lines_kept(shop, client):
    add(client, "MUG", 1)
    _tamper(client, {"MUG": 2, "TEA": "lots", "bad sku!": 1, "X1": -3, "X2": True, "X3": 10**9, "X4": 1.5})
    assert 'class="badge">2<' in client.get("/").content.decode()  # the header counts good lines only
    response = client.get("/cart/")
    assert response.status_code == 200
    assert any("6 cart lines could not be read" in text for text in texts(response))
    assert cart_of(client) == {"MUG": 2}


def test_unknown_and_retired_skus_in_the_session_are_removed_by_name(shop, client):
    add(client, "MUG", 1)
    add(client, "TEA", 1)
    _tamper(client, {"MUG": 1, "TEA": 1, "GHOST": 2})
    retire("TEA")
    response = client.get("/cart/")
    assert response.status_code == 200
    assert any("GHOST" in text and "TEA" in text for text in texts(response))
    assert cart_of(client) == {"MUG": 1}


def test_the_cart_survives_logging_in(shop, client, customer):
    add(client, "MUG", 2)
    before = client.session.session_key
    response = client.post("/accounts/login/", {"username": customer.email, "password": "correct horse battery staple"})
    assert response.status_code == 302
    assert client.session.session_key != before  # the key was cycled (no session fixation)...
    assert cart_of(client) == {"MUG": 2}  # ...and the cart kept
    assert "25.00 EUR" in client.get("/cart/").content.decode()


def test_logging_out_empties_the_cart(shop, shopper):
    add(shopper, "MUG", 2)
    shopper.post("/accounts/logout/")
    assert cart_of(shopper) == {}


# --- checkout -------------------------------------------------------------------------------


def test_checkout_needs_a_login(shop, client):
    add(client, "MUG", 1)
    response = client.get("/checkout/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/checkout/"


def test_checkout_of_an_empty_cart_goes_back_to_the_cart(shop, shopper):
    response = shopper.get("/checkout/")
    assert response.status_code == 302 and response["Location"] == "/cart/"


def test_checkout_places_the_order_and_reserves_stock(shop, shopper, customer):
    response, _ = place(shopper, ("MUG", 2), ("TEA", 1))
    order = Order.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/orders/{order.number}/"
    assert order.user == customer and order.status == "reserved" and str(order.total) == "29.00"
    assert order.shipping_city == "London" and order.shipping_country == "GB"
    assert reserved("MUG") == 2 and reserved("TEA") == 1
    assert cart_of(shopper) == {}
    page = shopper.get(response["Location"]).content.decode()
    assert "left to pay" in page and re.search(r"1[45] min", page)
    assert_stock_invariants()


def test_a_double_submitted_checkout_places_one_order(shop, shopper):
    first, data = place(shopper, ("MUG", 2))
    second = shopper.post("/checkout/", data)
    assert Order.objects.count() == 1
    number = Order.objects.get().number
    assert second.status_code == 302 and second["Location"] == first["Location"] == f"/orders/{number}/"
    assert any("already placed" in text for text in texts(second))
    assert reserved("MUG") == 2
    assert_stock_invariants()


def test_checkout_keys_do_not_collide_with_api_keys(shop, shopper, customer):
    place(shopper, ("MUG", 1))
    assert IdempotencyKey.objects.get(user=customer).key.startswith("checkout-page:")


def test_lower_case_country_is_accepted(shop, shopper):
    add(shopper, "MUG", 1)
    response = shopper.post("/checkout/", {**checkout_form(shopper), "country": "gb"})
    assert response.status_code == 302
    assert Order.objects.get().shipping_country == "GB"


@pytest.mark.parametrize(
    ("field", "value"),
    [("country", "GBR"), ("country", "1"), ("name", ""), ("city", "x" * 101), ("line1", "a\x00b"), ("postal_code", "")],
)
def test_a_bad_address_is_a_form_error_and_nothing_is_placed(shop, shopper, field, value):
    add(shopper, "MUG", 1)
    response = shopper.post("/checkout/", {**checkout_form(shopper), field: value})
    assert response.status_code == 400
    assert response.context["form"].errors[field]
    assert Order.objects.count() == 0 and reserved("MUG") == 0
    assert cart_of(shopper) == {"MUG": 1}
    # what the shopper typed is still there, with a fresh key for the next try
    assert 'value="Ada Lovelace"' in response.content.decode() or field == "name"


def test_a_page_shown_again_keeps_the_typed_errors_and_renews_the_hidden_fields(shop, shopper):
    add(shopper, "MUG", 1)
    sent = {**checkout_form(shopper), "country": "GBR", "basket": "garbage", "idempotency_key": "not-a-uuid"}

    response = shopper.post("/checkout/", sent)

    assert response.status_code == 400
    form = response.context["form"]
    assert set(form.errors) == {"country"}
    assert form["basket"].value() != "garbage" and form["idempotency_key"].value() != "not-a-uuid"
    assert unsign_basket(form["basket"].value()) == [("MUG", 1)]
    assert form["name"].value() == sent["name"] and form["country"].value() == "GBR"
    assert any("out of date or altered" in text for text in texts(response))


@pytest.mark.parametrize(
    "forged",
    [
        {"basket": "garbage"},
        {"basket": ""},
        {"basket": sign_basket([("MUG", 1)]) + "x"},
        {"idempotency_key": "not-a-uuid"},
        {"idempotency_key": ""},
        {"basket": None},
    ],
)
def test_forged_hidden_fields_are_refused_with_a_message(shop, shopper, forged):
    add(shopper, "MUG", 1)
    data = {**checkout_form(shopper), **forged}
    data = {key: value for key, value in data.items() if value is not None}
    response = shopper.post("/checkout/", data)
    assert response.status_code == 400
    assert any("out of date or altered" in text for text in texts(response))
    assert Order.objects.count() == 0 and reserved("MUG") == 0
    assert cart_of(shopper) == {"MUG": 1}


def test_a_basket_with_bad_lines_is_refused_even_if_signed(shop, shopper):
    add(shopper, "MUG", 1)
    for lines in ([("MUG", 0)], [("MUG", 1), ("MUG", 2)], [], [("bad sku!", 1)]):
        response = shopper.post("/checkout/", {**checkout_form(shopper), "basket": sign_basket(lines)})
        assert response.status_code == 400, lines
    assert Order.objects.count() == 0


def test_short_stock_names_the_items_and_what_is_left(shop, shopper):
    response, data = place(shopper, ("MUG", 11), ("TEA", 1))
    assert response.status_code == 409
    [message] = [text for text in texts(response) if "Not enough stock" in text]
    assert "MUG" in message and "you asked for 11, only 10 left" in message
    assert "TEA" not in message
    assert Order.objects.count() == 0 and reserved("MUG") == 0 and reserved("TEA") == 0
    assert cart_of(shopper) == {"MUG": 11, "TEA": 1}
    # submitting the same page again says the same, and still places nothing
    again = shopper.post("/checkout/", data)
    assert again.status_code == 409
    assert any("only 10 left" in text for text in texts(again))
    assert Order.objects.count() == 0
    assert_stock_invariants()


def test_the_same_page_with_other_details_is_refused(shop, shopper):
    response, data = place(shopper, ("MUG", 1))
    assert response.status_code == 302
    add(shopper, "MUG", 1)
    reused = shopper.post("/checkout/", {**data, "city": "Paris"})
    assert reused.status_code == 422
    assert any("already used" in text for text in texts(reused))
    assert Order.objects.count() == 1


def test_a_product_retired_during_checkout_is_a_message(shop, shopper):
    add(shopper, "TEA", 1)
    data = checkout_form(shopper)
    retire("TEA")
    response = shopper.post("/checkout/", data)
    assert response.status_code in (302, 400)
    assert Order.objects.count() == 0 and reserved("TEA") == 0
    assert any("no longer sold" in text for text in texts(response))


# --- orders ---------------------------------------------------------------------------------


def test_order_history_lists_only_my_orders(placed, shopper, client):
    other = Client()
    other.force_login(UserFactory())
    page = shopper.get("/orders/")
    assert page.status_code == 200 and placed.number in page.content.decode()
    assert placed.number not in other.get("/orders/").content.decode()


def test_pay_marks_the_order_paid(placed, shopper):
    response = shopper.post(f"/orders/{placed.number}/pay/", {"version": placed.version})
    assert response.status_code == 302
    placed.refresh_from_db()
    assert placed.status == "paid" and placed.paid_amount == placed.total
    assert any("is paid" in text for text in texts(response))


def test_paying_after_the_time_ran_out_says_so(placed, shopper):
    Order.objects.filter(pk=placed.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = shopper.post(f"/orders/{placed.number}/pay/", {"version": placed.version})
    assert response.status_code == 302
    assert any("time to pay" in text and "run out" in text for text in texts(response))
    placed.refresh_from_db()
    assert placed.status == "reserved" and placed.paid_at is None
    page = shopper.get(f"/orders/{placed.number}/").content.decode()
    assert "The time to pay ran out" in page and "Pay " not in page


@pytest.mark.parametrize("version", ["abc", "", "0", "-1", "99", "1.5"])
def test_stale_or_forged_versions_change_nothing(placed, shopper, version):
    response = shopper.post(f"/orders/{placed.number}/pay/", {"version": version})
    assert response.status_code == 302
    assert texts(response)
    placed.refresh_from_db()
    assert placed.status == "reserved"


def test_cancel_returns_the_stock(placed, shopper):
    assert reserved("MUG") == 2
    response = shopper.post(f"/orders/{placed.number}/cancel/", {"version": placed.version})
    assert response.status_code == 302
    placed.refresh_from_db()
    assert placed.status == "cancelled"
    assert reserved("MUG") == 0 and reserved("TEA") == 0
    again = shopper.post(f"/orders/{placed.number}/cancel/", {"version": placed.version})
    assert any("can no longer be cancelled" in text for text in texts(again))
    assert_stock_invariants()


def test_reorder_puts_the_lines_back_in_the_cart(placed, shopper):
    shopper.post(f"/orders/{placed.number}/reorder/")
    assert cart_of(shopper) == {"MUG": 2, "TEA": 1}


@pytest.mark.parametrize("action", ["", "pay/", "cancel/", "reorder/"])
def test_another_users_order_is_a_404(placed, action):
    intruder = Client()
    intruder.force_login(UserFactory())
    response = intruder.post(f"/orders/{placed.number}/{action}", {"version": placed.version}) if action else None
    response = response or intruder.get(f"/orders/{placed.number}/")
    assert response.status_code == 404
    assert b"There is nothing at this address" in response.content
    placed.refresh_from_db()
    assert placed.status == "reserved"


@pytest.mark.parametrize("path", ["/orders/NOPE/", "/orders/sr-lower/", "/orders/%00/", "/orders/A/B/"])
def test_unknown_order_numbers_are_404(shopper, path):
    assert shopper.get(path).status_code == 404


@pytest.mark.parametrize(
    "path", ["/cart/add/", "/cart/set/", "/cart/remove/", "/cart/empty/", "/orders/X/pay/", "/orders/X/cancel/"]
)
def test_get_on_a_form_target_is_405_not_500(shopper, path):
    assert shopper.get(path).status_code == 405


# --- CSRF -----------------------------------------------------------------------------------


@pytest.fixture
def csrf_shopper(customer) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(customer)
    return client


def test_every_page_form_posts_with_a_csrf_token(placed, shopper):
    add(shopper, "MUG", 1)
    for path in ["/", "/products/MUG/", "/cart/", "/checkout/", "/orders/", f"/orders/{placed.number}/"]:
        body = shopper.get(path).content.decode()
        forms = re.findall(r"<form[^>]*>.*?</form>", body, flags=re.S)
        posts = [form for form in forms if 'method="post"' in form]
        assert posts, path
        assert all("csrfmiddlewaretoken" in form for form in posts), path


@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("/cart/add/", {"sku": "MUG", "quantity": 1}),
        ("/cart/set/", {"sku": "MUG", "quantity": 3}),
        ("/cart/remove/", {"sku": "MUG"}),
        ("/cart/empty/", {}),
        ("/checkout/", ADDRESS),
        ("/orders/{number}/pay/", {"version": 1}),
        ("/orders/{number}/cancel/", {"version": 1}),
        ("/orders/{number}/reorder/", {}),
    ],
)
def test_page_forms_without_a_csrf_token_are_refused(placed, csrf_shopper, path, data):
    csrf_shopper.post("/cart/add/", {})  # refused too, but gives the session a cart below
    session = csrf_shopper.session
    session["cart"] = {"MUG": 1}
    session.save()
    response = csrf_shopper.post(path.format(number=placed.number), data)
    assert response.status_code == 403
    assert b"This form has expired" in response.content
    assert cart_of(csrf_shopper) == {"MUG": 1}
    placed.refresh_from_db()
    assert placed.status == "reserved" and Order.objects.count() == 1


def test_page_forms_with_the_csrf_token_work(shop, csrf_shopper):
    csrf_shopper.get("/products/MUG/")
    token = csrf_shopper.cookies["csrftoken"].value
    response = csrf_shopper.post("/cart/add/", {"sku": "MUG", "quantity": 1, "csrfmiddlewaretoken": token})
    assert response.status_code == 302 and cart_of(csrf_shopper) == {"MUG": 1}
    data = checkout_form(csrf_shopper)
    response = csrf_shopper.post("/checkout/", {**data, "csrfmiddlewaretoken": token})
    assert response.status_code == 302 and Order.objects.count() == 1


def test_idempotency_key_is_a_fresh_uuid_per_rendered_page(shop, shopper):
    add(shopper, "MUG", 1)
    first, second = checkout_form(shopper), checkout_form(shopper)
    assert uuid.UUID(first["idempotency_key"]) != uuid.UUID(second["idempotency_key"])

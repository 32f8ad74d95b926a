"""A shopper in a real browser (chromium, no JavaScript of ours): from sign-up to a paid order,
short stock, cancelling, other people's orders and a password reset by email."""

import re
from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone
from playwright.sync_api import expect

from inventory.models import StockLevel
from orders import services as orders
from orders.models import Order
from project.outbox.models import OutboxMessage
from tests.e2e.conftest import PASSWORD, shoot
from tests.factories import UserFactory
from tests.invariants import assert_stock_invariants
from users.models import User
from users.tasks import send_password_reset_email

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ADDRESS = {"name": "Ada Lovelace", "line1": "12 Analytical St", "city": "London", "postal_code": "N1 9GU"}


def level(sku: str) -> StockLevel:
    return StockLevel.objects.get(product__sku=sku, warehouse__code="MAIN")


def sign_up(page, email: str, name: str = "Ada") -> None:
    page.goto("/accounts/signup/")
    shoot(page, "signup")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Name (optional)").fill(name)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password confirmation").fill(PASSWORD)
    page.get_by_role("button", name="Sign up").click()
    expect(page.locator(".messages")).to_contain_text(f"signed in as {email}")


def log_in(page, email: str, password: str = PASSWORD) -> None:
    page.goto("/accounts/login/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator(".messages")).to_contain_text(f"Signed in as {email}")


def add_to_cart(page, sku: str, quantity: int) -> None:
    page.goto(f"/products/{sku}/")
    page.get_by_label("Quantity").fill(str(quantity))
    page.get_by_role("button", name="Add to cart").click()
    expect(page.locator(".messages")).to_contain_text(f"Added {quantity} of {sku}")


def fill_address(page, country: str = "GB") -> None:
    page.get_by_label("Full name").fill(ADDRESS["name"])
    page.get_by_label("Address", exact=True).fill(ADDRESS["line1"])
    page.get_by_label("City").fill(ADDRESS["city"])
    page.get_by_label("Postal code").fill(ADDRESS["postal_code"])
    page.get_by_label("Country").fill(country)


def place_order(page) -> str:
    page.goto("/checkout/")
    fill_address(page)
    page.get_by_role("button", name="Place the order").click()
    expect(page).to_have_url(re.compile(r"/orders/SR-[A-Z0-9-]+/$"))
    return page.url.rstrip("/").rsplit("/", 1)[-1]


def test_sign_up_browse_search_buy_pay_and_find_the_order(page, shop):
    page.goto("/")
    expect(page.get_by_role("heading", name="Catalogue")).to_be_visible()
    expect(page.locator(".products .card")).to_have_count(24)
    shoot(page, "catalogue")
    page.get_by_role("link", name="Next →").click()
    expect(page.locator(".products .card")).to_have_count(4)
    shoot(page, "catalogue-page-2")

    sign_up(page, "ada@example.com")
    shoot(page, "signed-up")

    page.get_by_placeholder("Search products").fill("mug")
    page.get_by_placeholder("Search products").press("Enter")
    expect(page.get_by_role("heading", name="Results for “mug”")).to_be_visible()
    expect(page.locator(".products .card")).to_have_count(1)
    shoot(page, "search")
    page.get_by_role("link", name="Blue mug").click()
    expect(page.get_by_text("10 available")).to_be_visible()
    shoot(page, "product")

    add_to_cart(page, "MUG", 2)
    shoot(page, "product-added")
    add_to_cart(page, "TEA", 3)
    page.get_by_role("link", name=re.compile("^Cart")).click()
    expect(page.locator(".line")).to_have_count(2)
    expect(page.locator(".total")).to_contain_text("37.00 EUR")
    shoot(page, "cart")

    # change a quantity, then check out
    page.get_by_label("Quantity of Green tea").fill("2")
    page.locator(".line", has_text="Green tea").get_by_role("button", name="Update").click()
    expect(page.locator(".total")).to_contain_text("33.00 EUR")
    page.get_by_role("link", name="Check out").click()
    expect(page.get_by_role("heading", name="Checkout")).to_be_visible()
    shoot(page, "checkout")
    fill_address(page, country="gb")
    page.get_by_role("button", name="Place the order").click()
    expect(page).to_have_url(re.compile(r"/orders/SR-[A-Z0-9-]+/$"))
    expect(page.locator(".notice")).to_contain_text("left to pay")
    shoot(page, "order-reserved")

    order = Order.objects.get()
    assert order.status == "reserved" and str(order.total) == "33.00" and order.shipping_country == "GB"
    assert level("MUG").reserved == 2 and level("TEA").reserved == 2

    page.get_by_role("button", name="Pay 33.00 EUR").click()
    expect(page.locator(".messages")).to_contain_text("is paid")
    expect(page.locator(".status")).to_have_text("Paid")
    shoot(page, "order-paid")

    page.get_by_role("link", name="Orders", exact=True).click()
    expect(page.locator(".orders .card")).to_have_count(1)
    expect(page.locator(".orders")).to_contain_text(order.number)
    expect(page.locator(".orders")).to_contain_text("Paid")
    shoot(page, "order-history")
    order.refresh_from_db()
    assert order.status == "paid"
    assert_stock_invariants()


def test_short_stock_at_checkout_names_the_item_and_what_is_left(page, shop):
    UserFactory(email="bo@example.com")
    log_in(page, "bo@example.com")
    add_to_cart(page, "POT", 2)
    add_to_cart(page, "MUG", 1)
    page.goto("/checkout/")
    fill_address(page)
    # someone else buys a teapot while this page is open
    other = UserFactory()
    orders.order_place(
        user=other,
        lines=[orders.OrderLineRequest("POT", 1)],
        shipping_address={**ADDRESS, "country": "GB"},
        render=lambda order, lines: {},
    )
    page.get_by_role("button", name="Place the order").click()
    expect(page.locator(".messages .error")).to_contain_text("Teapot (POT): you asked for 2, only 1 left")
    shoot(page, "checkout-short-stock")
    assert Order.objects.filter(user__email="bo@example.com").count() == 0
    assert level("POT").reserved == 1 and level("MUG").reserved == 0
    # nothing was lost: the cart and the typed address are still there
    expect(page.get_by_label("City")).to_have_value("London")
    page.goto("/cart/")
    expect(page.locator(".line")).to_have_count(2)
    page.get_by_label("Quantity of Teapot").fill("1")
    page.locator(".line", has_text="Teapot").get_by_role("button", name="Update").click()
    number = place_order(page)
    assert Order.objects.get(number=number).status == "reserved"
    assert level("POT").reserved == 2
    assert_stock_invariants()


def test_double_clicking_place_order_places_one_order(page, shop):
    UserFactory(email="cy@example.com")
    log_in(page, "cy@example.com")
    add_to_cart(page, "MUG", 1)
    page.goto("/checkout/")
    fill_address(page)
    page.get_by_role("button", name="Place the order").dblclick()
    page.wait_for_url(re.compile(r"/orders/"))
    page.wait_for_load_state()
    assert Order.objects.count() == 1
    assert level("MUG").reserved == 1
    assert_stock_invariants()

    # the time to pay runs out before the sweep has run: the page says so and offers the items again
    order = Order.objects.get()
    Order.objects.filter(pk=order.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    page.goto(f"/orders/{order.number}/")
    expect(page.locator(".notice.bad")).to_contain_text("The time to pay ran out")
    expect(page.get_by_role("button", name=re.compile("^Pay"))).to_have_count(0)
    shoot(page, "order-time-ran-out")
    page.get_by_role("button", name="Put these items in my cart again").click()
    expect(page.locator(".line")).to_have_count(1)
    expect(page.get_by_label("Quantity of Blue mug")).to_have_value("1")


def session_cookie(page) -> str:
    return next(cookie["value"] for cookie in page.context.cookies() if cookie["name"] == "sessionid")


def test_the_cart_is_kept_when_logging_in_and_cancel_returns_the_stock(page, shop):
    UserFactory(email="di@example.com")
    add_to_cart(page, "TEA", 4)  # before logging in
    anonymous_session = session_cookie(page)
    page.get_by_role("link", name="Log in").click()
    page.get_by_label("Email").fill("di@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator(".messages")).to_contain_text("Signed in as di@example.com")
    assert session_cookie(page) != anonymous_session  # a new session key, the same data
    page.goto("/cart/")
    expect(page.get_by_label("Quantity of Green tea")).to_have_value("4")
    number = place_order(page)
    assert level("TEA").reserved == 4
    page.get_by_role("button", name="Cancel this order").click()
    expect(page.locator(".messages")).to_contain_text("is cancelled")
    expect(page.locator(".status")).to_have_text("Cancelled")
    shoot(page, "order-cancelled")
    tea = level("TEA")
    assert tea.reserved == 0 and tea.on_hand == 5
    assert Order.objects.get(number=number).status == "cancelled"
    assert_stock_invariants()
    page.get_by_role("link", name="Cart", exact=True).click()
    expect(page.get_by_text("Your cart is empty")).to_be_visible()
    shoot(page, "cart-empty")


def test_another_users_order_is_not_found(page, other_page, shop):
    owner = UserFactory(email="ed@example.com")
    placed = orders.order_place(
        user=owner,
        lines=[orders.OrderLineRequest("MUG", 1)],
        shipping_address={**ADDRESS, "country": "GB"},
        render=lambda order, lines: {"number": order.number},
    )
    number = placed.body["number"]
    UserFactory(email="fi@example.com")
    log_in(other_page, "fi@example.com")
    response = other_page.goto(f"/orders/{number}/")
    assert response.status == 404
    expect(other_page.get_by_role("heading", name="Not found")).to_be_visible()
    shoot(other_page, "not-found")
    log_in(page, "ed@example.com")
    assert page.goto(f"/orders/{number}/").status == 200


def test_password_reset_mail_link_works(page, shop):
    UserFactory(email="gu@example.com")
    page.goto("/accounts/login/")
    shoot(page, "login")
    page.get_by_role("link", name="Forgot your password?").click()
    shoot(page, "password-reset")
    page.get_by_label("Email").fill("GU@example.com")
    page.get_by_role("button", name="Send the link").click()
    expect(page.get_by_role("heading", name="Check your email")).to_be_visible()
    shoot(page, "password-reset-sent")
    # The page only queued the email (outbox); deliver it as the worker would
    # (tests/users/test_passwords.py follows it through a real relay and worker).
    assert mail.outbox == []
    queued = OutboxMessage.objects.get(task="users.send_password_reset_email")
    assert send_password_reset_email(**queued.kwargs) is True

    [message] = mail.outbox
    assert message.to == ["gu@example.com"]
    link = re.search(r"https?://\S+/accounts/password-reset/\S+/", message.body).group(0)
    page.goto(link)
    expect(page.get_by_role("heading", name="Choose a new password")).to_be_visible()
    shoot(page, "password-reset-confirm")
    new_password = "a brand new passphrase 42"
    page.get_by_label("New password", exact=True).fill(new_password)
    page.get_by_label("New password confirmation").fill(new_password)
    page.get_by_role("button", name="Set the password").click()
    expect(page.get_by_role("heading", name="Your password is set")).to_be_visible()
    shoot(page, "password-reset-complete")
    log_in(page, "gu@example.com", new_password)
    assert User.objects.get(email="gu@example.com").check_password(new_password)


def test_account_keys_and_password_change(page, shop):
    staff = UserFactory(email="staff@example.com", is_staff=True)
    log_in(page, staff.email)
    expect(page.get_by_role("link", name="Admin")).to_be_visible()
    page.get_by_role("link", name="Account").click()
    page.get_by_label("Name").fill("shop sync")
    page.get_by_role("button", name="Create a key").click()
    key = page.locator("code.key").inner_text()
    assert key.startswith("sr_")
    shoot(page, "account-new-key")
    page.get_by_role("button", name="Revoke").click()
    expect(page.locator(".messages")).to_contain_text("is revoked")
    expect(page.locator("code.key")).to_have_count(0)
    shoot(page, "account")

    page.get_by_role("link", name="Change your password").click()
    shoot(page, "password-change")
    page.get_by_label("Old password").fill(PASSWORD)
    page.get_by_label("New password", exact=True).fill("another fine passphrase 7")
    page.get_by_label("New password confirmation").fill("another fine passphrase 7")
    page.get_by_role("button", name="Change password").click()
    expect(page.get_by_role("heading", name="Password changed")).to_be_visible()
    shoot(page, "password-change-done")

    page.get_by_role("button", name="Log out").click()
    expect(page.locator(".messages")).to_contain_text("signed out")
    expect(page.get_by_role("link", name="Log in")).to_be_visible()

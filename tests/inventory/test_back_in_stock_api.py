"""Back-in-stock subscriptions through the API (customers: subscribe, stop, list) and the product
page's button (anonymous, signed in, already waiting)."""

import pytest
from django.test import Client
from rest_framework.test import APIClient

from inventory import services as stock
from inventory.back_in_stock import back_in_stock_notify, back_in_stock_subscribe, is_waiting
from inventory.models import BackInStockSubscription
from tests.conftest import bearer
from tests.factories import ProductFactory, UserFactory, WarehouseFactory
from users.services import api_key_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def shop(db):
    """MUG in stock; TEA and PEN sold out; OLD sold out and inactive."""
    WarehouseFactory(code="MAIN", priority=1)
    ProductFactory(sku="MUG", name="Blue mug")
    ProductFactory(sku="TEA", name="Green tea")
    ProductFactory(sku="PEN", name="Red pen")
    ProductFactory(sku="OLD", name="Old mug", active=False)
    stock.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=3)


def url(sku: str) -> str:
    return f"/api/v1/products/{sku}/back-in-stock"


LIST = "/api/v1/back-in-stock"


def _envelope(response, status_code: int, code: str) -> dict:
    assert response.status_code == status_code, response.content
    error = response.json()["error"]
    assert error["code"] == code and error["detail"]
    return error


# --- API -----------------------------------------------------------------------------------------


def test_subscribing_answers_201_then_200_with_the_same_subscription(customer_client, shop):
    created = customer_client.post(url("TEA"))
    again = customer_client.post(url("TEA"))

    assert created.status_code == 201, created.content
    assert again.status_code == 200
    assert again.json() == created.json()
    assert {k: v for k, v in created.json().items() if k != "created_at"} == {"sku": "TEA", "name": "Green tea"}
    assert BackInStockSubscription.objects.count() == 1


def test_a_product_in_stock_is_409_in_stock(customer_client, shop):
    _envelope(customer_client.post(url("MUG")), 409, "in_stock")
    assert not BackInStockSubscription.objects.exists()


@pytest.mark.parametrize("sku", ["NOPE", "OLD", "a%00b", "x" * 80, "bad%20sku"])
def test_unknown_inactive_or_malformed_skus_are_404(customer_client, shop, sku):
    _envelope(customer_client.post(url(sku)), 404, "not_found")
    assert not BackInStockSubscription.objects.exists()


def test_stopping_answers_204_whether_or_not_you_were_waiting(customer_client, customer, shop):
    customer_client.post(url("TEA"))

    assert customer_client.delete(url("TEA")).status_code == 204
    assert customer_client.delete(url("TEA")).status_code == 204
    assert not is_waiting(user=customer, sku="TEA")
    _envelope(customer_client.delete(url("NOPE")), 404, "not_found")


def test_the_list_shows_only_your_waiting_subscriptions_newest_first(customer_client, customer, shop):
    customer_client.post(url("TEA"))
    customer_client.post(url("PEN"))
    back_in_stock_subscribe(user=UserFactory(), sku="TEA")  # someone else's
    stock.stock_receive(sku="PEN", warehouse_code="MAIN", quantity=1)
    assert back_in_stock_notify() == 1  # PEN's is emailed, so it is no longer waiting

    customer_client.post(url("PEN"))  # in stock again: refused, not listed
    response = customer_client.get(LIST)

    assert response.status_code == 200
    body = response.json()
    assert [item["sku"] for item in body["results"]] == ["TEA"]
    assert body["next"] is None and body["previous"] is None


def test_the_list_pages_with_a_cursor_and_a_mangled_cursor_is_404(customer_client, shop):
    for n in range(3):
        ProductFactory(sku=f"GONE{n}")
        customer_client.post(url(f"GONE{n}"))

    first = customer_client.get(LIST, {"page_size": 2}).json()
    second = customer_client.get(first["next"]).json()

    assert [i["sku"] for i in first["results"]] == ["GONE2", "GONE1"]
    assert [i["sku"] for i in second["results"]] == ["GONE0"]
    _envelope(customer_client.get(LIST, {"cursor": "not-a-cursor"}), 404, "not_found")


def test_without_credentials_it_is_401(shop):
    client = APIClient()
    _envelope(client.post(url("TEA")), 401, "not_authenticated")
    _envelope(client.delete(url("TEA")), 401, "not_authenticated")
    _envelope(client.get(LIST), 401, "not_authenticated")
    _envelope(bearer(APIClient(), "sr_not-a-key").post(url("TEA")), 401, "authentication_failed")
    assert not BackInStockSubscription.objects.exists()


def test_keys_need_the_write_scope_to_change_and_the_read_scope_to_list(customer, shop):
    _, read_key = api_key_create(user=customer, scopes=["read"])
    _, write_key = api_key_create(user=customer, scopes=["write"])
    reader, writer = bearer(APIClient(), read_key), bearer(APIClient(), write_key)

    _envelope(reader.post(url("TEA")), 403, "permission_denied")
    _envelope(reader.delete(url("TEA")), 403, "permission_denied")
    assert writer.post(url("TEA")).status_code == 201
    _envelope(writer.get(LIST), 403, "permission_denied")
    assert [i["sku"] for i in reader.get(LIST).json()["results"]] == ["TEA"]


def test_a_session_works_with_its_csrf_token_only(customer, shop):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(customer)

    _envelope(client.post(url("TEA")), 403, "permission_denied")  # no CSRF token
    assert client.get(LIST).status_code == 200
    assert not BackInStockSubscription.objects.exists()


def test_other_methods_are_405_in_the_envelope(customer_client, shop):
    _envelope(customer_client.get(url("TEA")), 405, "method_not_allowed")
    _envelope(customer_client.post(LIST, {}, format="json"), 405, "method_not_allowed")


# --- the product page ----------------------------------------------------------------------------


def test_anonymous_shoppers_are_asked_to_sign_in_to_be_notified(client, shop):
    body = client.get("/products/TEA/").content.decode()

    assert "Sign in to be notified" in body and "/accounts/login/?next=/products/TEA/" in body
    assert "Notify me when it is back" not in body


def test_a_product_in_stock_shows_no_back_in_stock_button(client, customer, shop):
    client.force_login(customer)
    body = client.get("/products/MUG/").content.decode()

    assert "Add to cart" in body
    assert "Notify me" not in body and "Sign in to be notified" not in body


def test_a_signed_in_shopper_subscribes_from_the_page_and_can_stop_waiting(customer, shop):
    client = Client(enforce_csrf_checks=True)
    client.force_login(customer)
    page = client.get("/products/TEA/")
    body = page.content.decode()
    assert 'action="/products/TEA/back-in-stock/"' in body and "Notify me when it is back" in body
    token = page.cookies["csrftoken"].value

    response = client.post("/products/TEA/back-in-stock/", {"csrfmiddlewaretoken": token}, follow=True)

    assert response.redirect_chain == [("/products/TEA/", 302)]
    body = response.content.decode()
    assert "We will email you when it is back" in body and "Stop waiting" in body
    assert "Notify me when it is back" not in body
    assert is_waiting(user=customer, sku="TEA")

    response = client.post("/products/TEA/back-in-stock/stop/", {"csrfmiddlewaretoken": token}, follow=True)

    assert "Notify me when it is back" in response.content.decode()
    assert not is_waiting(user=customer, sku="TEA")


def test_the_page_forms_need_their_csrf_token(customer, shop):
    client = Client(enforce_csrf_checks=True)
    client.force_login(customer)

    assert client.post("/products/TEA/back-in-stock/").status_code == 403
    assert not BackInStockSubscription.objects.exists()


def test_the_waiting_state_is_per_shopper_not_cached_with_the_page(client, shop):
    ada, bob = UserFactory(), UserFactory()
    back_in_stock_subscribe(user=ada, sku="TEA")

    client.force_login(ada)
    assert "Stop waiting" in client.get("/products/TEA/").content.decode()
    client.force_login(bob)
    assert "Notify me when it is back" in client.get("/products/TEA/").content.decode()
    client.logout()
    assert "Sign in to be notified" in client.get("/products/TEA/").content.decode()


def test_an_anonymous_post_is_sent_to_sign_in_and_back(client, shop):
    response = client.post("/products/TEA/back-in-stock/")

    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/products/TEA/"
    assert not BackInStockSubscription.objects.exists()


def test_subscribing_from_a_stale_page_when_it_is_back_says_so(client, customer, shop):
    client.force_login(customer)

    response = client.post("/products/MUG/back-in-stock/", follow=True)

    assert "it is in stock now" in response.content.decode()
    assert not BackInStockSubscription.objects.exists()


@pytest.mark.parametrize("path", ["/products/NOPE/back-in-stock/", "/products/OLD/back-in-stock/"])
def test_the_page_form_for_an_unknown_or_inactive_product_is_404(client, customer, shop, path):
    client.force_login(customer)

    assert client.post(path).status_code == 404


def test_the_page_forms_refuse_get(client, customer, shop):
    client.force_login(customer)

    assert client.get("/products/TEA/back-in-stock/").status_code == 405
    assert client.get("/products/TEA/back-in-stock/stop/").status_code == 405


# --- the admin -----------------------------------------------------------------------------------


def test_staff_see_subscriptions_read_only_in_the_admin(admin, shop):
    back_in_stock_subscribe(user=UserFactory(email="ada@example.com"), sku="TEA")
    changelist = "/admin/inventory/backinstocksubscription/"

    body = admin.get(changelist).content.decode()
    waiting = admin.get(changelist, {"state": "waiting"}).content.decode()
    emailed = admin.get(changelist, {"state": "notified"}).content.decode()

    assert "ada@example.com" in body and "Green tea" in body
    assert "ada@example.com" in waiting and "ada@example.com" not in emailed
    assert admin.get(f"{changelist}add/").status_code == 403

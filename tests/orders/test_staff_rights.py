"""Staff rights over orders follow the request's effective rights (issue 18, finding 2): a staff
user's key without the `staff` scope is an ordinary customer's key, for reading and for changing."""

import pytest
from rest_framework.test import APIClient

from orders.models import Order
from tests.conftest import bearer
from tests.factories import UserFactory
from tests.orders.conftest import place
from users.services import api_key_create


@pytest.fixture
def customers_order(customer_client, shop) -> str:
    return place(customer_client, ("MUG", 1)).json()["number"]


def staff_key(staff_user, *scopes) -> APIClient:
    return bearer(APIClient(), api_key_create(user=staff_user, scopes=list(scopes))[1])


@pytest.mark.parametrize("scopes", [("read",), ("read", "write")])
def test_a_staff_users_key_without_the_staff_scope_lists_only_its_own_orders(
    staff_user, customer, customers_order, scopes
):
    client = staff_key(staff_user, *scopes)

    assert client.get("/api/v1/orders").json()["results"] == []
    assert client.get("/api/v1/orders", {"user": customer.email}).json()["results"] == []
    assert client.get(f"/api/v1/orders/{customers_order}").status_code == 404


def test_a_staff_users_write_key_without_the_staff_scope_cannot_cancel_a_customers_order(staff_user, customers_order):
    client = staff_key(staff_user, "read", "write")

    assert client.post(f"/api/v1/orders/{customers_order}/cancel").status_code == 404
    assert client.post(f"/api/v1/orders/{customers_order}/pay").status_code == 404
    assert Order.objects.get(number=customers_order).status == "reserved"


def test_the_staff_scope_still_reaches_every_order(staff_user, customer, customers_order):
    client = staff_key(staff_user, "read", "write", "staff")

    assert [o["number"] for o in client.get("/api/v1/orders").json()["results"]] == [customers_order]
    listed = client.get("/api/v1/orders", {"user": customer.email}).json()["results"]
    assert [o["number"] for o in listed] == [customers_order]
    assert client.post(f"/api/v1/orders/{customers_order}/cancel").status_code == 200


def test_a_staff_session_acts_as_staff(staff_user, customers_order):
    client = APIClient()
    client.force_login(staff_user)

    assert client.get(f"/api/v1/orders/{customers_order}").status_code == 200


def test_a_customer_asking_for_another_customers_orders_gets_their_own(customer_client, customers_order):
    stranger = bearer(APIClient(), api_key_create(user=UserFactory(), scopes=["read"])[1])

    assert stranger.get("/api/v1/orders", {"user": "customer@example.com"}).json()["results"] == []

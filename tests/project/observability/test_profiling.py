import pytest
from django.test import Client
from rest_framework.test import APIClient

from project.observability.profiling import PROFILE_CSP
from tests.conftest import bearer
from users.services import api_key_create

pytestmark = pytest.mark.django_db


def is_profile(response) -> bool:
    return "X-Profiled-Status" in response and b"pyinstrument" in response.content.lower()


def test_staff_get_a_profile_of_a_page(staff_user):
    client = Client()
    client.force_login(staff_user)

    response = client.get("/?profile=1")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert is_profile(response)
    assert response["X-Profiled-Status"] == "200"
    assert response["Content-Security-Policy"] == PROFILE_CSP  # its inline script runs; nothing else loads
    assert response["Cache-Control"] == "no-store"


def test_a_staff_api_key_gets_a_profile_of_an_api_request(staff_client):
    response = staff_client.get("/api/v1/orders?profile=1")

    assert is_profile(response)
    assert response["X-Profiled-Status"] == "200"


def test_the_profile_reports_the_real_status(staff_client):
    response = staff_client.get("/api/v1/orders/SR-NONE-NONE?profile=1")

    assert is_profile(response)
    assert response["X-Profiled-Status"] == "404"


@pytest.mark.parametrize("who", ["anonymous", "customer_session", "customer_key", "staff_key_without_staff_scope"])
def test_everyone_else_gets_the_normal_response(who, customer, staff_user):
    client = APIClient()
    if who == "customer_session":
        client.force_login(customer)
    elif who == "customer_key":
        bearer(client, api_key_create(user=customer, scopes=["read"])[1])
    elif who == "staff_key_without_staff_scope":
        bearer(client, api_key_create(user=staff_user, scopes=["read"])[1])

    page = client.get("/?profile=1")
    api = client.get("/api/v1/products?profile=1")

    for response in (page, api):
        assert response.status_code == 200
        assert "X-Profiled-Status" not in response
        assert b"pyinstrument" not in response.content.lower()
    assert api.json()["results"] == []


def test_profiling_can_be_turned_off(settings, staff_user):
    settings.PROFILING_ENABLED = False
    client = Client()
    client.force_login(staff_user)

    response = client.get("/?profile=1")

    assert "X-Profiled-Status" not in response


def test_other_values_of_the_parameter_do_nothing(staff_user):
    client = Client()
    client.force_login(staff_user)

    assert "X-Profiled-Status" not in client.get("/?profile=yes")

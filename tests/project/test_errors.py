import pytest
from django.test import Client
from django.urls import path
from rest_framework.decorators import api_view, permission_classes
from rest_framework.permissions import AllowAny

from project import urls as project_urls


@api_view(["GET"])
@permission_classes([AllowAny])
def exploding_api_view(request):
    raise RuntimeError("boom")


def exploding_page(request):
    raise RuntimeError("boom")


urlpatterns = [
    path("api/v1/explode", exploding_api_view),
    path("explode", exploding_page),
    *project_urls.urlpatterns,
]
handler404 = project_urls.handler404
handler500 = project_urls.handler500


@pytest.fixture
def exploding_urls(settings):
    settings.ROOT_URLCONF = __name__
    return settings


def test_unknown_api_route_is_a_404_envelope(client, db):
    response = client.get("/api/v1/nothing-here")

    assert response.status_code == 404
    assert response.json() == {"error": {"code": "not_found", "detail": "Not found.", "fields": {}}}


def test_unknown_page_is_our_404_page(client, db):
    response = client.get("/nothing-here")

    assert response.status_code == 404
    assert b"There is nothing at this address." in response.content


def test_unauthenticated_api_call_is_401_envelope(client, db):
    response = client.get("/api/v1/auth/keys")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_malformed_json_is_400_envelope(client, db):
    response = client.post("/api/v1/auth/tokens", data="{not json", content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"


def test_wrong_method_is_405_envelope(client, db):
    response = client.get("/api/v1/auth/tokens")

    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_server_error_in_the_api_is_a_500_envelope(exploding_urls, db):
    client = Client(raise_request_exception=False)

    response = client.get("/api/v1/explode")

    assert response.status_code == 500
    assert response.json()["error"]["code"] == "server_error"
    assert "boom" not in response.content.decode()


def test_server_error_on_a_page_is_our_500_page(exploding_urls, db):
    client = Client(raise_request_exception=False)

    response = client.get("/explode")

    assert response.status_code == 500
    assert b"Nothing was lost" in response.content
    assert b"boom" not in response.content

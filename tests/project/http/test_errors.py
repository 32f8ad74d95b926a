import json

import pytest
from django.test import Client
from django.urls import path
from rest_framework import serializers
from rest_framework.decorators import api_view, permission_classes
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import AllowAny

from project import urls as project_urls
from project.errors import InvalidInput
from project.http.error_views import MAX_ERROR_DEPTH, MAX_ERROR_MESSAGES, MAX_MESSAGE_CHARS, api_exception_handler


@api_view(["GET"])
@permission_classes([AllowAny])
def exploding_api_view(request):
    raise RuntimeError("boom")


def exploding_page(request):
    raise RuntimeError("boom")


class UnboundedListSerializer(serializers.Serializer):
    """What an endpoint without a length check would look like: every item validated and refused."""

    items = serializers.ListField(child=serializers.IntegerField())
    rows = serializers.ListField(child=serializers.DictField(child=serializers.IntegerField()), required=False)


@api_view(["POST"])
@permission_classes([AllowAny])
def unbounded_list_view(request):
    UnboundedListSerializer(data=request.data).is_valid(raise_exception=True)


urlpatterns = [
    path("api/v1/unbounded", unbounded_list_view),
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


# --- error bodies are bounded, whatever the input ---------------------------------------------------


def _count_messages(value) -> int:
    if isinstance(value, dict):
        return sum(_count_messages(item) for item in value.values())
    if isinstance(value, list):
        return sum(_count_messages(item) for item in value)
    return 1


def _depth(value) -> int:
    return 1 + max((_depth(item) for item in value.values()), default=0) if isinstance(value, dict) else 0


def test_a_list_with_an_error_per_item_gets_a_bounded_error_body(exploding_urls, db):
    body = {"items": ["x"] * 100_000, "rows": [{f"k{n}": "y" for n in range(50)}] * 2000}

    response = Client().post("/api/v1/unbounded", json.dumps(body), content_type="application/json")

    assert response.status_code == 400
    assert len(response.content) < 16_384, len(response.content)
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert _count_messages(error["fields"]) <= MAX_ERROR_MESSAGES
    assert error["fields"]["items"]  # the first errors are kept, in order
    assert "first" in error["detail"]  # and the answer says the list of errors was cut


def test_the_envelope_bounds_depth_message_length_and_count():
    deep = {"a": {"b": {"c": {"d": {"e": {"f": ["too deep"]}}}}}}
    detail = {**deep, "long": ["z" * 100_000], "many": [f"m{n}" for n in range(10_000)]}

    response = api_exception_handler(ValidationError(detail), {})

    fields = response.data["error"]["fields"]
    assert _depth(fields) <= MAX_ERROR_DEPTH
    assert "too deep" in json.dumps(fields)  # collapsed into its parent, not lost
    assert len(fields["long"][0]) <= MAX_MESSAGE_CHARS
    assert _count_messages(fields) <= MAX_ERROR_MESSAGES
    assert len(json.dumps(response.data)) < 16_384


def test_a_domain_errors_fields_are_bounded_too():
    error = InvalidInput(fields={f"f{n}": ["bad " * 1000] for n in range(10_000)})

    response = api_exception_handler(error, {})

    assert response.status_code == 400
    assert _count_messages(response.data["error"]["fields"]) <= MAX_ERROR_MESSAGES
    assert len(json.dumps(response.data)) < 65_536


def test_small_errors_are_unchanged():
    detail = {"lines": {"0": {"sku": ["This field is required."]}}, "non_field_errors": ["Both at once."]}

    response = api_exception_handler(ValidationError(detail), {})

    assert response.data == {
        "error": {
            "code": "invalid",
            "detail": "Both at once.",
            "fields": {"lines": {"0": {"sku": ["This field is required."]}}},
        }
    }

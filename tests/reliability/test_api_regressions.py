"""What the schema fuzzing and hostile-input tests found, kept as fast in-process tests.

Each was a 500 or an answer the OpenAPI schema did not declare; the live tests of this package
find them again, these name them.
"""

import pytest
from django.db import DataError
from drf_spectacular.generators import SchemaGenerator

from project.http.error_views import api_exception_handler
from tests.factories import ProductFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def schema():
    return SchemaGenerator().get_schema(request=None, public=True)


def _resolve(schema: dict, ref: dict) -> dict:
    return schema["components"]["schemas"][ref["$ref"].rsplit("/", 1)[1]]


@pytest.mark.parametrize("path", ["/api/v1/products", "/api/v1/stock", "/api/v1/orders", "/api/v1/auth/keys"])
def test_lists_are_declared_as_the_page_they_return(schema, path):
    ok = schema["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    page = _resolve(schema, ok)
    assert set(page["required"]) >= {"results", "next", "previous"}
    assert page["properties"]["results"]["type"] == "array"
    # A cursor the list never gave out is 404 (DRF's cursor pagination): declared.
    assert "404" in schema["paths"][path]["get"]["responses"]


@pytest.mark.parametrize("path", ["/api/v1/products", "/api/v1/orders", "/api/v1/stock"])
def test_a_cursor_the_list_never_gave_out_is_404_with_the_envelope(staff_client, path):
    response = staff_client.get(path, {"cursor": "not-a-cursor"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_patching_a_product_declares_if_match_as_required(schema):
    parameters = schema["paths"]["/api/v1/products/{sku}"]["patch"]["parameters"]
    (if_match,) = [p for p in parameters if p["name"] == "If-Match"]
    assert if_match["required"] is True


def test_revoking_an_unknown_key_is_404_with_the_envelope(customer_client):
    response = customer_client.delete("/api/v1/auth/keys/abcdefghij")  # well formed, no such key
    assert response.status_code == 404
    assert response.json() == {"error": {"code": "not_found", "detail": "Not found.", "fields": {}}}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/v1/products/a%00b"),
        ("patch", "/api/v1/products/a%00b"),
        ("get", "/api/v1/orders/a%00b"),
        ("post", "/api/v1/orders/a%00b/cancel"),
        ("post", "/api/v1/orders/a%00b/fulfil"),
        ("delete", "/api/v1/auth/keys/a%00b"),
    ],
)
def test_a_nul_byte_in_a_path_is_404_not_a_database_error(staff_client, method, path):
    ProductFactory(sku="ab")
    response = getattr(staff_client, method)(path, {}, format="json", HTTP_IF_MATCH='"1"')
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_json_nested_too_deeply_is_400(customer_client):
    body = "[" * 50_000 + "]" * 50_000
    response = customer_client.post(
        "/api/v1/orders", body, content_type="application/json", HTTP_IDEMPOTENCY_KEY="deep"
    )
    assert response.status_code == 400
    assert "nested too deeply" in response.json()["error"]["detail"]


def test_a_value_the_database_refuses_is_a_400_with_the_envelope():
    response = api_exception_handler(DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes"), {})
    assert response.status_code == 400
    assert response.data["error"]["code"] == "invalid"

"""Request bodies above the limit are refused with 413 before anything reads them."""

import json


def test_an_api_body_over_the_limit_is_413_with_the_envelope(client, settings):
    # No `db` fixture: the request is refused before anything could touch the database.
    settings.MAX_REQUEST_BODY_BYTES = 100
    body = json.dumps({"email": "a@example.com", "password": "x" * 100})

    response = client.post("/api/v1/auth/tokens", body, content_type="application/json")

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert "100 bytes" in response.json()["error"]["detail"]


def test_a_body_at_the_limit_is_let_through(client, db, settings):
    body = json.dumps({"email": "a@example.com", "password": "x"})
    settings.MAX_REQUEST_BODY_BYTES = len(body)

    response = client.post("/api/v1/auth/tokens", body, content_type="application/json")

    assert response.status_code == 401


def test_the_limit_is_read_from_content_length_before_the_body(client, settings):
    settings.MAX_REQUEST_BODY_BYTES = 1000

    response = client.post("/api/v1/auth/tokens", "{}", content_type="application/json", CONTENT_LENGTH="5000000")

    assert response.status_code == 413


def test_a_page_body_over_the_limit_is_413_in_plain_text(client, settings):
    settings.MAX_REQUEST_BODY_BYTES = 100

    response = client.post("/admin/login/", {"username": "a@example.com", "password": "x" * 200})

    assert response.status_code == 413
    assert response["Content-Type"].startswith("text/plain")


def test_imports_have_their_own_larger_limit(client, settings):
    settings.MAX_REQUEST_BODY_BYTES = 100
    settings.IMPORT_MAX_UPLOAD_BYTES = 1000

    within = client.post("/api/v1/imports", "x" * 500, content_type="text/csv")
    beyond = client.post("/api/v1/imports", "x" * 1001, content_type="text/csv")

    assert within.status_code != 413  # whatever the import endpoint says, the size was fine
    assert beyond.status_code == 413
    assert beyond.json()["error"]["code"] == "request_too_large"


def test_djangos_request_data_too_big_is_413_too(client, db, settings):
    # Content-Length passes our limit, but the form fields exceed DATA_UPLOAD_MAX_MEMORY_SIZE.
    settings.MAX_REQUEST_BODY_BYTES = 10_000
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100

    page = client.post("/admin/login/", {"username": "a@example.com", "password": "x" * 500})

    assert page.status_code == 413

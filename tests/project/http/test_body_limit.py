"""Request bodies above the limit are refused with 413 before anything reads them."""

import json

import pytest


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


def test_imports_have_their_own_larger_limit(client, db, settings):
    settings.MAX_REQUEST_BODY_BYTES = 100
    settings.IMPORT_MAX_UPLOAD_BYTES = 1000
    key = {"HTTP_AUTHORIZATION": "Bearer sk_abc.secret"}  # the larger limit is for a caller with credentials

    within = client.post("/api/v1/imports", "x" * 500, content_type="text/csv", **key)
    beyond = client.post("/api/v1/imports", "x" * 1001, content_type="text/csv", **key)

    assert within.status_code != 413  # whatever the import endpoint says, the size was fine
    assert beyond.status_code == 413
    assert beyond.json()["error"]["code"] == "request_too_large"


def test_djangos_request_data_too_big_is_413_too(client, db, settings):
    # Content-Length passes our limit, but the form fields exceed DATA_UPLOAD_MAX_MEMORY_SIZE.
    settings.MAX_REQUEST_BODY_BYTES = 10_000
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100

    page = client.post("/admin/login/", {"username": "a@example.com", "password": "x" * 500})

    assert page.status_code == 413


class RecordingBody:
    """A request body (wsgi.input) that records how much anything read of it."""

    def __init__(self, size: int):
        self.size = size
        self.read_bytes = 0

    def read(self, size: int = -1) -> bytes:
        left = self.size - self.read_bytes
        size = left if size is None or size < 0 else min(size, left)
        self.read_bytes += size
        return b"x" * size

    def readline(self, size: int = -1) -> bytes:
        return self.read(size)


THREE_MB = 3 * 1024 * 1024


def _upload(client, body: RecordingBody, **headers):
    return client.generic(
        "POST",
        "/api/v1/imports",
        CONTENT_LENGTH=str(body.size),
        CONTENT_TYPE="text/csv",
        **{"wsgi.input": body},
        **headers,
    )


def test_an_anonymous_upload_over_the_ordinary_limit_is_413_before_its_body_is_read(client, settings):
    settings.MAX_REQUEST_BODY_BYTES = 2_621_440
    settings.IMPORT_MAX_UPLOAD_BYTES = 200 * 1024 * 1024
    body = RecordingBody(THREE_MB)

    response = _upload(client, body)

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert body.read_bytes == 0


@pytest.mark.parametrize(
    "credentials",
    [{"HTTP_AUTHORIZATION": "Bearer sk_abc.not-a-real-secret"}, {"HTTP_COOKIE": "sessionid=not-a-real-session"}],
    ids=["bearer key", "session cookie"],
)
def test_an_upload_that_carries_credentials_gets_the_import_limit(client, db, settings, credentials):
    # The middleware looks for credentials, never checks them (no database round trip): a wrong
    # key or session is refused by authentication, still before anything reads the body.
    settings.MAX_REQUEST_BODY_BYTES = 2_621_440
    settings.IMPORT_MAX_UPLOAD_BYTES = 200 * 1024 * 1024
    body = RecordingBody(THREE_MB)

    response = _upload(client, body, **credentials)

    assert response.status_code in (401, 403)
    assert body.read_bytes == 0


def test_a_bearer_header_without_a_key_is_not_a_credential(client, settings):
    settings.MAX_REQUEST_BODY_BYTES = 100
    settings.IMPORT_MAX_UPLOAD_BYTES = 1000

    response = _upload(client, RecordingBody(500), HTTP_AUTHORIZATION="Bearer ")

    assert response.status_code == 413

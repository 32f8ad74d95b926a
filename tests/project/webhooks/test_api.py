"""The staff webhook API: endpoints (create, read, If-Match edits, secret rotation, delete), their
delivery log, sending a delivery again, the event types, and what the OpenAPI schema says."""

import pytest
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.validation import validate_schema
from rest_framework.test import APIClient

from project.webhooks import endpoints, services
from project.webhooks.events import event_types as event_types_now
from project.webhooks.events import register_event_types, unregister_event_types
from project.webhooks.models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from tests.conftest import bearer
from users.services import api_key_create

pytestmark = pytest.mark.django_db

TYPES = {"test.ping": "A test event.", "test.pong": "Another test event."}
ENDPOINTS = "/api/v1/webhooks/endpoints"
State = WebhookDelivery.State


@pytest.fixture(autouse=True)
def event_types():
    register_event_types(TYPES)
    yield
    unregister_event_types(TYPES)


def create(client, **fields):
    body = {"url": "https://hooks.example.com/in", "events": ["test.ping"], **fields}
    return client.post(ENDPOINTS, body, format="json")


@pytest.fixture
def endpoint(staff_user) -> WebhookEndpoint:
    return endpoints.endpoint_create(url="https://hooks.example.com/in", events=["test.ping"], actor=staff_user)


def delivery(endpoint, *, state=State.FAILED, n=0, **fields) -> WebhookDelivery:
    event = WebhookEvent.objects.create(
        key=f"test:{endpoint.pk}:{n}:{state}",
        webhook_id=f"msg_test{endpoint.pk}x{n}{state}",
        type="test.ping",
        payload={},
    )
    return WebhookDelivery.objects.create(endpoint=endpoint, event=event, state=state, attempts=3, **fields)


# --- who may ---------------------------------------------------------------------------------------


@pytest.fixture
def staff_without_scope_client(staff_user) -> APIClient:
    _, key = api_key_create(user=staff_user, scopes=["read", "write"])
    return bearer(APIClient(), key)


@pytest.mark.parametrize(
    ("who", "allowed"),
    [("api_client", False), ("customer_client", False), ("staff_without_scope_client", False), ("staff_client", True)],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", ENDPOINTS),
        ("post", ENDPOINTS),
        ("get", "/api/v1/webhooks/event-types"),
        ("get", "{endpoint}"),
        ("patch", "{endpoint}"),
        ("delete", "{endpoint}"),
        ("post", "{endpoint}/rotate-secret"),
        ("get", "{endpoint}/deliveries"),
        ("post", "/api/v1/webhooks/deliveries/{delivery}/resend"),
    ],
)
def test_only_staff_with_the_staff_scope_may_use_the_webhook_api(request, endpoint, who, allowed, method, path):
    client = request.getfixturevalue(who)
    row = delivery(endpoint)
    url = path.format(endpoint=f"{ENDPOINTS}/{endpoint.pk}", delivery=row.pk)
    headers = {"HTTP_IF_MATCH": f'"{endpoint.version}"'} if method == "patch" else {}
    body = {"description": "x"} if method == "patch" else {"url": "https://a.example.com/", "events": ["test.ping"]}

    response = getattr(client, method)(url, body if method in ("post", "patch") else None, format="json", **headers)

    if allowed:
        assert response.status_code < 300, response.content
    else:
        assert response.status_code in (401, 403)
        assert response.json()["error"]["code"] in ("not_authenticated", "permission_denied")
        assert WebhookEndpoint.objects.filter(pk=endpoint.pk, version=1, description="").exists()


# --- create and read -----------------------------------------------------------------------------


def test_a_new_endpoint_shows_its_secret_to_its_creator_and_on_its_own_page_but_not_in_the_list(
    staff_client, staff_user
):
    response = create(staff_client, events=["test.pong", "test.ping", "test.ping"], description="ERP")

    assert response.status_code == 201
    body = response.json()
    assert body["secret"].startswith("whsec_")
    assert body["events"] == ["test.ping", "test.pong"]  # duplicates dropped
    assert (body["active"], body["version"], body["consecutive_failures"]) == (True, 1, 0)
    assert response["ETag"] == '"1"'
    row = WebhookEndpoint.objects.get(pk=body["id"])
    assert (row.secret, row.created_by) == (body["secret"], staff_user)

    listed = staff_client.get(ENDPOINTS).json()
    assert [item["id"] for item in listed["results"]] == [body["id"]]
    assert "secret" not in listed["results"][0]
    assert staff_client.get(f"{ENDPOINTS}/{body['id']}").json()["secret"] == body["secret"]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "no spaces"),
        ("hooks.example.com/in", "Only http and https"),
        ("ftp://hooks.example.com/in", "Only http and https"),
        ("https://user:password@hooks.example.com/in", "Credentials"),
        ("https://token@hooks.example.com/in", "Credentials"),
        ("http://127.0.0.1:8000/in", "private, loopback"),
        ("http://10.1.2.3/in", "private, loopback"),
        ("http://192.168.0.10/in", "private, loopback"),
        ("http://169.254.169.254/latest/meta-data", "private, loopback"),
        ("http://[::1]/in", "private, loopback"),
        ("http://[::ffff:127.0.0.1]/in", "private, loopback"),
        ("http://2130706433/in", "valid URL"),  # 127.0.0.1 as one number, as inet_aton reads it
        ("http://0x7f.1/in", "valid URL"),
        ("http://localhost:8000/in", "localhost"),
        ("https://hooks.example.com:99999/in", "valid URL"),
        ("https://hooks.example.com/a\x01b", "control characters"),
        ("https://hooks.example.com/\x00", "Null characters"),
        ("https://hooks.example.com/" + "a" * 2000, "2000"),
    ],
)
def test_urls_that_cannot_or_must_not_receive_webhooks_are_refused(staff_client, url, message):
    response = create(staff_client, url=url)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert message in " ".join(error["fields"]["url"])
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"events": ["test.nope"]}, "events"),
        ({"events": []}, "events"),
        ({"events": "test.ping"}, "events"),
        ({"events": ["test.ping"] * 500}, "events"),  # more items than there are types
        ({"description": "d" * 201}, "description"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"secret": "whsec_mine"}, "secret"),
    ],
)
def test_bad_fields_are_refused_with_the_field_named(staff_client, fields, field):
    response = create(staff_client, **fields)

    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    assert not WebhookEndpoint.objects.exists()


def test_too_many_event_types_are_refused_in_one_message_before_any_is_checked(staff_client):
    response = create(staff_client, events=[{"not": "a type"}] * 50_000)

    assert response.status_code == 400
    assert response.json()["error"]["fields"]["events"] == [f"At most {len(event_types_now())} items."]


def test_plain_http_is_refused_when_only_https_is_allowed(staff_client, settings):
    settings.WEBHOOK_ALLOW_HTTP = False

    refused = create(staff_client, url="http://hooks.example.com/in")
    accepted = create(staff_client, url="https://hooks.example.com/in")

    assert refused.status_code == 400
    assert refused.json()["error"]["fields"]["url"] == ["Only https URLs are accepted."]
    assert accepted.status_code == 201


def test_private_addresses_are_accepted_when_the_setting_allows_them(staff_client, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = True

    assert create(staff_client, url="http://127.0.0.1:8000/in").status_code == 201


def test_a_host_name_is_not_resolved_at_registration(staff_client):
    # .invalid never resolves (RFC 6761): the delivery, not the registration, checks the address.
    assert create(staff_client, url="https://receiver.invalid/in").status_code == 201


def test_unknown_and_out_of_range_ids_are_404(staff_client):
    for path in (f"{ENDPOINTS}/999999", f"{ENDPOINTS}/99999999999999999999999", f"{ENDPOINTS}/999999/deliveries"):
        response = staff_client.get(path)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
    assert staff_client.post("/api/v1/webhooks/deliveries/99999999999999999999999/resend").status_code == 404


# --- edits ---------------------------------------------------------------------------------------


def test_patch_needs_if_match_refuses_a_stale_one_and_applies_a_current_one(staff_client, endpoint):
    url = f"{ENDPOINTS}/{endpoint.pk}"
    change = {"description": "new", "events": ["test.pong"]}

    missing = staff_client.patch(url, change, format="json")
    stale = staff_client.patch(url, change, format="json", HTTP_IF_MATCH='"7"')
    current = staff_client.patch(url, change, format="json", HTTP_IF_MATCH='"1"')
    replayed = staff_client.patch(url, {"description": "newer"}, format="json", HTTP_IF_MATCH='"1"')

    assert (missing.status_code, missing.json()["error"]["code"]) == (428, "precondition_required")
    assert (stale.status_code, stale.json()["error"]["code"]) == (412, "precondition_failed")
    assert stale.json()["error"]["current_version"] == 1
    assert current.status_code == 200
    assert (current.json()["description"], current.json()["events"], current.json()["version"]) == (
        "new",
        ["test.pong"],
        2,
    )
    assert current["ETag"] == '"2"'
    assert replayed.status_code == 412
    endpoint.refresh_from_db()
    assert (endpoint.description, endpoint.version) == ("new", 2)


def test_patch_refuses_fields_staff_may_not_set(staff_client, endpoint):
    response = staff_client.patch(
        f"{ENDPOINTS}/{endpoint.pk}", {"consecutive_failures": 0}, format="json", HTTP_IF_MATCH='"1"'
    )

    assert response.status_code == 400
    assert "consecutive_failures" in response.json()["error"]["fields"]


def test_turning_a_disabled_endpoint_back_on_clears_its_failures_and_wakes_the_dispatcher(
    staff_client, endpoint, monkeypatch, django_capture_on_commit_callbacks
):
    kicks = []
    monkeypatch.setattr(services, "kick", lambda: kicks.append(1))
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        active=False, disabled_reason="Failing for 24 hours.", consecutive_failures=20, failing_since=timezone.now()
    )

    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.patch(
            f"{ENDPOINTS}/{endpoint.pk}", {"active": True}, format="json", HTTP_IF_MATCH='"1"'
        )

    assert response.status_code == 200
    body = response.json()
    assert (body["active"], body["disabled_reason"], body["consecutive_failures"], body["failing_since"]) == (
        True,
        "",
        0,
        None,
    )
    assert kicks == [1]


def test_an_edit_of_an_active_endpoint_keeps_its_failure_count(staff_client, endpoint):
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(consecutive_failures=3, failing_since=timezone.now())

    response = staff_client.patch(f"{ENDPOINTS}/{endpoint.pk}", {"active": True}, format="json", HTTP_IF_MATCH='"1"')

    assert response.status_code == 200
    assert response.json()["consecutive_failures"] == 3
    assert response.json()["failing_since"] is not None


def test_rotating_the_secret_replaces_it_and_moves_the_version(staff_client, endpoint):
    url = f"{ENDPOINTS}/{endpoint.pk}/rotate-secret"

    stale = staff_client.post(url, HTTP_IF_MATCH='"5"')
    response = staff_client.post(url, HTTP_IF_MATCH='"1"')

    assert stale.status_code == 412
    assert response.status_code == 200
    assert response.json()["secret"].startswith("whsec_")
    assert response.json()["secret"] != endpoint.secret
    assert response.json()["version"] == 2
    assert (
        staff_client.patch(
            f"{ENDPOINTS}/{endpoint.pk}", {"description": "x"}, format="json", HTTP_IF_MATCH='"1"'
        ).status_code
        == 412
    )


def test_deleting_an_endpoint_deletes_its_deliveries_and_keeps_the_events(staff_client, endpoint):
    row = delivery(endpoint)

    stale = staff_client.delete(f"{ENDPOINTS}/{endpoint.pk}", HTTP_IF_MATCH='"3"')
    response = staff_client.delete(f"{ENDPOINTS}/{endpoint.pk}")

    assert stale.status_code == 412
    assert response.status_code == 204
    assert not WebhookEndpoint.objects.exists()
    assert not WebhookDelivery.objects.exists()
    assert WebhookEvent.objects.filter(pk=row.event_id).exists()
    assert staff_client.delete(f"{ENDPOINTS}/{endpoint.pk}").status_code == 404


# --- the delivery log ----------------------------------------------------------------------------


def test_the_delivery_log_lists_an_endpoints_deliveries_newest_first_by_state_and_page(
    staff_client, endpoint, staff_user
):
    other = endpoints.endpoint_create(url="https://other.example.com/", events=["test.ping"], actor=staff_user)
    failed = delivery(endpoint, n=1, last_status=500, last_error="boom " * 100, last_duration_ms=12)
    succeeded = delivery(endpoint, n=2, state=State.SUCCEEDED, last_status=204, delivered_at=timezone.now())
    delivery(other, n=3)
    url = f"{ENDPOINTS}/{endpoint.pk}/deliveries"

    everything = staff_client.get(url).json()
    only_failed = staff_client.get(url, {"state": "failed"}).json()
    first_page = staff_client.get(url, {"page_size": 1}).json()

    assert [row["id"] for row in everything["results"]] == [succeeded.pk, failed.pk]
    row = only_failed["results"][0]
    assert [r["id"] for r in only_failed["results"]] == [failed.pk]
    assert (row["event_type"], row["webhook_id"], row["state"], row["attempts"]) == (
        "test.ping",
        failed.event.webhook_id,
        "failed",
        3,
    )
    assert (row["last_status"], row["last_duration_ms"], row["delivered_at"]) == (500, 12, None)
    assert len(row["last_error"]) == 300 and row["last_error"].endswith("…")
    assert {"next_attempt_at", "created_at"} <= row.keys()
    assert [r["id"] for r in first_page["results"]] == [succeeded.pk]
    assert staff_client.get(first_page["next"]).json()["results"][0]["id"] == failed.pk
    assert staff_client.get(url, {"state": "lost"}).status_code == 400


def test_resend_puts_a_failed_delivery_back_to_pending(staff_client, endpoint):
    row = delivery(endpoint, state=State.FAILED, last_status=500, last_error="boom")

    response = staff_client.post(f"/api/v1/webhooks/deliveries/{row.pk}/resend")

    assert response.status_code == 202
    assert response.json()["id"] == row.pk
    assert response.json()["state"] == "pending"
    row.refresh_from_db()
    assert row.state == State.PENDING
    assert row.next_attempt_at <= timezone.now()


def test_event_types_lists_every_registered_type(staff_client):
    listed = staff_client.get("/api/v1/webhooks/event-types").json()

    assert {"type": "test.ping", "description": "A test event."} in listed
    assert [row["type"] for row in listed] == sorted(row["type"] for row in listed)


# --- the schema ----------------------------------------------------------------------------------


@pytest.fixture
def schema() -> dict:
    return SchemaGenerator().get_schema(request=None, public=True)


def test_the_schema_is_valid_and_declares_the_webhook_operations_statuses(schema):
    validate_schema(schema)
    paths = schema["paths"]
    assert set(paths[f"{ENDPOINTS}/{{endpoint_id}}"]["patch"]["responses"]) >= {"200", "400", "404", "412", "428"}
    assert "If-Match" in [p["name"] for p in paths[f"{ENDPOINTS}/{{endpoint_id}}"]["patch"]["parameters"]]
    assert "202" in paths["/api/v1/webhooks/deliveries/{delivery_id}/resend"]["post"]["responses"]
    listed = schema["components"]["schemas"]["WebhookEndpoint"]
    assert "secret" not in listed["properties"]
    assert "secret" in schema["components"]["schemas"]["WebhookEndpointWithSecret"]["properties"]


def test_the_schema_documents_the_body_of_every_event_type(schema):
    webhooks = schema["webhooks"]
    assert set(event_types_now()) <= set(webhooks)
    for event_type in event_types_now():
        body = webhooks[event_type]["post"]["requestBody"]["content"]["application/json"]["schema"]
        component = schema["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]
        assert set(component["properties"]) == {"type", "timestamp", "data"}
        assert component["properties"]["type"]["enum"] == [event_type]

"""Webhooks in the admin: endpoints created and edited through the services, their secret shown,
the delivery log listed, and "Send again" through delivery_resend."""

import pytest
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from project.webhooks import admin as webhooks_admin
from project.webhooks import endpoints
from project.webhooks.events import register_event_types, unregister_event_types
from project.webhooks.models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from users.models import User

pytestmark = pytest.mark.django_db

TYPES = {"test.ping": "A test event.", "test.pong": "Another test event."}
State = WebhookDelivery.State
ENDPOINTS = "admin:project_webhookendpoint_changelist"
DELIVERIES = "admin:project_webhookdelivery_changelist"


@pytest.fixture(autouse=True)
def event_types():
    register_event_types(TYPES)
    yield
    unregister_event_types(TYPES)


@pytest.fixture
def endpoint(admin_user) -> WebhookEndpoint:
    return endpoints.endpoint_create(url="https://hooks.example.com/in", events=["test.ping"], actor=admin_user)


@pytest.fixture
def deliveries(endpoint) -> dict[str, WebhookDelivery]:
    rows = {}
    for state in State.values:
        event = WebhookEvent.objects.create(
            key=f"test:{state}", webhook_id=f"msg_{state}", type="test.ping", payload={"n": state}
        )
        rows[state] = WebhookDelivery.objects.create(
            endpoint=endpoint, event=event, state=state, attempts=8, last_status=500, last_error=f"{state} error"
        )
    return rows


def form_data(endpoint: WebhookEndpoint, **changes) -> dict:
    data = {
        "url": endpoint.url,
        "description": endpoint.description,
        "events": endpoint.events,
        "max_concurrency": endpoint.max_concurrency,
        "version": endpoint.version,
        **changes,
    }
    if endpoint.active and "active" not in changes:
        data["active"] = "on"
    return {name: value for name, value in data.items() if value is not False}


def test_the_endpoint_list_and_page_render_with_the_secret_and_a_link_to_the_log(admin, endpoint):
    listed = admin.get(reverse(ENDPOINTS))
    page = admin.get(reverse("admin:project_webhookendpoint_change", args=[endpoint.pk]))

    assert listed.status_code == 200
    assert b"https://hooks.example.com/in" in listed.content
    assert endpoint.secret.encode() not in listed.content
    assert page.status_code == 200
    assert endpoint.secret.encode() in page.content
    assert f"?endpoint__id__exact={endpoint.pk}".encode() in page.content
    assert b'name="version"' in page.content


def test_the_add_form_creates_an_endpoint_through_the_service(admin, admin_user):
    assert admin.get(reverse("admin:project_webhookendpoint_add")).status_code == 200

    response = admin.post(
        reverse("admin:project_webhookendpoint_add"),
        {
            "url": "https://erp.example.com/hooks",
            "events": ["test.ping", "test.pong"],
            "max_concurrency": 3,
            "active": "on",
        },
    )

    assert response.status_code == 302, response.content
    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.secret.startswith("whsec_")  # only endpoint_create makes one
    assert (endpoint.events, endpoint.max_concurrency, endpoint.created_by) == (
        ["test.ping", "test.pong"],
        3,
        admin_user,
    )


def test_the_add_form_shows_the_services_refusal_and_creates_nothing(admin):
    response = admin.post(
        reverse("admin:project_webhookendpoint_add"),
        {"url": "http://169.254.169.254/latest", "events": ["test.ping"], "max_concurrency": 2},
    )

    assert response.status_code == 200
    assert b"private, loopback or link-local" in response.content
    assert not WebhookEndpoint.objects.exists()


def test_a_save_over_someone_elses_is_refused(admin, endpoint):
    endpoints.endpoint_update(endpoint_id=endpoint.pk, expected_version=1, description="theirs")

    response = admin.post(
        reverse("admin:project_webhookendpoint_change", args=[endpoint.pk]), form_data(endpoint, description="mine")
    )

    assert response.status_code == 200
    assert b"changed by someone else (it is now at version 2)" in response.content
    endpoint.refresh_from_db()
    assert endpoint.description == "theirs"


def test_ticking_active_on_a_disabled_endpoint_clears_its_failures(admin, endpoint):
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        active=False, disabled_reason="Failing for 24 hours.", consecutive_failures=20, failing_since=timezone.now()
    )
    endpoint.refresh_from_db()

    response = admin.post(
        reverse("admin:project_webhookendpoint_change", args=[endpoint.pk]), form_data(endpoint, active="on")
    )

    assert response.status_code == 302, response.content
    endpoint.refresh_from_db()
    assert (endpoint.active, endpoint.disabled_reason, endpoint.consecutive_failures, endpoint.failing_since) == (
        True,
        "",
        0,
        None,
    )
    assert endpoint.version == 2


def test_deleting_an_endpoint_in_the_admin_removes_its_deliveries(admin, endpoint, deliveries):
    url = reverse("admin:project_webhookendpoint_delete", args=[endpoint.pk])

    assert admin.get(url).status_code == 200
    response = admin.post(url, {"post": "yes"})

    assert response.status_code == 302
    assert not WebhookEndpoint.objects.exists()
    assert not WebhookDelivery.objects.exists()


def test_the_delivery_log_filters_by_state_and_endpoint_and_searches_by_webhook_id(admin, endpoint, deliveries):
    page = admin.get(reverse(DELIVERIES), {"state__exact": "failed", "endpoint__id__exact": endpoint.pk})
    found = admin.get(reverse(DELIVERIES), {"q": "msg_succeeded"})

    assert page.status_code == 200
    assert b"failed error" in page.content
    assert b"pending error" not in page.content
    assert b"succeeded error" in found.content
    assert b"failed error" not in found.content


def test_a_delivery_page_is_read_only_and_shows_the_body(admin, deliveries):
    page = admin.get(reverse("admin:project_webhookdelivery_change", args=[deliveries["failed"].pk]))

    assert page.status_code == 200
    assert b"msg_failed" in page.content
    assert b"&quot;n&quot;: &quot;failed&quot;" in page.content
    assert b'name="_save"' not in page.content


def test_send_again_puts_a_failed_delivery_back_to_pending(admin, deliveries):
    failed = deliveries["failed"]

    response = admin.post(reverse(DELIVERIES), {"action": "send_again", "_selected_action": [failed.pk]})

    assert response.status_code == 302
    failed.refresh_from_db()
    assert failed.state == State.PENDING
    notes = [str(m) for m in get_messages(response.wsgi_request)]
    assert "1 delivery(ies) will be sent again." in notes


def test_send_again_over_more_deliveries_than_its_limit_does_nothing_and_says_so(admin, deliveries, monkeypatch):
    monkeypatch.setattr(webhooks_admin, "ACTION_MAX_DELIVERIES", 2)
    before = sorted(WebhookDelivery.objects.values_list("pk", "state", "attempts"))

    response = admin.post(
        reverse(DELIVERIES),
        {"action": "send_again", "select_across": "1", "_selected_action": [deliveries["failed"].pk]},
    )

    assert response.status_code == 302
    assert sorted(WebhookDelivery.objects.values_list("pk", "state", "attempts")) == before
    notes = [str(m) for m in get_messages(response.wsgi_request)]
    assert notes == ["Select at most 2 deliveries at a time; narrow the list with its filters. Nothing was done."]


def test_staff_who_may_only_view_deliveries_cannot_send_them_again(deliveries):
    viewer = User.objects.create_user(
        email="viewer@example.com", password="correct horse battery staple", is_staff=True
    )
    viewer.user_permissions.add(Permission.objects.get(codename="view_webhookdelivery"))
    client = Client()
    client.force_login(viewer)

    assert client.get(reverse(DELIVERIES)).status_code == 200
    client.post(reverse(DELIVERIES), {"action": "send_again", "_selected_action": [deliveries["failed"].pk]})

    deliveries["failed"].refresh_from_db()
    assert deliveries["failed"].state == State.FAILED


def test_rotating_secrets_from_the_list_gives_each_selected_endpoint_a_new_one(admin, endpoint):
    response = admin.post(reverse(ENDPOINTS), {"action": "rotate_secrets", "_selected_action": [endpoint.pk]})

    assert response.status_code == 302
    rotated = WebhookEndpoint.objects.get(pk=endpoint.pk)
    assert rotated.secret.startswith("whsec_")
    assert (rotated.secret != endpoint.secret, rotated.version) == (True, 2)

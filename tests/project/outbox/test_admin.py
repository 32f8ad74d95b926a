"""The outbox in the admin: failed messages listed, retried or discarded through the services."""

import pytest
from django.contrib.messages import get_messages
from django.db import transaction
from django.test import Client
from django.urls import reverse

from project.outbox import admin as project_admin
from project.outbox.models import OutboxMessage
from project.outbox.services import outbox_enqueue
from users.models import User

pytestmark = pytest.mark.django_db

State = OutboxMessage.State
CHANGELIST = "admin:project_outboxmessage_changelist"


@pytest.fixture
def admin() -> Client:
    user = User.objects.create_user(
        email="admin@example.com", password="correct horse battery staple", is_staff=True, is_superuser=True
    )
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def messages_by_state() -> dict[str, int]:
    ids = {}
    with transaction.atomic():
        for state in State.values:
            ids[state] = outbox_enqueue(task="orders.send_order_email", kwargs={"order_id": 1, "kind": state[:4]})
    for state, message_id in ids.items():
        OutboxMessage.objects.filter(pk=message_id).update(state=state, attempts=5, last_error=f"{state} error")
    return ids


def test_changelist_filters_and_searches(admin, messages_by_state):
    page = admin.get(reverse(CHANGELIST), {"state__exact": "dead", "q": "send_order"})

    assert page.status_code == 200
    assert b"dead error" in page.content
    assert b"pending error" not in page.content
    assert admin.get(reverse(CHANGELIST), {"task": "orders.send_order_email"}).status_code == 200


def test_a_message_page_is_read_only(admin, messages_by_state):
    page = admin.get(reverse("admin:project_outboxmessage_change", args=[messages_by_state["dead"]]))

    assert page.status_code == 200
    assert b"dead error" in page.content
    assert b'name="_save"' not in page.content


def test_retry_puts_dead_and_waiting_messages_back_and_leaves_sent_and_done_alone(admin, messages_by_state):
    response = admin.post(
        reverse(CHANGELIST), {"action": "retry_messages", "_selected_action": list(messages_by_state.values())}
    )

    assert response.status_code == 302
    rows = {m.pk: m for m in OutboxMessage.objects.all()}
    for state in ("dead", "pending"):
        assert (rows[messages_by_state[state]].state, rows[messages_by_state[state]].attempts) == (State.PENDING, 0)
    assert rows[messages_by_state["sent"]].state == State.SENT
    assert rows[messages_by_state["done"]].state == State.DONE
    notes = [str(m) for m in get_messages(response.wsgi_request)]
    assert "2 message(s) will be published again." in notes


def test_discard_deletes_dead_and_waiting_messages_only(admin, messages_by_state):
    admin.post(
        reverse(CHANGELIST), {"action": "discard_messages", "_selected_action": list(messages_by_state.values())}
    )

    assert set(OutboxMessage.objects.values_list("state", flat=True)) == {State.SENT, State.DONE}


def test_staff_without_outbox_permission_cannot_act(messages_by_state):
    from django.contrib.auth.models import Permission

    user = User.objects.create_user(email="viewer@example.com", password="correct horse battery staple", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_outboxmessage"))
    client = Client()
    client.force_login(user)

    assert client.get(reverse(CHANGELIST)).status_code == 200
    client.post(reverse(CHANGELIST), {"action": "discard_messages", "_selected_action": [messages_by_state["dead"]]})

    assert OutboxMessage.objects.filter(pk=messages_by_state["dead"]).exists()


@pytest.mark.parametrize("action", ["retry_messages", "discard_messages"])
def test_an_action_over_more_messages_than_its_limit_does_nothing_and_says_so(
    admin, messages_by_state, monkeypatch, action
):
    monkeypatch.setattr(project_admin, "ACTION_MAX_MESSAGES", 3)
    before = sorted(OutboxMessage.objects.values_list("pk", "state", "attempts"))

    response = admin.post(
        reverse(CHANGELIST),
        {"action": action, "select_across": "1", "_selected_action": [messages_by_state["dead"]]},
    )

    assert response.status_code == 302
    assert sorted(OutboxMessage.objects.values_list("pk", "state", "attempts")) == before
    notes = [str(m) for m in get_messages(response.wsgi_request)]
    assert notes == ["Select at most 3 messages at a time; narrow the list with its filters. Nothing was done."]

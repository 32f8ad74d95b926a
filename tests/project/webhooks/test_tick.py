"""Beat's webhook tick runs on the default queue and wakes the dispatcher only when a delivery is
due, so a shop without endpoints never fills the webhooks queue."""

import contextlib
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from project.celery import app
from project.webhooks.models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from project.webhooks.tasks import tick

pytestmark = pytest.mark.django_db(transaction=True)


def webhooks_queue_length() -> int:
    with app.connection_for_write() as connection:
        return connection.default_channel.client.llen(settings.WEBHOOK_QUEUE)  # the client adds the key prefix


@pytest.fixture
def empty_queue():
    """This run's webhooks queue starts empty (a queue never declared yet is empty already)."""
    with app.connection_for_write() as connection, contextlib.suppress(Exception):
        connection.default_channel.queue_purge(settings.WEBHOOK_QUEUE)


def test_the_tick_wakes_the_dispatcher_only_when_a_delivery_is_due(empty_queue):
    assert "webhooks.tick" not in settings.CELERY_TASK_ROUTES  # the default queue: bin/worker takes it
    assert tick() is False  # no endpoint at all
    hook = WebhookEndpoint.objects.create(url="https://hooks.example.com/", events=["x.y"], secret="whsec_AAAA")
    event = WebhookEvent.objects.create(key="k", webhook_id="msg_1", type="x.y", payload={})
    later = WebhookDelivery.objects.create(
        endpoint=hook, event=event, next_attempt_at=timezone.now() + timedelta(minutes=5)
    )
    assert tick() is False  # a retry not due yet
    assert webhooks_queue_length() == 0

    WebhookDelivery.objects.filter(pk=later.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    assert tick() is True
    assert webhooks_queue_length() == 1  # one webhooks.dispatch published

    WebhookEndpoint.objects.filter(pk=hook.pk).update(active=False)
    assert tick() is False  # a switched-off endpoint's deliveries wait

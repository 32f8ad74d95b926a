"""webhooks.prune deletes what is finished and old, and keeps what is open or recent."""

from datetime import timedelta

import pytest
from django.utils import timezone

from project.webhooks.models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from project.webhooks.tasks import prune

pytestmark = pytest.mark.django_db


def test_prune_deletes_old_finished_deliveries_and_their_orphaned_events_only():
    hook = WebhookEndpoint.objects.create(url="https://hooks.example.com/", events=["x.y"], secret="whsec_AAAA")
    old = timezone.now() - timedelta(days=30)
    kept_events = []
    for n, (state, created) in enumerate(
        [("succeeded", old), ("failed", old), ("pending", old), ("succeeded", timezone.now())]
    ):
        event = WebhookEvent.objects.create(key=f"k{n}", webhook_id=f"msg_{n}", type="x.y", payload={})
        WebhookEvent.objects.filter(pk=event.pk).update(created_at=created)
        delivery = WebhookDelivery.objects.create(endpoint=hook, event=event, state=state)
        WebhookDelivery.objects.filter(pk=delivery.pk).update(created_at=created)
        if state == "pending" or created is not old:
            kept_events.append(event.pk)

    assert prune(older_than_days=14) == 4  # two deliveries, two events
    assert sorted(WebhookEvent.objects.values_list("pk", flat=True)) == sorted(kept_events)
    assert sorted(WebhookDelivery.objects.values_list("state", flat=True)) == ["pending", "succeeded"]
    assert prune(older_than_days=0) == 0  # refused: a bad argument deletes nothing
    assert WebhookDelivery.objects.count() == 2

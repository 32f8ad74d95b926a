"""Webhook endpoints, the events written for them, and one delivery per (endpoint, event).

An app emits an event inside the transaction of the change that caused it (from Python through
project.webhooks.services.webhook_emit_many, from SQL functions directly; both call the SQL
function webhook_write); the event's deliveries are written in that same transaction for every
active endpoint that wants its type. Deliveries keep their own schedule (attempts, next attempt,
last status and error), so a retry does not depend on outbox leases or broker countdowns
(DESIGN.md §9), and run on their own Celery queue (project.webhooks.delivery).
"""

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now


class WebhookEndpoint(models.Model):
    """A receiver staff registered: where to send, which event types, the signing secret."""

    url = models.URLField(max_length=2000)
    description = models.CharField(max_length=200, blank=True)
    # Event types wanted ("order.placed", ...); validated against project.webhooks.events.
    events = ArrayField(models.CharField(max_length=64), default=list)
    # Standard Webhooks: "whsec_" + base64 of the key bytes. Shown to staff on creation.
    secret = models.CharField(max_length=200)
    active = models.BooleanField(default=True)
    # Deliveries to this endpoint in flight at once, at most (a hanging receiver holds no more).
    max_concurrency = models.PositiveSmallIntegerField(default=2)
    # Failed attempts in a row and since when; an endpoint failing long enough is switched off.
    consecutive_failures = models.PositiveIntegerField(default=0)
    failing_since = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.CharField(max_length=200, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())
    version = models.PositiveIntegerField(default=1)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.url} ({'active' if self.active else 'off'})"


class WebhookEvent(models.Model):
    """One event: its type, its body as every endpoint and every retry receives it, its id.

    `key` makes emitting idempotent (an outbox message delivered twice emits once): the emitter
    names the event, e.g. "outbox:<message id>" or "stock.low:<level>:<hour>".
    """

    key = models.CharField(max_length=200, unique=True)
    # The Standard Webhooks `webhook-id`: the same at every attempt, to every endpoint.
    webhook_id = models.CharField(max_length=64, unique=True)
    type = models.CharField(max_length=64)
    payload = models.JSONField()
    # Deliveries of one ordering key to one endpoint go out in event order (e.g. "order:R-000123").
    ordering_key = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["created_at"], name="webhook_event_created")]

    def __str__(self) -> str:
        return f"{self.type} {self.webhook_id}"


class WebhookDelivery(models.Model):
    """One event to one endpoint: pending → delivering (claimed, with a lease) → succeeded or failed."""

    class State(models.TextChoices):
        PENDING = "pending"
        DELIVERING = "delivering"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    event = models.ForeignKey(WebhookEvent, on_delete=models.CASCADE, related_name="deliveries")
    # Copied from the event so the dispatcher's ordering rule reads one table.
    ordering_key = models.CharField(max_length=200, blank=True)
    state = models.CharField(max_length=12, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(db_default=Now())
    # The claim of the attempt in flight: a worker killed mid-attempt leaves it to run out.
    claimed_until = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    last_duration_ms = models.PositiveIntegerField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "event"], name="webhook_delivery_once"),
        ]
        indexes = [
            # The dispatcher: an endpoint's deliveries due, oldest first (each endpoint gets its own
            # share of a round, project.webhooks.services); finished ones stay out of the index.
            models.Index(
                fields=["endpoint", "next_attempt_at", "id"],
                condition=Q(state__in=["pending", "delivering"]),
                name="webhook_delivery_due",
            ),
            # Head of line per (endpoint, ordering key), and an endpoint's in-flight count.
            models.Index(
                fields=["endpoint", "ordering_key", "id"],
                condition=Q(state__in=["pending", "delivering"]),
                name="webhook_delivery_open",
            ),
            # The delivery log of one endpoint, newest first.
            models.Index(fields=["endpoint", "-id"], name="webhook_delivery_log"),
            # An endpoint's deliveries in flight (claimed or handed out): the per-endpoint cap counts
            # them at every dispatcher round and claim. Few rows: most deliveries have no claim.
            models.Index(
                fields=["endpoint", "claimed_until"],
                condition=Q(claimed_until__isnull=False),
                name="webhook_delivery_claimed",
            ),
            # Deliveries that gave up: the metrics gauge and the staff's list of failures.
            models.Index(fields=["-id"], condition=Q(state="failed"), name="webhook_delivery_failed"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.state} ({self.attempts} attempts)"

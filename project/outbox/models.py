from django.db import models
from django.db.models import Q
from django.db.models.functions import Now


class OutboxMessage(models.Model):
    """A Celery task to run because of a change, written in the same transaction as the change.

    The relay (project.outbox.relay) publishes `pending` rows after commit and marks them `sent`; the
    task claims its row, runs, and marks it `done` (project.outbox.services.OutboxTask). A `sent` row not
    done by `next_attempt_at` (the lease of its task kind) is published again; a row delivered or failed
    OUTBOX_MAX_ATTEMPTS times becomes `dead` and waits in the admin for a retry or a discard.
    """

    class State(models.TextChoices):
        PENDING = "pending"
        SENT = "sent"
        DONE = "done"
        DEAD = "dead"

    task = models.CharField(max_length=200)
    args = models.JSONField(default=list, blank=True)
    kwargs = models.JSONField(default=dict, blank=True)
    request_id = models.CharField(max_length=128, blank=True)
    state = models.CharField(max_length=8, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0, help_text="Times published to the broker.")
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(db_default=Now())
    # For a pending row: when the relay may publish it (now, or later after a failure).
    # For a sent row: when its lease runs out and the relay publishes it again.
    # The database's clock decides every time of this table, so app servers' clocks never skew it.
    next_attempt_at = models.DateTimeField(db_default=Now())
    sent_at = models.DateTimeField(null=True, blank=True)
    done_at = models.DateTimeField(null=True, blank=True)
    # The delivery running the task (its Celery task id) and until when: a second delivery skips
    # the message while the claim is live; a crashed delivery's claim runs out (OutboxTask).
    claimed_by = models.CharField(max_length=255, blank=True, db_default="")
    claimed_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            # The relay's claim: rows due for (re)publishing, oldest first. Done and dead rows,
            # nearly all of the table, stay out of the index.
            models.Index(
                fields=["next_attempt_at", "id"],
                condition=Q(state__in=["pending", "sent"]),
                name="outbox_due",
            ),
            # prune_outbox deletes done rows by age.
            models.Index(fields=["done_at"], condition=Q(state="done"), name="outbox_done_at"),
            # The admin's list of failures and the backlog gauge.
            models.Index(fields=["state", "-id"], name="outbox_state_id"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.task} ({self.state})"

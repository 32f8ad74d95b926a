"""Every locking queryset of the project app: the outbox rows.

Outbox rows are locked by the relay (claim, publish, mark sent, one short transaction; SKIP
LOCKED) and by an outbox delivery while it claims its rows and while it marks them done (two
short transactions, each locking its rows in id order with `lock_messages`; the task itself runs
holding no lock, project.outbox.services.OutboxTask). Nothing else is locked meanwhile, so these
locks take part in no cycle with the order and stock locks.
"""

from collections.abc import Iterable

from django.db.models.functions import Now

from project.outbox.models import OutboxMessage

# What the relay reads of a claimed row: timestamps and errors are written in SQL, never read.
RELAY_FIELDS = ("id", "task", "args", "kwargs", "request_id", "attempts")


def claim_due_messages(limit: int) -> list[OutboxMessage]:
    """Pending rows due now and sent rows whose lease ran out, oldest due first (the `outbox_due`
    index order). SKIP LOCKED: several relays share the work. A row whose task is running is not
    due: the task's claim moved `next_attempt_at` to the end of its lease."""
    return list(
        OutboxMessage.objects.select_for_update(of=("self",), skip_locked=True)
        .filter(state__in=[OutboxMessage.State.PENDING, OutboxMessage.State.SENT], next_attempt_at__lte=Now())
        .order_by("next_attempt_at", "id")
        .only(*RELAY_FIELDS)[:limit]
    )


def lock_message(message_id: int) -> OutboxMessage | None:
    return OutboxMessage.objects.select_for_update(of=("self",)).filter(pk=message_id).order_by("pk").first()


def lock_messages(message_ids: Iterable[int]) -> list[int]:
    """Lock these rows in id order (waiting for a relay committing them); returns the ids that exist."""
    return list(
        OutboxMessage.objects.select_for_update(of=("self",))
        .filter(pk__in=list(message_ids))
        .order_by("pk")
        .values_list("pk", flat=True)
    )

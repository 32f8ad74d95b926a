"""Every locking queryset of the project app: the outbox rows.

Outbox rows are locked by the relay (claim, publish, mark sent, one short transaction; SKIP
LOCKED) and by an outbox delivery while it claims its rows and while it marks them done (two
short transactions, each one statement that locks its rows in id order and updates them:
`CLAIM_MESSAGES_SQL`, `MARK_DONE_SQL`; the task itself runs
holding no lock, project.outbox.services.OutboxTask). Nothing else is locked meanwhile, so these
locks take part in no cycle with the order and stock locks.
"""

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


# An outbox delivery's two statements. Each locks the delivery's rows (`%(ids)s`) in id order in
# its CTE (waiting for a relay committing them; MATERIALIZED, so every lock is taken, in that order,
# before the UPDATE reads a row), then updates them: locking and updating in one round trip.

# Claim for delivery `%(delivery)s` for `%(lease)s` seconds what is not done and not claimed by
# another live delivery (project.outbox.services.outbox_claim_many).
CLAIM_MESSAGES_SQL = """
WITH locked AS MATERIALIZED (SELECT id FROM project_outboxmessage WHERE id = ANY(%(ids)s) ORDER BY id FOR UPDATE)
UPDATE project_outboxmessage AS m
   SET claimed_by = %(delivery)s, claimed_until = now() + make_interval(secs => %(lease)s),
       next_attempt_at = now() + make_interval(secs => %(lease)s)
  FROM locked
 WHERE m.id = locked.id AND m.state <> 'done'
   AND (m.claimed_by = %(delivery)s OR m.claimed_until IS NULL OR m.claimed_until <= now())
RETURNING m.id, m.task, m.args::text, m.kwargs::text, m.request_id, m.created_at, m.claimed_by, m.claimed_until
"""

# Mark done what is not done yet (project.outbox.services._mark_done).
MARK_DONE_SQL = """
WITH locked AS MATERIALIZED (SELECT id FROM project_outboxmessage WHERE id = ANY(%(ids)s) ORDER BY id FOR UPDATE)
UPDATE project_outboxmessage AS m
   SET state = 'done', done_at = now(), last_error = '', claimed_until = NULL
  FROM locked
 WHERE m.id = locked.id AND m.state <> 'done'
"""

"""Webhook writes: emitting events, handing deliveries out, recording attempts, endpoint health.

A delivery's life (every time is the database's clock, as in the outbox: `statement_timestamp()`,
which is what the models' `Now()` defaults are, so a long transaction's frozen `now()` never
makes a row look older or younger than it is):

    pending (next_attempt_at) --dispatch--> pending, handed out (claimed_until = the dispatch lease)
        --claim--> delivering (claimed_until = attempt timeout + margin, attempts + 1)
        --record--> succeeded | pending again after a backoff | failed after the last retry

- `webhook_emit` / `webhook_emit_many` write the event and one delivery per active endpoint
  wanting its type in the caller's transaction (nothing at all when no endpoint wants it; the SQL
  function webhook_write, project/migrations/sql/0005_webhook_write.sql, is the one writer), and
  kick the dispatcher after commit. An event's `key` makes emitting idempotent.
- `deliveries_dispatch` (the dispatcher, one short transaction, serialized by an advisory lock)
  picks what is due, oldest first: a delivery waits while an older open delivery of the same
  endpoint and ordering key exists (head of line: one order's events reach an endpoint in order,
  retries included), and an endpoint gets at most `max_concurrency` deliveries in flight. It marks
  them handed out (`claimed_until`), so the next round does not hand them out again while their
  Celery message waits in the queue; a lost message is handed out again once the mark runs out.
- `delivery_claim` (one short transaction) locks the endpoint row, so its in-flight count is exact,
  and claims the delivery if it is still due; a second copy of the Celery message finds the claim
  live (or the delivery finished) and skips. The attempt itself runs with no transaction and no
  lock (project.webhooks.delivery).
- `delivery_record` (one short transaction) records the attempt if the claim is still this
  attempt's (`attempts` is the claim's token), and the endpoint's health.

Lock order: endpoint row, then delivery rows (claim, record, resend). The dispatcher locks
delivery rows only, with SKIP LOCKED, so it never waits in a cycle.
"""

import json
import logging
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import connection, transaction
from django.utils.module_loading import import_string

from project.db.transactions import advisory_key, require_transaction
from project.errors import InvalidInput, NotFound
from project.outbox.services import outbox_enqueue, outbox_send_mail
from project.values import is_whole_number
from project.webhooks.events import is_event_type
from project.webhooks.metrics import ENDPOINTS_DISABLED

logger = logging.getLogger("stockroom.webhooks")

DISPATCH_TASK = "webhooks.dispatch"
DELIVER_TASK = "webhooks.deliver"
ENDPOINT_DISABLED_EMAIL_TASK = "webhooks.send_endpoint_disabled_email"
KEY_MAX_CHARS = 200  # WebhookEvent.key, WebhookEvent.ordering_key
EMIT_BATCH_LIMIT = 1000
ERROR_CHARS = 1000  # last_error is bounded: a receiver's answer is not ours to store whole
OPEN_STATES = ("pending", "delivering")


# --- emitting -------------------------------------------------------------------------------------


def webhook_wanted(type: str) -> bool:
    """Whether an active endpoint wants events of `type`: one lookup in the (small) endpoint table
    (the SQL function webhook_wanted), so a hot path asks before it builds a payload."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT webhook_wanted(%s)", [type])
        return cursor.fetchone()[0]


def _checked(type: str, event: Sequence) -> tuple[str, str, str]:
    """(key, payload as JSON text, ordering key) of one event, or InvalidInput."""
    try:
        key, payload, ordering_key = event
    except (TypeError, ValueError):
        raise InvalidInput("a webhook event is (key, payload, ordering key)") from None
    if not isinstance(key, str) or not key or len(key) > KEY_MAX_CHARS:
        raise InvalidInput(f"a webhook event key is 1 to {KEY_MAX_CHARS} characters")
    if not isinstance(ordering_key, str) or len(ordering_key) > KEY_MAX_CHARS:
        raise InvalidInput(f"a webhook ordering key is at most {KEY_MAX_CHARS} characters")
    if not isinstance(payload, dict):
        raise InvalidInput("a webhook payload is a JSON object (a dict)")
    try:
        # allow_nan=False: NaN is not JSON (jsonb refuses it too). No encoder for Decimal or datetime:
        # the emitter chooses their text (the API's formats), so the payload means what it says.
        text = json.dumps(payload, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"the payload of a {type} event must be JSON: {exc}") from None
    return key, text, ordering_key


def webhook_emit_many(*, type: str, events: Iterable[Sequence]) -> int:
    """Emit events of one type in the caller's transaction (RuntimeError outside one): `events` are
    (key, payload, ordering key) triples, at most EMIT_BATCH_LIMIT (counted first). One statement,
    the SQL function webhook_write, the one writer of events and deliveries (the SQL paths call it
    too): one delivery per active endpoint wanting `type`, nothing at all when none does; an event
    whose key was emitted before is skipped (emitting is idempotent: a message delivered twice emits
    once); events are inserted in the order given, so the deliveries of one ordering key reach an
    endpoint in that order. Returns the number of deliveries written; kicks the dispatcher after
    commit if any. InvalidInput (nothing written) for an unregistered type, a bad key or a payload
    that is not JSON."""
    require_transaction("webhook_emit_many")
    if not is_event_type(type):
        raise InvalidInput(f"{type!r} is not a registered webhook event type")
    events = list(events)
    if len(events) > EMIT_BATCH_LIMIT:
        raise InvalidInput(f"at most {EMIT_BATCH_LIMIT} webhook events at once")
    rows = [_checked(type, event) for event in events]
    if not rows:
        return 0
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT webhook_write(%s, %s::text[], %s::jsonb[], %s::text[])",
            [type, [row[0] for row in rows], [row[1] for row in rows], [row[2] for row in rows]],
        )
        written = cursor.fetchone()[0]
    if written:
        kick()
    return written


def webhook_emit(*, type: str, key: str, payload: dict, ordering_key: str = "") -> int | None:
    """Emit one event (see webhook_emit_many): the number of deliveries written, or None if nothing
    was (no active endpoint wants `type`, or `key` was emitted before). One statement; when no
    endpoint wants the type it reads the endpoints and writes nothing.

    `ordering_key` ("order:R-000123"): the events of one key reach each endpoint in emit order, a
    later one waiting while an earlier one is retried. Emit them in commit order (under the lock of
    the thing they are about), or an earlier id may commit after a later one was sent."""
    written = webhook_emit_many(type=type, events=[(key, payload, ordering_key)])
    return written or None


def kick() -> None:
    """Run the dispatcher soon: publish `webhooks.dispatch` after the current transaction commits
    (at once outside one). A broker error is logged, never raised: beat runs the dispatcher every
    WEBHOOK_DISPATCH_SECONDS anyway."""
    transaction.on_commit(_publish_dispatch)


def _publish_dispatch() -> None:
    try:
        # The wiring's Celery app (the one the outbox relay is handed): the platform never imports it.
        # retry=False: a broker outage must not hold the caller in kombu's retry loop.
        import_string(settings.OUTBOX_CELERY_APP).send_task(DISPATCH_TASK, retry=False)
    except Exception as exc:
        logger.warning("webhook dispatcher not kicked (%s: %s); beat runs it anyway", type(exc).__name__, exc)


# --- the dispatcher -------------------------------------------------------------------------------

# Head of line: no older open delivery of the same endpoint and non-empty ordering key exists.
HEAD_OF_LINE_SQL = """
    NOT EXISTS (SELECT 1 FROM project_webhookdelivery o
                 WHERE o.endpoint_id = d.endpoint_id AND d.ordering_key <> '' AND o.ordering_key = d.ordering_key
                   AND o.id < d.id AND o.state IN ('pending', 'delivering'))
"""

# Due: pending and its time has come, not handed out already (or the mark ran out); or delivering
# with a claim that ran out (its worker died mid-attempt); and at the head of its line.
DUE_SQL = f"""
    d.next_attempt_at <= statement_timestamp()
    AND ((d.state = 'pending' AND (d.claimed_until IS NULL OR d.claimed_until <= statement_timestamp()))
         OR (d.state = 'delivering' AND d.claimed_until <= statement_timestamp()))
    AND {HEAD_OF_LINE_SQL}
"""

# One round: for each active endpoint, the oldest due deliveries (its `webhook_delivery_due` index
# walked in order), as many as its `max_concurrency` leaves room for beside what it has in flight
# (delivering with a live claim, or handed out and not claimed yet): an endpoint with a huge
# backlog never crowds another out of a round. Then the oldest of all those, up to `limit`, are
# locked (SKIP LOCKED: a claim or a record holding one is left for the next round), checked again
# under the lock, and marked handed out. A delivery whose worker died goes back to pending (its
# attempt stays counted).
DISPATCH_SQL = f"""
WITH endpoints AS (
    SELECT e.id, e.max_concurrency - (
               SELECT count(*) FROM project_webhookdelivery f
                WHERE f.endpoint_id = e.id AND f.state IN ('pending', 'delivering')
                  AND f.claimed_until > statement_timestamp()) AS room
      FROM project_webhookendpoint e
     WHERE e.active
), chosen AS (
    SELECT c.id FROM endpoints e
     CROSS JOIN LATERAL (
         SELECT d.id, d.next_attempt_at FROM project_webhookdelivery d
          WHERE d.endpoint_id = e.id AND d.state IN ('pending', 'delivering') AND {DUE_SQL}
          ORDER BY d.next_attempt_at, d.id
          LIMIT greatest(e.room, 0)
     ) c
     ORDER BY c.next_attempt_at, c.id
     LIMIT %(limit)s
), locked AS MATERIALIZED (
    SELECT d.id FROM project_webhookdelivery d
     WHERE d.id IN (SELECT id FROM chosen) AND d.state IN ('pending', 'delivering') AND {DUE_SQL}
     ORDER BY d.id
       FOR UPDATE OF d SKIP LOCKED
)
UPDATE project_webhookdelivery AS d
   SET state = 'pending', claimed_until = statement_timestamp() + make_interval(secs => %(lease)s)
  FROM locked
 WHERE d.id = locked.id
RETURNING d.id, d.next_attempt_at
"""  # noqa: S608 - built from constants only


def deliveries_dispatch(*, limit: int) -> list[int]:
    """One dispatcher round: the ids of the deliveries handed out now (oldest due first), each to
    be published as one `webhooks.deliver`. One short transaction; rounds run one at a time
    (a transaction-scoped advisory lock), so the per-endpoint count they work from is exact."""
    with transaction.atomic(), connection.cursor() as cursor:
        # JIT would compile this short statement for ~20 ms once the table is large (measured with a
        # backlog of 100,000 deliveries: 21 ms a round with it, about 1 ms without); SET LOCAL only.
        cursor.execute(
            "SELECT set_config('jit', 'off', true), pg_advisory_xact_lock(%s)", [advisory_key(DISPATCH_TASK)]
        )
        cursor.execute(DISPATCH_SQL, {"limit": limit, "lease": settings.WEBHOOK_DISPATCH_LEASE_SECONDS})
        rows = cursor.fetchall()
    return [delivery_id for delivery_id, _ in sorted(rows, key=lambda row: (row[1], row[0]))]


NEXT_SQL = f"""
SELECT d.id FROM project_webhookdelivery d
 WHERE d.endpoint_id = %(endpoint)s AND d.state IN ('pending', 'delivering') AND {DUE_SQL}
 ORDER BY d.next_attempt_at, d.id
 LIMIT 1
"""  # noqa: S608 - built from constants only


def delivery_next(*, endpoint_id: int) -> int | None:
    """The endpoint's oldest due delivery not handed out to a queued message, or None: what a worker
    that has just finished one of the endpoint's deliveries takes next (delivery.deliver_chain).
    A read, no lock: the claim checks everything again under the endpoint's row lock, and of two
    workers that read the same id one claims it."""
    with connection.cursor() as cursor:
        cursor.execute(NEXT_SQL, {"endpoint": endpoint_id})
        row = cursor.fetchone()
    return None if row is None else row[0]


DUE_EXISTS_SQL = f"""
SELECT EXISTS (
    SELECT 1 FROM project_webhookendpoint e
     CROSS JOIN LATERAL (
         SELECT 1 FROM project_webhookdelivery d
          WHERE d.endpoint_id = e.id AND d.state IN ('pending', 'delivering') AND {DUE_SQL}
          LIMIT 1
     ) due
     WHERE e.active
)
"""  # noqa: S608 - built from constants only


def deliveries_due() -> bool:
    """Whether any active endpoint has a delivery due now (the periodic tick's question: one probe
    of the due index per active endpoint, none at all without endpoints)."""
    with connection.cursor() as cursor:
        cursor.execute(DUE_EXISTS_SQL)
        return cursor.fetchone()[0]


# A hand-out mark taken back (delivery_release, and a claim that was refused).
RELEASE_SQL = (
    "UPDATE project_webhookdelivery SET claimed_until = NULL"
    " WHERE id = %s AND state = 'pending' AND claimed_until IS NOT NULL"
)


def delivery_release(*, delivery_id: int) -> None:
    """Take back the hand-out mark of a delivery that will not be claimed by this message (the
    publish failed, or the claim was refused): the next round may hand it out again at once."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(RELEASE_SQL, [delivery_id])


# --- claiming and recording an attempt -------------------------------------------------------------


@dataclass(frozen=True)
class ClaimedDelivery:
    """What one attempt needs: where, with which secret, what to send; `attempt` is the claim's token."""

    id: int
    endpoint_id: int
    url: str
    secret: str
    attempt: int
    webhook_id: str
    type: str
    payload: dict
    created_at: datetime


LOCK_ENDPOINT_OF_DELIVERY_SQL = """
SELECT e.id, e.url, e.secret, e.max_concurrency FROM project_webhookendpoint e
 WHERE e.id = (SELECT endpoint_id FROM project_webhookdelivery WHERE id = %(id)s) AND e.active
   FOR UPDATE OF e
"""

CLAIM_SQL = f"""
UPDATE project_webhookdelivery AS d
   SET state = 'delivering', attempts = d.attempts + 1, last_attempt_at = statement_timestamp(),
       claimed_until = statement_timestamp() + make_interval(secs => %(lease)s)
  FROM project_webhookevent ev
 WHERE d.id = %(id)s AND d.endpoint_id = %(endpoint)s AND ev.id = d.event_id
   AND (d.state = 'pending' AND d.next_attempt_at <= statement_timestamp()
        OR d.state = 'delivering' AND d.claimed_until <= statement_timestamp())
   AND {HEAD_OF_LINE_SQL}
   AND (SELECT count(*) FROM project_webhookdelivery f
         WHERE f.endpoint_id = d.endpoint_id AND f.state = 'delivering'
           AND f.claimed_until > statement_timestamp()) < %(cap)s
RETURNING d.attempts, ev.webhook_id, ev.type, ev.payload::text, ev.created_at
"""  # noqa: S608 - built from constants only


def delivery_claim(*, delivery_id: int, lease_seconds: float) -> ClaimedDelivery | None:
    """Claim a delivery for one attempt, or None if it must be skipped: gone, finished, not due yet,
    claimed by a live attempt (a second copy of the Celery message), behind an older delivery of its
    ordering key, its endpoint switched off, or the endpoint's in-flight cap reached. One short
    transaction: locks the endpoint row (the in-flight count is exact under it), then updates the
    delivery (state delivering, attempts + 1, claimed for `lease_seconds`). A skipped delivery's
    hand-out mark is taken back, so the dispatcher may hand it out again."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(LOCK_ENDPOINT_OF_DELIVERY_SQL, {"id": delivery_id})
        endpoint = cursor.fetchone()
        row = None
        if endpoint is not None:
            endpoint_id, url, secret, cap = endpoint
            cursor.execute(CLAIM_SQL, {"id": delivery_id, "endpoint": endpoint_id, "lease": lease_seconds, "cap": cap})
            row = cursor.fetchone()
        if row is None:
            cursor.execute(RELEASE_SQL, [delivery_id])
            return None
    attempt, webhook_id, event_type, payload, created_at = row
    return ClaimedDelivery(
        id=delivery_id,
        endpoint_id=endpoint_id,
        url=url,
        secret=secret,
        attempt=attempt,
        webhook_id=webhook_id,
        type=event_type,
        payload=json.loads(payload),
        created_at=created_at,
    )


def retry_delay_seconds(attempt: int) -> float | None:
    """Seconds to wait after the `attempt`-th attempt failed (the schedule's entry, with up to 10%
    jitter either way, so deliveries failing together do not retry together), or None if that was
    the last attempt."""
    schedule = settings.WEBHOOK_RETRY_SCHEDULE_SECONDS
    if attempt > len(schedule):
        return None
    return schedule[attempt - 1] * random.uniform(0.9, 1.1)  # noqa: S311 - jitter, not a secret


RECORD_SQL = """
UPDATE project_webhookdelivery
   SET state = %(state)s, claimed_until = NULL,
       next_attempt_at = CASE WHEN %(state)s = 'pending' THEN statement_timestamp() + make_interval(secs => %(delay)s)
                              ELSE next_attempt_at END,
       delivered_at = CASE WHEN %(state)s = 'succeeded' THEN statement_timestamp() ELSE delivered_at END,
       last_status = %(status)s, last_error = %(error)s, last_duration_ms = %(duration)s
 WHERE id = %(id)s AND state = 'delivering' AND attempts = %(attempt)s
RETURNING id
"""


@dataclass(frozen=True)
class AttemptOutcome:
    state: str  # succeeded, pending (a retry is scheduled), failed (no retry left); "" if not recorded
    endpoint_disabled: bool = False


def delivery_record(
    *, claimed: ClaimedDelivery, status: int | None, error: str, duration_ms: int | None
) -> AttemptOutcome:
    """Record one attempt of a claimed delivery: a 2xx status succeeded; anything else (another
    status, or no answer: `status` None with `error`) is retried after the schedule's delay, or
    failed after the last attempt. Then the endpoint's health: a success resets its failure count
    and pulls its other waiting deliveries forward (it is back: its backlog goes out now); a failure
    counts, and an endpoint failing WEBHOOK_DISABLE_AFTER_FAILURES attempts in a row over at least
    WEBHOOK_DISABLE_AFTER_HOURS is switched off, with an email to STAFF_ALERT_EMAILS (outbox).

    One short transaction; locks the endpoint, then the delivery. If the claim is no longer this
    attempt's (it ran out and another attempt took the delivery), nothing is recorded."""
    succeeded = status is not None and 200 <= status < 300
    if succeeded:
        state, delay = "succeeded", 0.0
    else:
        delay = retry_delay_seconds(claimed.attempt)
        state = "failed" if delay is None else "pending"
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT consecutive_failures FROM project_webhookendpoint WHERE id = %s FOR UPDATE",
            [claimed.endpoint_id],
        )
        endpoint = cursor.fetchone()
        cursor.execute(
            RECORD_SQL,
            {
                "id": claimed.id,
                "attempt": claimed.attempt,
                "state": state,
                "delay": delay or 0.0,
                "status": status,
                "error": error[:ERROR_CHARS],
                "duration": duration_ms,
            },
        )
        if cursor.fetchone() is None or endpoint is None:
            logger.warning(
                "webhook delivery %s: attempt %s not recorded (its claim was taken over, or it is gone)",
                claimed.id,
                claimed.attempt,
            )
            return AttemptOutcome(state="")
        if succeeded:
            if endpoint[0] > 0:
                _endpoint_recovered(cursor, claimed.endpoint_id)
            return AttemptOutcome(state=state)
        disabled = _endpoint_failed(cursor, claimed.endpoint_id, error)
    return AttemptOutcome(state=state, endpoint_disabled=disabled)


def _endpoint_recovered(cursor, endpoint_id: int) -> None:
    cursor.execute(
        "UPDATE project_webhookendpoint SET consecutive_failures = 0, failing_since = NULL WHERE id = %s",
        [endpoint_id],
    )
    cursor.execute(
        "UPDATE project_webhookdelivery SET next_attempt_at = statement_timestamp()"
        " WHERE endpoint_id = %s AND state = 'pending' AND next_attempt_at > statement_timestamp()",
        [endpoint_id],
    )


def _endpoint_failed(cursor, endpoint_id: int, error: str) -> bool:
    """Count a failed attempt; switch the endpoint off if it has failed long enough. True if it was."""
    cursor.execute(
        """
        UPDATE project_webhookendpoint
           SET consecutive_failures = consecutive_failures + 1,
               failing_since = coalesce(failing_since, statement_timestamp())
         WHERE id = %(id)s
        RETURNING active AND consecutive_failures >= %(failures)s
                  AND failing_since <= statement_timestamp() - make_interval(secs => %(seconds)s),
                  consecutive_failures, failing_since, url
        """,
        {
            "id": endpoint_id,
            "failures": settings.WEBHOOK_DISABLE_AFTER_FAILURES,
            "seconds": settings.WEBHOOK_DISABLE_AFTER_HOURS * 3600,
        },
    )
    switch_off, failures, failing_since, url = cursor.fetchone()
    if not switch_off:
        return False
    reason = f"Switched off after {failures} failed attempts in a row since {failing_since:%Y-%m-%d %H:%M} UTC"
    cursor.execute(
        "UPDATE project_webhookendpoint SET active = false, disabled_reason = %s, updated_at = statement_timestamp(),"
        " version = version + 1 WHERE id = %s",
        [reason[:200], endpoint_id],
    )
    ENDPOINTS_DISABLED.inc()
    logger.warning("webhook endpoint %s (%s) switched off: %s", endpoint_id, url, reason)
    recipients = list(settings.STAFF_ALERT_EMAILS)
    if recipients:
        outbox_enqueue(
            task=ENDPOINT_DISABLED_EMAIL_TASK,
            kwargs={
                "recipients": recipients,
                "endpoint_id": endpoint_id,
                "url": url,
                "reason": reason,
                "last_error": error[:500],
            },
        )
    else:
        logger.warning("STAFF_ALERT_EMAILS is empty: nobody is told that webhook endpoint %s is off", endpoint_id)
    return True


def endpoint_disabled_email_send(
    *, recipients: Sequence[str], endpoint_id: int, url: str, reason: str, last_error: str
) -> None:
    """Mail staff that an endpoint was switched off (from an outbox task: one Message-ID per message)."""
    outbox_send_mail(
        subject=f"Webhook endpoint switched off: {url}"[:200],
        body="\n".join(
            [
                f"The webhook endpoint #{endpoint_id} ({url}) kept failing and was switched off.",
                "",
                reason + ".",
                f"Last error: {last_error or '(none)'}",
                "",
                "Its deliveries wait. Fix the receiver, then switch the endpoint on again in the admin:",
                "the waiting deliveries go out, in order.",
            ]
        ),
        recipients=recipients,
    )


# --- staff actions ----------------------------------------------------------------------------------


def delivery_resend(*, delivery_id: int) -> bool:
    """Send a delivery again ("send again" for staff): a failed or succeeded delivery goes back to
    pending, due now, with the same webhook-id; its attempts are kept and counted on (so a delivery
    past the retry schedule gets this one attempt). True if it was sent back; False if it is already
    pending or being delivered (nothing to do). NotFound if there is no such delivery.
    One UPDATE; kicks the dispatcher after commit."""
    if not is_whole_number(delivery_id, minimum=1):
        raise NotFound("No such webhook delivery.")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "UPDATE project_webhookdelivery"
            " SET state = 'pending', next_attempt_at = statement_timestamp(), claimed_until = NULL"
            " WHERE id = %s AND state IN ('failed', 'succeeded') RETURNING id",
            [delivery_id],
        )
        resent = cursor.fetchone() is not None
        if not resent:
            cursor.execute("SELECT 1 FROM project_webhookdelivery WHERE id = %s", [delivery_id])
            if cursor.fetchone() is None:
                raise NotFound("No such webhook delivery.")
        else:
            kick()
    return resent


def deliveries_count_by_state() -> dict[str, int]:
    """Deliveries pending (waiting or handed out), delivering and failed: the gauge's reading. Two
    index scans (the open and the failed partial indexes), without JIT (see deliveries_dispatch)."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT set_config('jit', 'off', true)")
        cursor.execute(
            "SELECT state, count(*) FROM project_webhookdelivery WHERE state IN ('pending', 'delivering')"
            " GROUP BY state"
        )
        counts = {"pending": 0, "delivering": 0} | dict(cursor.fetchall())
        cursor.execute("SELECT count(*) FROM project_webhookdelivery WHERE state = 'failed'")
        counts["failed"] = cursor.fetchone()[0]
    return counts


# --- housekeeping ----------------------------------------------------------------------------------

PRUNE_CHUNK = 5000


def _delete_chunks(sql: str, params: list) -> int:
    total = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, [*params, PRUNE_CHUNK])
            deleted = cursor.rowcount
        total += deleted
        if deleted < PRUNE_CHUNK:
            return total


def webhooks_prune(*, older_than_days: int) -> tuple[int, int]:
    """Delete finished deliveries (succeeded or failed) made more than `older_than_days` ago, then
    the events of that age no delivery refers to any more; returns (deliveries, events) deleted.
    A chunk per transaction (short locks, progress kept if interrupted). Open deliveries, and the
    events they carry, stay however old."""
    if not is_whole_number(older_than_days, minimum=1):
        raise InvalidInput(fields={"older_than_days": ["Must be a whole number of days, at least 1."]})
    deliveries = _delete_chunks(
        """
        DELETE FROM project_webhookdelivery
         WHERE id IN (SELECT id FROM project_webhookdelivery
                       WHERE state IN ('succeeded', 'failed')
                         AND created_at < statement_timestamp() - make_interval(days => %s)
                       LIMIT %s)
        """,
        [older_than_days],
    )
    events = _delete_chunks(
        """
        DELETE FROM project_webhookevent
         WHERE id IN (SELECT e.id FROM project_webhookevent e
                       WHERE e.created_at < statement_timestamp() - make_interval(days => %s)
                         AND NOT EXISTS (SELECT 1 FROM project_webhookdelivery d WHERE d.event_id = e.id)
                       LIMIT %s)
        """,
        [older_than_days],
    )
    return deliveries, events

"""The transactional outbox: work caused by a change is written in the change's own transaction.

`outbox_enqueue` inserts an OutboxMessage and NOTIFYs the relay; PostgreSQL delivers the
notification at commit (and drops it on rollback), so the relay wakes exactly when there is a
committed row to publish. `OutboxTask` is the Celery base class of every task sent through the
outbox: it skips a message that is already done and marks its row done when the task has run.
The relay itself is project.relay.

Delivery is at least once: a message can reach a worker twice (a relay that died between publish
and commit, a lease that ran out while the broker lost the message), so outbox tasks are
idempotent. With `outbox_exclusive` (the default) the task runs holding its row's lock and marks
it done in the same transaction, so a second delivery waits for the first and then skips it.
"""

import json
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from datetime import timedelta

from celery import Task
from django.conf import settings
from django.db import connection, transaction
from django.db.models.functions import Now

from project import locks
from project.db import require_transaction
from project.errors import InvalidInput
from project.logs import request_id_var
from project.models import OutboxMessage

logger = logging.getLogger("stockroom.outbox")

State = OutboxMessage.State
OUTBOX_HEADER = "outbox_id"  # the message id travels as a Celery message header
ERROR_CHARS = 4000
PRUNE_CHUNK = 5000


# --- writing messages ------------------------------------------------------------------------


def _checked(task: str, args: Sequence | None, kwargs: dict | None) -> tuple[list, dict]:
    if not isinstance(task, str) or not task.strip():
        raise InvalidInput(fields={"task": ["A task name is required."]})
    args, kwargs = list(args or []), dict(kwargs or {})
    try:
        json.dumps([args, kwargs])  # refuse now, in the caller's transaction, not in the relay later
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"Outbox arguments of {task} must be JSON: {exc}") from None
    return args, kwargs


_last_notify_lock = threading.Lock()
_last_notify = float("-inf")


def outbox_notify_channel() -> str | None:
    """The channel to NOTIFY with this transaction's outbox rows, or None to skip the NOTIFY.

    PostgreSQL serializes the commits of every transaction that NOTIFYs (a database-wide lock
    held through the commit's WAL flush). Measured on this machine with pgbench, 8 clients each
    inserting an outbox row commit 1,600-1,950 times a second, 426 when each also NOTIFYs, and
    1,700-1,930 when one in twenty does. So a process notifies at most once per
    OUTBOX_NOTIFY_INTERVAL_MS: under load the next notification, or the relay's second look
    after a busy round, picks up the rows of the transactions in between; the relay's poll
    bounds the wait of the rest.
    """
    global _last_notify
    now = time.monotonic()
    with _last_notify_lock:
        if now - _last_notify < settings.OUTBOX_NOTIFY_INTERVAL_MS / 1000:
            return None
        _last_notify = now
    return settings.OUTBOX_NOTIFY_CHANNEL


def notify_relay() -> None:
    """Wake the relay at commit (unless throttled). One transaction's notifications fold into one."""
    channel = outbox_notify_channel()
    if channel is not None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, '')", [channel])


def outbox_enqueue(*, task: str, kwargs: dict | None = None, args: Sequence | None = None) -> int:
    """Write one message for `task` in the caller's transaction, with the current request id;
    returns its id.

    Must run inside the transaction of the change that causes it (RuntimeError otherwise): the
    message commits with the change or not at all. Locks nothing; one round trip (the INSERT and
    the NOTIFY in one statement, as it sits in the order's transaction). InvalidInput if the
    arguments are not JSON.
    """
    require_transaction("outbox_enqueue")
    args, kwargs = _checked(task, args, kwargs)
    channel = outbox_notify_channel()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            WITH message AS (
                INSERT INTO project_outboxmessage (task, args, kwargs, request_id, state, attempts, last_error)
                VALUES (%s, %s::jsonb, %s::jsonb, %s, 'pending', 0, '')
                RETURNING id
            )
            SELECT id, CASE WHEN %s::text IS NULL THEN NULL ELSE pg_notify(%s, '') END FROM message
            """,
            [task, json.dumps(args), json.dumps(kwargs), request_id_var.get() or "", channel, channel],
        )
        return cursor.fetchone()[0]


def outbox_enqueue_many(*, task: str, kwargs_list: Iterable[dict]) -> int:
    """`outbox_enqueue` for many messages of one task in one INSERT (batch jobs)."""
    require_transaction("outbox_enqueue_many")
    encoded = []
    for kwargs in kwargs_list:
        _, checked = _checked(task, None, kwargs)
        encoded.append(json.dumps(checked))
    if encoded:
        with connection.cursor() as cursor:
            cursor.execute(
                """
                INSERT INTO project_outboxmessage (task, args, kwargs, request_id, state, attempts, last_error)
                SELECT %s, '[]'::jsonb, k::jsonb, %s, 'pending', 0, '' FROM unnest(%s::text[]) AS k
                """,
                [task, request_id_var.get() or "", encoded],
            )
        notify_relay()
    return len(encoded)


# --- what tasks and the relay record -------------------------------------------------------------


def retry_delay(attempts: int) -> timedelta:
    """Exponential backoff after the `attempts`-th failure, capped at an hour."""
    base = settings.OUTBOX_RETRY_BACKOFF_SECONDS
    return timedelta(seconds=min(base * 2 ** max(attempts - 1, 0), 3600))


def _set_lock_timeout() -> None:
    # The relay holds a row's lock from claim to commit, publishing the batch meanwhile; a task
    # that starts before that commit waits for it instead of failing on the short web timeout.
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('lock_timeout', %s, true)", [f"{settings.OUTBOX_TASK_LOCK_TIMEOUT_MS}ms"])


def _reset_lock_timeout() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL lock_timeout TO DEFAULT")


def _mark_done(message_id: int) -> None:
    OutboxMessage.objects.filter(pk=message_id).exclude(state=State.DONE).update(
        state=State.DONE, done_at=Now(), last_error=""
    )


def outbox_failed(*, message_id: int, error: str) -> None:
    """A task failed: publish it again after a backoff, or make it dead after too many attempts.

    Locks the row (waiting for a relay that is marking it sent). A row already done is left alone.
    """
    with transaction.atomic():
        _set_lock_timeout()
        message = locks.lock_message(message_id)
        if message is None or message.state == State.DONE:
            return
        message.last_error = error[-ERROR_CHARS:]
        if message.attempts >= settings.OUTBOX_MAX_ATTEMPTS:
            message.state = State.DEAD
            logger.error("outbox message %s (%s) is dead after %d attempts", message.pk, message.task, message.attempts)
        else:
            message.state = State.PENDING
            message.next_attempt_at = Now() + retry_delay(message.attempts)
        message.save(update_fields=["state", "last_error", "next_attempt_at"])


class OutboxTask(Task):
    """Base class of the tasks sent through the outbox (`@shared_task(base=OutboxTask)`).

    Called with an outbox message id (the relay's `outbox_id` header) it skips a message that is
    done or was discarded, marks it done after the task returns, and on an exception records the
    error and lets the relay publish it again with backoff (dead after OUTBOX_MAX_ATTEMPTS). With
    `outbox_exclusive = True` the task body runs in one transaction holding the row's lock, and
    the done mark commits with the body's writes: for short tasks (an email). Batch tasks that
    commit per chunk set it False and stay idempotent on their own. Called without the header
    (beat, a direct call) it simply runs.
    """

    outbox_exclusive = True

    def __call__(self, *args, **kwargs):
        message_id = getattr(self.request, OUTBOX_HEADER, None)
        if message_id is None:
            return super().__call__(*args, **kwargs)
        if isinstance(message_id, bool) or not isinstance(message_id, int):
            logger.error("%s refused: outbox id %r is not a whole number", self.name, message_id)
            return None
        try:
            if self.outbox_exclusive:
                return self._run_exclusive(message_id, args, kwargs)
            return self._run_then_mark(message_id, args, kwargs)
        except Exception as exc:
            try:
                outbox_failed(message_id=message_id, error=f"{type(exc).__name__}: {exc}")
            except Exception:  # the relay's lease brings the message back anyway
                logger.exception("could not record the failure of outbox message %s", message_id)
            raise

    def _skip(self, message: OutboxMessage | None, message_id: int) -> bool:
        if message is None:
            logger.warning("%s: outbox message %s no longer exists (discarded); skipped", self.name, message_id)
            return True
        if message.state == State.DONE:
            logger.info("%s: outbox message %s is already done; skipped", self.name, message_id)
            return True
        return False

    def _run_exclusive(self, message_id: int, args, kwargs):
        with transaction.atomic():
            _set_lock_timeout()
            message = locks.lock_message(message_id)
            _reset_lock_timeout()
            if self._skip(message, message_id):
                return None
            result = super().__call__(*args, **kwargs)
            _mark_done(message_id)
        return result

    def _run_then_mark(self, message_id: int, args, kwargs):
        message = OutboxMessage.objects.filter(pk=message_id).only("state").first()
        if self._skip(message, message_id):
            return None
        result = super().__call__(*args, **kwargs)
        with transaction.atomic():
            _set_lock_timeout()
            _mark_done(message_id)
        return result


# --- staff actions and housekeeping ---------------------------------------------------------------


def _ids(message_ids: Iterable[int]) -> list[int]:
    ids = []
    for message_id in message_ids:
        if isinstance(message_id, bool) or not isinstance(message_id, int):
            raise InvalidInput(fields={"message_ids": [f"{message_id!r} is not a message id."]})
        ids.append(message_id)
    return ids


def outbox_retry(*, message_ids: Iterable[int]) -> int:
    """Give dead messages (and pending ones waiting out a backoff) a fresh start, due now.

    One UPDATE; a row the relay is publishing at this moment is waited for and then, being
    `sent`, left alone. Sent and done messages are never touched. Returns the rows retried.
    """
    ids = _ids(message_ids)
    with transaction.atomic():
        retried = OutboxMessage.objects.filter(pk__in=ids, state__in=[State.DEAD, State.PENDING]).update(
            state=State.PENDING, attempts=0, next_attempt_at=Now(), sent_at=None
        )
        if retried:
            notify_relay()
    return retried


def outbox_discard(*, message_ids: Iterable[int]) -> int:
    """Delete dead or pending messages: their task will not run (a copy still queued skips itself).
    Sent and done messages are kept. Returns the rows deleted."""
    ids = _ids(message_ids)
    with transaction.atomic():
        deleted, _ = OutboxMessage.objects.filter(pk__in=ids, state__in=[State.DEAD, State.PENDING]).delete()
    return deleted


def outbox_prune(*, older_than_days: int) -> int:
    """Delete done messages older than `older_than_days`, a chunk per transaction (short locks,
    progress kept if interrupted). Dead messages stay until staff retry or discard them."""
    if isinstance(older_than_days, bool) or not isinstance(older_than_days, int) or older_than_days < 1:
        raise InvalidInput(fields={"older_than_days": ["Must be a whole number of days, at least 1."]})
    total = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                """
                DELETE FROM project_outboxmessage
                 WHERE id IN (SELECT id FROM project_outboxmessage
                               WHERE state = 'done' AND done_at < now() - make_interval(days => %s)
                               LIMIT %s)
                """,
                [older_than_days, PRUNE_CHUNK],
            )
            deleted = cursor.rowcount
        total += deleted
        if deleted < PRUNE_CHUNK:
            return total

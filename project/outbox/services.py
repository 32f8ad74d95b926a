"""The transactional outbox: work caused by a change is written in the change's own transaction.

`outbox_enqueue` inserts an OutboxMessage and NOTIFYs the relay; PostgreSQL delivers the
notification at commit (and drops it on rollback), so the relay wakes exactly when there is a
committed row to publish. `OutboxTask` is the Celery base class of every task sent through the
outbox: it claims its message, runs, and marks the message done. The relay itself is
project.outbox.relay.

Delivery is at least once: a message can reach a worker twice (a relay that died between publish
and commit, a lease that ran out while the broker lost the message), so outbox tasks are
idempotent. A task runs holding no lock and no transaction: it claims its row in a short
transaction first (`outbox_claim`), so a second delivery of the message skips it while the claim
is live, and marks it done in another; a task with an `outbox_batch_size` does the same for a group
of messages, one statement each (`outbox_claim_many`, `OutboxBatch`). An effect outside the
system (an email) therefore happens
once unless a crash falls between the effect and its record; then it happens again with the same
id (`outbox_send_mail` gives every delivery of a message one Message-ID) and a receiver can drop
the repeat.
"""

import json
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parseaddr
from functools import lru_cache

from celery import Task
from django.conf import settings
from django.core.mail import EmailMessage, get_connection
from django.core.mail.backends.base import BaseEmailBackend
from django.db import connection, transaction
from django.db.models.functions import Now

from project.db.transactions import require_transaction
from project.errors import InvalidInput
from project.mail.smtp import send_each
from project.observability.logs import request_id_var
from project.outbox import locks
from project.outbox.metrics import EMAILS_SENT, OUTBOX_TASK_DONE
from project.outbox.models import OutboxMessage
from project.values import is_whole_number

logger = logging.getLogger("stockroom.outbox")

State = OutboxMessage.State
OUTBOX_HEADER = "outbox_id"  # the message id travels as a Celery message header
OUTBOX_BATCH_HEADER = "outbox_ids"  # a batch task's message ids, in one Celery message
OUTBOX_BATCH_LIMIT = 1000  # the most ids one batch delivery accepts
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


def _outbox_write(task: str, messages: Sequence[tuple[list, dict]], channel: str | None) -> list[int]:
    """The one writer of outbox rows in Python: one call of the SQL function outbox_write
    (project/migrations/sql/0003_outbox_write.sql), which the SQL paths call too. One statement:
    every row of `messages` ((args, kwargs), already checked) and the NOTIFY of `channel` (None:
    none). Returns the new ids in order."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT outbox_write(%s, %s::jsonb[], %s::jsonb[], %s, %s)",
            [
                task,
                [json.dumps(args) for args, _ in messages],
                [json.dumps(kwargs) for _, kwargs in messages],
                request_id_var.get() or "",
                channel,
            ],
        )
        return cursor.fetchone()[0]


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
    return _outbox_write(task, [(args, kwargs)], outbox_notify_channel())[0]


def outbox_enqueue_many(*, task: str, kwargs_list: Iterable[dict]) -> int:
    """`outbox_enqueue` for many messages of one task in one statement (batch jobs)."""
    require_transaction("outbox_enqueue_many")
    messages = [_checked(task, None, kwargs) for kwargs in kwargs_list]
    if messages:
        _outbox_write(task, messages, outbox_notify_channel())
    return len(messages)


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


def _mark_done(message_ids: Sequence[int]) -> None:
    """One statement for a delivery's messages. Idempotent: a row already done (or deleted) is
    left as it is."""
    with transaction.atomic():
        _set_lock_timeout()
        with connection.cursor() as cursor:
            cursor.execute(locks.MARK_DONE_SQL, {"ids": sorted(set(message_ids))})


def outbox_failed(*, message_id: int, error: str, delivery_id: str | None = None) -> None:
    """A task failed: publish it again after a backoff, or make it dead after too many attempts.

    Locks the row (waiting for a relay that is marking it sent). A row already done is left
    alone, and so is a row another delivery has claimed since (this one's claim ran out).
    """
    with transaction.atomic():
        _set_lock_timeout()
        message = locks.lock_message(message_id)
        if message is None or message.state == State.DONE:
            return
        if delivery_id is not None and message.claimed_by not in ("", delivery_id) and _claim_live(message_id):
            logger.warning(
                "outbox message %s failed in an old delivery; %s runs it now", message_id, message.claimed_by
            )
            return
        message.last_error = error[-ERROR_CHARS:]
        message.claimed_by, message.claimed_until = "", None
        if message.attempts >= settings.OUTBOX_MAX_ATTEMPTS:
            message.state = State.DEAD
            logger.error("outbox message %s (%s) is dead after %d attempts", message.pk, message.task, message.attempts)
        else:
            message.state = State.PENDING
            message.next_attempt_at = Now() + retry_delay(message.attempts)
        message.save(update_fields=["state", "last_error", "next_attempt_at", "claimed_by", "claimed_until"])


def _claim_live(message_id: int) -> bool:
    return OutboxMessage.objects.filter(pk=message_id, claimed_until__gt=Now()).exists()


def task_lease_seconds(task: Task | None) -> int:
    """How long one delivery of `task` may take before its message is published again: the task's
    hard time limit (its own `time_limit`, else CELERY_TASK_TIME_LIMIT) plus
    OUTBOX_LEASE_MARGIN_SECONDS for the queue and the worker. So an import's lease outlasts the
    import and an email's is a few minutes. OUTBOX_LEASE_SECONDS for a task this process does
    not know, or when no time limit is set."""
    limit = (task.time_limit or settings.CELERY_TASK_TIME_LIMIT) if task is not None else None
    if not limit:
        return settings.OUTBOX_LEASE_SECONDS
    return int(limit) + settings.OUTBOX_LEASE_MARGIN_SECONDS


@dataclass(frozen=True, slots=True)
class ClaimedMessage:
    """What a delivery claimed of one outbox row: the columns its task runs with (the claim's
    RETURNING list, in this order). A plain value, not a model instance: a group of emails claims
    up to a hundred of them per delivery, and a model instance costs about 20 µs more per row."""

    id: int
    task: str
    args: list
    kwargs: dict
    request_id: str
    created_at: datetime
    claimed_by: str
    claimed_until: datetime | None

    @property
    def pk(self) -> int:
        return self.id


def outbox_claim(*, message_id: int, delivery_id: str, lease_seconds: int) -> ClaimedMessage | None:
    """`outbox_claim_many` for one message: the message, or None if the delivery must skip it."""
    claimed = outbox_claim_many(message_ids=[message_id], delivery_id=delivery_id, lease_seconds=lease_seconds)
    return claimed[0] if claimed else None


def outbox_claim_many(*, message_ids: Sequence[int], delivery_id: str, lease_seconds: int) -> list[ClaimedMessage]:
    """Claim messages for one delivery before its task runs; returns those it may run, in id order.

    One short transaction, committed before the task runs: locks the rows in id order (waiting up
    to OUTBOX_TASK_LOCK_TIMEOUT_MS for a relay still committing them) and skips a message that
    is gone (discarded), done, or claimed by another delivery whose claim has not run out. Each
    claimed row records `delivery_id` with `claimed_until = now() + lease_seconds`, and the
    relay's lease (`next_attempt_at`) moves there too, so the relay leaves a running task's
    messages alone. The same delivery again (the broker redelivering the Celery message of a
    worker that died, with the same task id) takes its own claim over; another delivery waits for
    it to run out.
    """
    wanted = sorted(set(message_ids))
    with transaction.atomic():
        _set_lock_timeout()
        with connection.cursor() as cursor:
            cursor.execute(locks.CLAIM_MESSAGES_SQL, {"delivery": delivery_id, "lease": lease_seconds, "ids": wanted})
            rows = cursor.fetchall()
    claimed = sorted((_claimed_message(*row) for row in rows), key=_pk)
    if len(claimed) < len(wanted):
        _log_skipped(sorted(set(wanted) - {message.pk for message in claimed}))
    return claimed


def _claimed_message(message_id: int, task: str, args: str, kwargs: str, *rest) -> ClaimedMessage:
    return ClaimedMessage(message_id, task, json.loads(args), json.loads(kwargs), *rest)


def _pk(message: ClaimedMessage) -> int:
    return message.id


def _log_skipped(message_ids: list[int]) -> None:
    """Why a delivery skipped these messages (read after the claim, for the log only)."""
    found = {
        row[0]: row[1:]
        for row in OutboxMessage.objects.filter(pk__in=message_ids).values_list(
            "pk", "state", "claimed_by", "claimed_until"
        )
    }
    for message_id in message_ids:
        if message_id not in found:
            logger.warning("outbox message %s no longer exists (discarded); skipped", message_id)
            continue
        state, claimed_by, claimed_until = found[message_id]
        if state == State.DONE:
            logger.info("outbox message %s is already done; skipped", message_id)
        else:
            logger.info(
                "outbox message %s is claimed by another delivery (%s) until %s; skipped",
                message_id,
                claimed_by,
                claimed_until,
            )


_delivery: ContextVar[ClaimedMessage | None] = ContextVar("outbox_delivery", default=None)


def outbox_send_mail(
    *, subject: str, body: str, recipients: Sequence[str], connection: BaseEmailBackend | None = None
) -> None:
    """Send an email from an outbox task, with a Message-ID that is the same at every delivery of
    the task's message (`outbox_message_id`) and differs between messages: a receiver can drop a
    repeat. Called outside an outbox delivery, the email gets a fresh Message-ID. `connection`: an
    open email backend to reuse; the SMTP backend gives up after EMAIL_TIMEOUT."""
    headers = {}
    message = _delivery.get()
    if message is not None:
        headers["Message-ID"] = outbox_message_id(message)
    EmailMessage(subject=subject, body=body, to=list(recipients), headers=headers, connection=connection).send()
    EMAILS_SENT.inc()


def outbox_send_mails(
    batch: "OutboxBatch", emails: Mapping[int, EmailMessage | None]
) -> Iterator[tuple[ClaimedMessage, bool]]:
    """Run a batch whose messages each send at most one email (`emails`: by message id, None for
    nothing to send) over one mail connection. Loops over the batch and yields `(message, sent)`
    as the loop reaches each message, once the mail server has accepted its email: a message is
    recorded done only after its server said so. Each email gets its message's Message-ID
    (`outbox_message_id`) and goes out pipelined where the backend can (project.mail.smtp.send_each:
    one round trip per email). An error is raised at its own message, and the emails after it are
    not sent: they fail with it, as OutboxBatch says.
    """
    for message in batch.messages:
        email = emails.get(message.pk)
        if email is not None:
            email.extra_headers["Message-ID"] = outbox_message_id(message)
    with get_connection() as mail:
        accepted = send_each(mail, [emails[m.pk] for m in batch.messages if emails.get(m.pk) is not None])
        try:
            for message in batch:
                if emails.get(message.pk) is None:
                    yield message, False
                    continue
                sent = next(accepted)
                if sent:
                    EMAILS_SENT.inc()
                yield message, sent
        finally:
            accepted.close()


def outbox_message_id(message: ClaimedMessage) -> str:
    """The Message-ID of every delivery of an outbox message's email (its id and creation time)."""
    created = int(message.created_at.timestamp() * 1_000_000)
    return stable_message_id(f"outbox.{message.pk}.{created}")


def stable_message_id(local_part: str) -> str:
    """A Message-ID that is the same each time it is built from `local_part`, in
    DEFAULT_FROM_EMAIL's domain. Not make_msgid(): its random part and host name change with every
    delivery and worker, so a receiver could not drop a repeat."""
    return f"<{local_part}@{_domain_of(settings.DEFAULT_FROM_EMAIL)}>"


@lru_cache(maxsize=8)
def _domain_of(address: str) -> str:
    """The domain of an address (parsing one costs about 50 µs, more than composing the email)."""
    return parseaddr(address)[1].rpartition("@")[2] or "localhost"


class OutboxBatch:
    """The messages one delivery claimed, in id order, for a task's `run_batch`.

    Iterate over it to run them. While a message is the loop's current one, it is the delivery
    (`outbox_send_mail` takes its Message-ID) and its request id is the log's; a message is done
    once the loop moves past it. If the loop stops on an exception, the current message and those
    not reached yet are failed with it (published again after a backoff, as a single message's
    failure is); if `run_batch` returns without reaching some messages, they are failed too.
    """

    def __init__(self, messages: Sequence[ClaimedMessage]):
        self.messages = list(messages)
        self.done: list[int] = []
        self._next = 0
        self._current: ClaimedMessage | None = None
        self._tokens = None

    def __iter__(self) -> "OutboxBatch":
        return self

    def __next__(self) -> ClaimedMessage:
        if self._current is not None:
            self.done.append(self._current.pk)
        self.close()
        if self._next >= len(self.messages):
            raise StopIteration
        message = self._current = self.messages[self._next]
        self._next += 1
        self._tokens = (_delivery.set(message), request_id_var.set(message.request_id or None))
        return message

    def close(self) -> None:
        """Leave the current message (its delivery context), done or not."""
        self._current = None
        if self._tokens is not None:
            delivery, request_id = self._tokens
            _delivery.reset(delivery)
            request_id_var.reset(request_id)
            self._tokens = None

    def not_done(self) -> list[int]:
        done = set(self.done)
        return [message.pk for message in self.messages if message.pk not in done]


class OutboxTask(Task):
    """Base class of the tasks sent through the outbox (`@shared_task(base=OutboxTask)`).

    Called with an outbox message id (the relay's `outbox_id` header): claims the message for
    this delivery in a short transaction (`outbox_claim`; skipped if it is done, discarded or
    claimed by another live delivery), runs the task with no transaction open and no lock held,
    then marks the message done in another short transaction. On an exception it records the
    error and the relay publishes the message again with backoff (dead after
    OUTBOX_MAX_ATTEMPTS). A delivery that dies mid-run leaves its claim to run out after the
    task's lease (`task_lease_seconds`), and the relay publishes the message again. Tasks are
    idempotent; a batch task commits per chunk on its own. Called without the header (beat, a
    direct call) it simply runs.

    A task with `outbox_batch_size` above 1 takes its messages in groups: the relay publishes
    up to that many of them as one Celery message (the `outbox_ids` header, no arguments: each
    row holds its own), and the delivery claims them all in one statement, runs `run_batch` with
    an OutboxBatch, and marks the done ones done in one statement. The default `run_batch` runs
    the task once per message; a task overrides it to share work between its messages (one read
    of their rows, one SMTP connection). The guarantees are a single message's, per message.
    """

    outbox_batch_size = 1

    def __call__(self, *args, **kwargs):
        message_ids = getattr(self.request, OUTBOX_BATCH_HEADER, None)
        if message_ids is not None:
            return self._deliver_batch(message_ids)
        message_id = getattr(self.request, OUTBOX_HEADER, None)
        if message_id is None:
            return super().__call__(*args, **kwargs)
        if not is_whole_number(message_id):
            logger.error("%s refused: outbox id %r is not a whole number", self.name, message_id)
            return None
        delivery_id = self._delivery_id()
        try:
            message = outbox_claim(
                message_id=message_id, delivery_id=delivery_id, lease_seconds=task_lease_seconds(self)
            )
            if message is None:
                return None
            token = _delivery.set(message)
            try:
                result = super().__call__(*args, **kwargs)
            finally:
                _delivery.reset(token)
        except Exception as exc:
            _record_failure([message_id], exc, delivery_id)
            raise
        # The effect has happened: a failure to record it leaves the claim to run out, and the
        # message is delivered again (at least once), never marked failed.
        _mark_done([message_id])
        OUTBOX_TASK_DONE.labels(task=self.name).inc()
        return result

    def run_batch(self, batch: OutboxBatch) -> None:
        """Run each message of the batch (override to share work between them)."""
        for message in batch:
            self.run(*message.args, **message.kwargs)

    def _delivery_id(self) -> str:
        return str(self.request.id or "") or f"direct-{time.monotonic_ns()}"

    def _deliver_batch(self, message_ids) -> int | None:
        if (
            not isinstance(message_ids, list)
            or not 0 < len(message_ids) <= OUTBOX_BATCH_LIMIT
            or not all(is_whole_number(message_id) for message_id in message_ids)
        ):
            logger.error("%s refused: outbox ids %.200r are not a list of ids", self.name, message_ids)
            return None
        delivery_id = self._delivery_id()
        messages = outbox_claim_many(
            message_ids=message_ids, delivery_id=delivery_id, lease_seconds=task_lease_seconds(self)
        )
        if not messages:
            return None
        batch = OutboxBatch(messages)
        try:
            self.run_batch(batch)
        except Exception as exc:
            batch.close()
            self._record_batch(batch, delivery_id, exc)
            raise
        batch.close()
        self._record_batch(batch, delivery_id, None)
        return len(batch.done)

    def _record_batch(self, batch: OutboxBatch, delivery_id: str, exc: Exception | None) -> None:
        if batch.done:
            try:
                _mark_done(batch.done)
            except Exception:  # their effects happened; the lease delivers them again
                logger.exception("could not mark outbox messages %s done", batch.done)
            else:
                OUTBOX_TASK_DONE.labels(task=self.name).inc(len(batch.done))
        failed = batch.not_done()
        if failed:
            error = exc if exc is not None else RuntimeError(f"{self.name}.run_batch returned before running it")
            _record_failure(failed, error, delivery_id)


def _record_failure(message_ids: list[int], exc: Exception, delivery_id: str) -> None:
    """Fail messages of a delivery (outbox_failed); a failure to record it leaves their claims to
    run out, and the relay publishes them again anyway."""
    for message_id in message_ids:
        try:
            outbox_failed(message_id=message_id, error=f"{type(exc).__name__}: {exc}", delivery_id=delivery_id)
        except Exception:
            logger.exception("could not record the failure of outbox message %s", message_id)


# --- staff actions and housekeeping ---------------------------------------------------------------


def _ids(message_ids: Iterable[int]) -> list[int]:
    ids = []
    for message_id in message_ids:
        if not is_whole_number(message_id):
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
    if not is_whole_number(older_than_days, minimum=1):
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

"""The outbox relay: publishes committed outbox messages to Celery. Its own process (`bin/relay`).

Not a beat task: beat needs the broker, and the relay's job is to outlive the broker being away.
Each round is one short transaction: claim due rows with FOR UPDATE SKIP LOCKED (pending rows,
and sent rows whose lease ran out), publish each, mark them sent with a new lease, commit. Each
task kind has its own lease, derived from its time limit (project.outbox.services.task_lease_seconds; the
relay finds the task by name in the Celery app's registry, as a worker does). A
relay that dies between publishing and committing leaves its rows pending, so they are published
again (tasks are idempotent). Several relays may run; SKIP LOCKED splits the rows between them.

Between rounds the relay sleeps on LISTEN (outbox_enqueue NOTIFYs at commit) with a poll of
OUTBOX_POLL_SECONDS as a fallback, so a new message in a quiet shop is published within
milliseconds of its commit and a due retry within a second. After a round that found work (but
not a full batch) it gathers for OUTBOX_GATHER_MS before the next, so under load the
messages of that interval go out together: the messages of a task with an `outbox_batch_size`
above 1 (the order emails) as one Celery message per group, one broker round trip and one task
run for the group. When the broker is unreachable the relay keeps the rows
pending, backs off (up to OUTBOX_BROKER_BACKOFF_MAX_SECONDS) and tries again; a broker outage
never makes a message dead.
"""

import collections
import contextlib
import logging
import threading

import psycopg
import psycopg.sql
import redis.exceptions
from celery import Celery
from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection, transaction
from django.utils.module_loading import import_string
from kombu.exceptions import OperationalError as KombuOperationalError
from prometheus_client import Counter

from project.db.pooler import session_connection_params
from project.observability.logs import REQUEST_ID_HEADER
from project.outbox import locks
from project.outbox.models import OutboxMessage
from project.outbox.services import (
    ERROR_CHARS,
    OUTBOX_BATCH_HEADER,
    OUTBOX_HEADER,
    retry_delay,
    task_lease_seconds,
)

logger = logging.getLogger("stockroom.relay")

BROKER_ERRORS = (KombuOperationalError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)

OUTBOX_PUBLISHED = Counter("stockroom_outbox_published_total", "Outbox messages published by the relay", ["task"])
OUTBOX_RELAY_FAILURES = Counter(
    "stockroom_outbox_relay_failures_total", "Relay rounds that could not publish", ["cause"]
)


def initialise_series() -> None:
    for cause in ("broker", "database"):
        OUTBOX_RELAY_FAILURES.labels(cause=cause)


class BrokerUnavailable(Exception):
    """The broker could not be reached; the unpublished rows stay pending."""


class OutboxRelay:
    """The relay loop. `run()` until `stop` is set; `relay_batch()` is one round (tests call it)."""

    def __init__(
        self,
        *,
        broker_url: str | None = None,
        batch_size: int | None = None,
        poll_seconds: float | None = None,
        stop: threading.Event | None = None,
        app: Celery | None = None,
    ):
        # The Celery app is the wiring's (settings.OUTBOX_CELERY_APP): the platform is handed it, never imports it.
        self.app = app or import_string(settings.OUTBOX_CELERY_APP)
        self.broker_url = broker_url or settings.CELERY_BROKER_URL
        self.batch_size = batch_size or settings.OUTBOX_BATCH_SIZE
        self.poll_seconds = poll_seconds if poll_seconds is not None else settings.OUTBOX_POLL_SECONDS
        self.stop = stop or threading.Event()
        self._broker = None
        self._producer = None
        self._listener: psycopg.Connection | None = None
        self._leases: dict[str, int] = {}
        self._batch_sizes: dict[str, int] = {}
        self._tasks_imported = False
        self.rounds = 0  # loop rounds started, for tests and logs

    # --- one round ---------------------------------------------------------------------------

    def relay_batch(self) -> int:
        """Claim, publish, mark: one transaction. Returns the number of rows claimed.

        Raises BrokerUnavailable after committing what was published before the broker failed.
        """
        published: list[OutboxMessage] = []
        failed: list[tuple[OutboxMessage, Exception]] = []
        dead: list[OutboxMessage] = []
        broker_error = None
        with transaction.atomic():
            messages = locks.claim_due_messages(self.batch_size)
            live = []
            for message in messages:
                (dead if message.attempts >= settings.OUTBOX_MAX_ATTEMPTS else live).append(message)
            for delivery in self._deliveries(live):
                try:
                    self._publish(delivery)
                except BROKER_ERRORS as exc:
                    broker_error = exc
                    break
                except Exception as exc:  # these messages cannot be published; the others can
                    failed.extend((message, exc) for message in delivery)
                    continue
                published.extend(delivery)
            self._mark_sent(published)
            self._mark_failed(failed)
            self._mark_dead(dead)
        for task, count in collections.Counter(message.task for message in published).items():
            OUTBOX_PUBLISHED.labels(task=task).inc(count)
        if broker_error is not None:
            raise BrokerUnavailable(str(broker_error)) from broker_error
        return len(messages)

    def _deliveries(self, messages: list[OutboxMessage]) -> list[list[OutboxMessage]]:
        """The Celery messages to publish, in claim order: one per message, except that the
        messages of a task with an `outbox_batch_size` above 1 go in groups of up to that size."""
        deliveries: list[list[OutboxMessage]] = []
        open_groups: dict[str, list[OutboxMessage]] = {}
        for message in messages:
            size = self.batch_size_of(message.task)
            group = open_groups.get(message.task)
            if group is None or len(group) >= size:
                group = open_groups[message.task] = []
                deliveries.append(group)
            group.append(message)
        return deliveries

    def _publish(self, delivery: list[OutboxMessage]) -> None:
        first = delivery[0]
        if self.batch_size_of(first.task) > 1:
            # Each row holds its own arguments and request id; the task reads them when it claims.
            headers, args, kwargs = {OUTBOX_BATCH_HEADER: [message.pk for message in delivery]}, [], {}
        else:
            headers, args, kwargs = {OUTBOX_HEADER: first.pk}, first.args, first.kwargs
            if first.request_id:
                headers[REQUEST_ID_HEADER] = first.request_id
        # retry=False: a broker outage is the relay's to handle (back off, rows stay pending),
        # not a reason to block this transaction in kombu's own retry loop.
        self.app.send_task(
            first.task,
            args=args,
            kwargs=kwargs,
            headers=headers,
            producer=self._broker_producer(),
            retry=False,
        )

    def _task(self, task_name: str):
        """The task registered under `task_name`, found as a worker finds it; None if unknown."""
        task = self.app.tasks.get(task_name)
        if task is None and not self._tasks_imported:
            # The apps' task modules, found by Celery's autodiscovery as a worker finds them
            # (the platform imports no app by name).
            self.app.loader.import_default_modules()
            self._tasks_imported = True
            task = self.app.tasks.get(task_name)
        return task

    def batch_size_of(self, task_name: str) -> int:
        """How many messages of `task_name` one Celery message carries (the task's `outbox_batch_size`)."""
        size = self._batch_sizes.get(task_name)
        if size is None:
            size = self._batch_sizes[task_name] = max(int(getattr(self._task(task_name), "outbox_batch_size", 1)), 1)
        return size

    def lease_seconds(self, task_name: str) -> int:
        """The lease of a message of `task_name`, from the task's own time limit."""
        lease = self._leases.get(task_name)
        if lease is None:
            task = self._task(task_name)
            if task is None:
                logger.warning("relay: unknown task %s; lease OUTBOX_LEASE_SECONDS", task_name)
            lease = self._leases[task_name] = task_lease_seconds(task)
        return lease

    def _mark_sent(self, messages: list[OutboxMessage]) -> None:
        if not messages:
            return
        with connection.cursor() as cursor:
            cursor.execute(
                """
                UPDATE project_outboxmessage AS m
                   SET state = 'sent', attempts = m.attempts + 1, sent_at = now(),
                       next_attempt_at = now() + make_interval(secs => lease.seconds)
                  FROM unnest(%s::bigint[], %s::int[]) AS lease (id, seconds)
                 WHERE m.id = lease.id
                """,
                [[m.pk for m in messages], [self.lease_seconds(m.task) for m in messages]],
            )

    def _mark_failed(self, failures: list[tuple[OutboxMessage, Exception]]) -> None:
        for message, exc in failures:
            attempts = message.attempts + 1
            logger.error("outbox message %s (%s) could not be published: %s", message.pk, message.task, exc)
            state = (
                OutboxMessage.State.DEAD if attempts >= settings.OUTBOX_MAX_ATTEMPTS else OutboxMessage.State.PENDING
            )
            with connection.cursor() as cursor:
                cursor.execute(
                    """
                    UPDATE project_outboxmessage
                       SET state = %s, attempts = %s, last_error = %s, next_attempt_at = now() + %s
                     WHERE id = %s
                    """,
                    [state, attempts, f"{type(exc).__name__}: {exc}"[-ERROR_CHARS:], retry_delay(attempts), message.pk],
                )

    def _mark_dead(self, messages: list[OutboxMessage]) -> None:
        for message in messages:
            logger.error(
                "outbox message %s (%s) was delivered %d times and never done; it is dead",
                message.pk,
                message.task,
                message.attempts,
            )
        if messages:
            OutboxMessage.objects.filter(pk__in=[m.pk for m in messages]).update(
                state=OutboxMessage.State.DEAD,
                last_error=f"Not done after {settings.OUTBOX_MAX_ATTEMPTS} deliveries (lease ran out each time).",
            )

    # --- the broker --------------------------------------------------------------------------

    def _broker_producer(self):
        if self._producer is None:
            # One connection attempt, then the relay's own backoff (kombu would retry forever).
            self._broker = self.app.connection_for_write(
                url=self.broker_url,
                transport_options={"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2},
            )
            self._broker.ensure_connection(max_retries=1)
            self._producer = self.app.amqp.Producer(self._broker, auto_declare=False)
        return self._producer

    def _drop_broker(self) -> None:
        if self._broker is not None:
            try:
                self._broker.release()
            except Exception:  # already broken; nothing to give back
                logger.debug("closing the broken broker connection failed", exc_info=True)
        self._broker = self._producer = None

    # --- waiting -------------------------------------------------------------------------------

    def _listen(self) -> None:
        if self._listener is not None:
            return
        # A session of its own: behind PgBouncer (transaction mode) a LISTEN would stay on a server
        # connection lent to others, and the notifications with it; so PostgreSQL itself.
        listener = psycopg.connect(**session_connection_params(connection), autocommit=True)
        listener.execute(f"LISTEN {psycopg.sql.Identifier(settings.OUTBOX_NOTIFY_CHANNEL).as_string(listener)}")
        self._listener = listener

    def _wait(self, seconds: float) -> None:
        """Until a NOTIFY arrives, `seconds` pass, or the relay is stopped."""
        try:
            self._listen()
            for _ in self._listener.notifies(timeout=seconds, stop_after=1):
                pass
        except psycopg.Error as exc:
            logger.warning("relay LISTEN connection lost (%s); polling until it is back", exc)
            self._close_listener()
            self.stop.wait(seconds)

    def _close_listener(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(psycopg.Error):
                self._listener.close()
            self._listener = None

    # --- the loop ------------------------------------------------------------------------------

    def run(self) -> None:
        logger.info("outbox relay started (batch %d, poll %.1fs)", self.batch_size, self.poll_seconds)
        backoff = 0.0
        try:
            self._listen_quietly()
            while not self.stop.is_set():
                self.rounds += 1
                try:
                    claimed = self.relay_batch()
                    backoff = 0.0
                except BrokerUnavailable as exc:
                    OUTBOX_RELAY_FAILURES.labels(cause="broker").inc()
                    backoff = min(max(backoff * 2, 0.25), settings.OUTBOX_BROKER_BACKOFF_MAX_SECONDS)
                    logger.warning("broker unavailable (%s); messages stay pending, next try in %.2fs", exc, backoff)
                    self._drop_broker()
                    self.stop.wait(backoff)
                    continue
                except DatabaseError as exc:
                    OUTBOX_RELAY_FAILURES.labels(cause="database").inc()
                    backoff = min(max(backoff * 2, 0.25), settings.OUTBOX_BROKER_BACKOFF_MAX_SECONDS)
                    logger.warning("database unavailable (%s); next try in %.2fs", exc, backoff)
                    close_old_connections()
                    connection.close()
                    self._close_listener()
                    self.stop.wait(backoff)
                    continue
                if claimed >= self.batch_size:
                    continue  # a backlog: look again at once
                if claimed:
                    # Gather, then look again: the rows committed meanwhile go out together (a
                    # batch task's in one Celery message), and so do those whose transactions
                    # skipped their NOTIFY (outbox_notify_channel).
                    self.stop.wait(settings.OUTBOX_GATHER_MS / 1000)
                    continue
                self._wait(self.poll_seconds)
        finally:
            self._close_listener()
            self._drop_broker()
            connection.close()
            logger.info("outbox relay stopped")

    def _listen_quietly(self) -> None:
        try:
            self._listen()
        except psycopg.Error as exc:
            logger.warning("relay could not LISTEN yet (%s); polling", exc)

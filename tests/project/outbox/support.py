"""A real relay and a real worker in the test process, and a TCP proxy a test can cut.

The relay runs its real loop (LISTEN/NOTIFY, poll, backoff) in a thread; the worker is Celery's
test worker (solo pool, in a thread) on the test broker DB and queues. Outage tests point the
relay at a TcpProxy in front of the machine's Redis and cut the proxy, never Redis itself.
"""

import contextlib
import logging
import threading
from collections.abc import Iterator

import psycopg
from celery.contrib.testing.worker import start_worker
from django.conf import settings
from django.core.mail.backends import locmem
from django.db import connection

from project.celery import app
from project.observability.logs import RequestIdFilter
from project.outbox.relay import OutboxRelay
from tests.support import TcpProxy, other_connection


def broker_host_port() -> tuple[str, int]:
    conn = app.connection_for_write()
    try:
        return conn.hostname or "127.0.0.1", int(conn.port or 6379)
    finally:
        conn.release()


def broker_url_via(proxy: TcpProxy) -> str:
    """The test broker URL (same Redis DB) through the proxy."""
    db = settings.CELERY_BROKER_URL.rsplit("/", 1)[1]
    return f"redis://127.0.0.1:{proxy.port}/{db}"


class RelayThread:
    """The relay's real loop in a thread, stopped and joined on exit."""

    def __init__(self, relay: OutboxRelay | None = None, **options):
        self.stop = threading.Event()
        self.relay = relay or OutboxRelay(stop=self.stop, **options)
        self.relay.stop = self.stop
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.relay.run()
        except BaseException as exc:  # the test asserts the relay never crashed
            self.error = exc
        finally:
            connection.close()

    def __enter__(self) -> "RelayThread":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self._thread.join(timeout=20)
        assert not self._thread.is_alive(), "the relay did not stop"


@contextlib.contextmanager
def running_worker() -> Iterator[object]:
    """A real Celery worker (solo pool, in a thread) on the test broker DB and queue."""
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10, loglevel="WARNING") as worker:
        yield worker


class LogCapture(logging.Handler):
    """Records of every logger with their request id. Attach it after the worker has started:
    a starting worker re-applies Django's LOGGING, which replaces the root logger's handlers."""

    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.addFilter(RequestIdFilter())
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self) -> list[str]:
        return [record.getMessage() for record in self.records]

    def __enter__(self) -> "LogCapture":
        root = logging.getLogger()
        self._level = root.level
        root.addHandler(self)
        root.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc) -> None:
        root = logging.getLogger()
        root.removeHandler(self)
        root.setLevel(self._level)


class ProbingEmailBackend(locmem.EmailBackend):
    """The test email backend (django.core.mail.outbox), recording at each send what the sending
    thread holds: whether its connection is inside a transaction, the locks its database session
    holds (pg_locks, read from another connection), and whether another connection can lock the
    outbox rows at that moment (FOR UPDATE NOWAIT). `pause` makes a send wait for a signal."""

    probes: list[dict] = []
    sending = threading.Event()  # set when a send has started
    pause: threading.Event | None = None  # if set: each send waits for it

    @classmethod
    def reset(cls) -> None:
        cls.probes = []
        cls.sending = threading.Event()
        cls.pause = None

    def send_messages(self, messages):
        probe = {"in_atomic_block": connection.in_atomic_block}
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pid = cursor.fetchone()[0]
        with other_connection(autocommit=True) as other:
            probe["locks"] = other.execute(
                "SELECT locktype, mode, coalesce(relation::regclass::text, '') FROM pg_locks"
                " WHERE pid = %s AND locktype <> 'virtualxid'",
                [pid],
            ).fetchall()
            probe["state"] = other.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()[0]
            try:
                with other.transaction():
                    other.execute("SET LOCAL lock_timeout = '100ms'")
                    other.execute("SELECT id FROM project_outboxmessage FOR UPDATE NOWAIT").fetchall()
                probe["outbox_rows_lockable"] = True
            except psycopg.errors.LockNotAvailable:
                probe["outbox_rows_lockable"] = False
        type(self).probes.append(probe)
        type(self).sending.set()
        if type(self).pause is not None:
            type(self).pause.wait(timeout=30)
        return super().send_messages(messages)

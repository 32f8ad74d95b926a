"""A real relay and a real worker in the test process, and a TCP proxy a test can cut.

The relay runs its real loop (LISTEN/NOTIFY, poll, backoff) in a thread; the worker is Celery's
test worker (solo pool, in a thread) on the test broker DB and queues. Outage tests point the
relay at a TcpProxy in front of the machine's Redis and cut the proxy, never Redis itself.
"""

import contextlib
import logging
import selectors
import socket
import threading
from collections.abc import Iterator

from celery.contrib.testing.worker import start_worker
from django.conf import settings
from django.db import connection

from project.celery import app
from project.logs import RequestIdFilter
from project.relay import OutboxRelay


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target. `cut()` closes every connection and stops
    listening (clients get 'connection refused'); `restore()` listens again on the same port."""

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self._listener: socket.socket | None = None
        self._port = 0
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connections = 0

    @property
    def port(self) -> int:
        return self._port

    def start(self) -> "TcpProxy":
        self._listen()
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        return self

    def _listen(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self._port))
        sock.listen(64)
        sock.settimeout(0.05)
        self._port = sock.getsockname()[1]
        self._listener = sock

    def _serve(self) -> None:
        while not self._stop.is_set():
            listener = self._listener
            if listener is None:
                self._stop.wait(0.05)
                continue
            try:
                client, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=2)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, upstream))
                self.connections += 1
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        selector = selectors.DefaultSelector()
        selector.register(client, selectors.EVENT_READ, upstream)
        selector.register(upstream, selectors.EVENT_READ, client)
        try:
            while not self._stop.is_set():
                for key, _ in selector.select(timeout=0.1):
                    data = key.fileobj.recv(65536)
                    if not data:
                        return
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            selector.close()
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.close()

    def cut(self) -> None:
        with self._lock:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            for client, upstream in self._pairs:
                for sock in (client, upstream):
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
                        sock.close()
            self._pairs.clear()

    def restore(self) -> None:
        with self._lock:
            if self._listener is None:
                self._listen()

    def close(self) -> None:
        self.cut()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


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

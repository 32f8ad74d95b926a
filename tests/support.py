"""Helpers for tests: free ports, waiting, a closed port, a TCP proxy, reading a CSV download."""

import contextlib
import csv
import io
import os
import selectors
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from django.http import StreamingHttpResponse

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def closed_port() -> int:
    """A port nothing listens on (bound and released, so the kernel answers 'refused')."""
    return free_port()


def wait_for(predicate, *, timeout: float, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def subprocess_env(**overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(overrides)
    return env


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


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


@contextlib.contextmanager
def gunicorn_server(tmp_path: Path, **env: str):
    """gunicorn (gunicorn.conf.py, test settings unless overridden) on a free port, until the block
    ends; yields its base URL once /healthz answers."""
    import httpx

    port = free_port()
    settings = {
        "DJANGO_SETTINGS_MODULE": "project.settings.test",
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / f"prometheus-{port}"),
        **env,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"],
        cwd=ROOT,
        env=subprocess_env(**settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"

    def up():
        try:
            return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, timeout=30, what="gunicorn to answer")
        yield base
    finally:
        stop_process(proc)


def other_connection(**options):
    """A psycopg connection of its own to the test database, beside Django's (a second session
    that holds locks, listens or waits while the code under test runs). Behind a transaction-mode
    pooler it goes to PostgreSQL itself: a session advisory lock taken through PgBouncer would
    outlive this client on the server connection lent to the next one."""
    import psycopg
    from django.db import connection

    from project.db.pooler import session_connection_params

    return psycopg.connect(**session_connection_params(connection), **options)


def read_csv(response, *, filename_prefix: str = "") -> list[list[str]]:
    """The rows of a streamed CSV download (200, text/csv, an attachment named `filename_prefix`...)."""
    assert response.status_code == 200
    assert isinstance(response, StreamingHttpResponse)
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith(f'attachment; filename="{filename_prefix}')
    body = b"".join(response.streaming_content).decode()
    return list(csv.reader(io.StringIO(body)))

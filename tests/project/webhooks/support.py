"""A real webhook receiver for the tests: a threaded HTTP server on a free loopback port.

Each endpoint of a test is a path on it (`receiver.url("/a")`) with its own behaviour: the status
it answers, a gate that holds requests until the test opens it, how many requests are in flight at
once. Every request is recorded with its headers and body and checked with the Standard Webhooks
reference library (standardwebhooks, an implementation independent of ours) against the secret
the test registered for the path.
"""

import contextlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.conf import settings
from standardwebhooks import Webhook, WebhookVerificationError

from project.celery import app
from project.webhooks.events import register_event_types, unregister_event_types
from project.webhooks.models import WebhookEndpoint
from project.webhooks.signing import new_secret
from tests.reliability.support import celery_worker


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool
    status: int  # what the receiver answered

    @property
    def webhook_id(self) -> str:
        return self.headers.get("webhook-id", "")

    @property
    def event(self) -> dict:
        return json.loads(self.body)


@dataclass
class Route:
    secret: str
    status: int = 200
    gate: threading.Event | None = None  # requests wait for it (up to hold_seconds)
    hold_seconds: float = 30.0
    # Requests wait until this many are in flight on the route (up to hold_seconds): real overlap.
    wait_for_company: int = 0
    in_flight: int = 0
    most_in_flight: int = 0
    arrived: threading.Condition = field(default_factory=threading.Condition)


class Receiver:
    def __init__(self):
        self.routes: dict[str, Route] = {}
        self.received: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                receiver._handle(self)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Receiver":
        self._thread.start()
        return self

    def __exit__(self, *exc):
        for route in self.routes.values():
            if route.gate is not None:
                route.gate.set()
        self.server.shutdown()
        self.server.server_close()

    def route(self, path: str, secret: str, **behaviour) -> Route:
        self.routes[path] = Route(secret=secret, **behaviour)
        return self.routes[path]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def requests(self, path: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.received if path is None or r.path == path]

    def accepted(self, path: str) -> list[Received]:
        """Requests of `path` answered 2xx, verified, in arrival order."""
        return [r for r in self.requests(path) if 200 <= r.status < 300 and r.verified]

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("content-length") or 0)
        body = handler.rfile.read(length)
        headers = {name.lower(): value for name, value in handler.headers.items()}
        route = self.routes.get(handler.path.split("?", 1)[0])
        if route is None:
            handler.send_response(404)
            handler.send_header("content-length", "0")
            handler.end_headers()
            return
        try:
            Webhook(route.secret).verify(body, headers)
            verified = True
        except WebhookVerificationError:
            verified = False
        with route.arrived:
            route.in_flight += 1
            route.most_in_flight = max(route.most_in_flight, route.in_flight)
            route.arrived.notify_all()
            status = route.status
        # Recorded as it arrives (a request held at the gate is listed, with the answer it will get).
        with self._lock:
            self.received.append(Received(handler.path.split("?", 1)[0], headers, body, verified, status))
        try:
            if route.wait_for_company:
                with route.arrived:
                    route.arrived.wait_for(
                        lambda: route.in_flight >= route.wait_for_company, timeout=route.hold_seconds
                    )
            if route.gate is not None:
                route.gate.wait(route.hold_seconds)
            handler.send_response(status)
            handler.send_header("content-type", "text/plain")
            handler.send_header("content-length", "2")
            handler.end_headers()
            handler.wfile.write(b"ok")
        except OSError:
            pass  # the worker that asked is gone (killed by the test)
        finally:
            with route.arrived:
                route.in_flight -= 1


class Beat:
    """Publishes `webhooks.dispatch` every `interval` seconds, as beat does in production (the tests
    run no beat): retries fall due and claims of killed workers run out with nobody to kick."""

    def __init__(self, app, interval: float = 0.5):
        self.app = app
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.app.send_task("webhooks.dispatch")
            self._stop.wait(self.interval)

    def __enter__(self) -> "Beat":
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)


def drip_server(chunks: list[bytes], interval: float) -> tuple[ThreadingHTTPServer, threading.Event]:
    """A server that answers every request by writing `chunks` one at a time, `interval` apart
    (a receiver trickling its answer). Returns the server (started) and an event to stop it early."""
    stop = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("content-length") or 0))
            for chunk in chunks:
                if stop.is_set():
                    return
                try:
                    self.wfile.write(chunk)
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(interval)  # the trickle itself, not a wait for an outcome

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, stop


# --- fixtures (imported by the test modules that use them) ----------------------------------------

TEST_TYPES = {"test.ping": "A test event.", "test.other": "Another test event."}


@pytest.fixture
def event_types():
    """Test event types, registered for the test (the apps' own stay as they are)."""
    register_event_types(TEST_TYPES)
    yield TEST_TYPES
    unregister_event_types(TEST_TYPES)


@pytest.fixture
def make_endpoint(event_types):
    def make(url: str = "https://hooks.example.com/in", **fields) -> WebhookEndpoint:
        fields.setdefault("events", ["test.ping"])
        fields.setdefault("secret", new_secret())
        return WebhookEndpoint.objects.create(url=url, **fields)

    return make


# What the tests' webhook workers are told through their environment: loopback allowed (for these
# tests only), short retries, short hand-out marks.
WORKER = {
    "WEBHOOK_ALLOW_PRIVATE_ADDRESSES": "1",
    "WEBHOOK_RETRY_SCHEDULE_SECONDS": ",".join(["0.3"] * 30),
    "WEBHOOK_DISPATCH_LEASE_SECONDS": "3",
    "LOG_LEVEL": "INFO",
}


@contextlib.contextmanager
def webhooks_worker(tmp_path, name="worker", **env):
    """A real Celery worker process on the webhooks queue (threads pool, 8 threads, as bin/webhooks
    runs it) and a thread publishing `webhooks.dispatch` every half second, as beat would."""
    log = tmp_path / f"{name}.log"
    with (
        celery_worker(log, queues=settings.WEBHOOK_QUEUE, pool="threads", concurrency=8, **{**WORKER, **env}) as proc,
        Beat(app),
    ):
        yield proc

"""Outages under load, made by cutting a TCP proxy the test owns (never the machine's servers).

The proxy is the selector-based one of tests/project/outbox/support.py. Under this load the
thread-per-socket tests.support.TcpProxy let a connection live through a cut now and then: a
request hung for a minute on it and its database session outlived the test.

- Redis gone: a live gunicorn whose cache, rate limiter and broker all go through the proxy keeps
  taking orders (the limiter fails open for writes, the cache is bypassed; token creation fails
  closed), the relay keeps their emails in the outbox, and once Redis is back each message is
  delivered once: one email per order, each outbox row done after one publish.
- PostgreSQL gone mid-load: clients placing orders and reading the catalogue get clean 503s with
  Retry-After (never a 500, never a dropped connection); the same gunicorn workers recover on
  their own, and every request that got a 503 is retried with its Idempotency-Key: no order is
  lost and none is created twice.
"""

import threading
import time
import uuid
from collections import Counter

import httpx
import pytest
from celery.contrib.testing.worker import start_worker
from django.conf import settings
from django.core import mail

from inventory import services as stock
from orders.models import Order
from project.celery import app
from project.outbox.models import OutboxMessage
from tests.factories import ProductFactory, UserFactory, WarehouseFactory
from tests.invariants import assert_stock_invariants
from tests.orders.conftest import order_body
from tests.project.outbox.support import RelayThread, TcpProxy, broker_url_via
from tests.reliability.support import bearer, database_url, live_gunicorn
from tests.support import wait_for
from users.services import api_key_create

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.timeout(240)]


def _redis_port() -> int:
    return int(settings.CACHES["default"]["LOCATION"].rsplit(":", 1)[1].split("/")[0])


def _booted_workers(server) -> int:
    return server.log_text().count("Booting worker with pid")


@pytest.fixture
def shop():
    WarehouseFactory(code="MAIN")
    for sku in ("MUG", "TEA"):
        ProductFactory(sku=sku)
        stock.stock_receive(sku=sku, warehouse_code="MAIN", quantity=1000)
    customer = UserFactory(email="ada@example.com", password="correct horse battery staple")
    _, key = api_key_create(user=customer)
    return customer, key


def test_orders_flow_while_redis_is_away_and_their_emails_go_out_once_when_it_returns(shop, settings, tmp_path):
    _, key = shop
    settings.OUTBOX_BROKER_BACKOFF_MAX_SECONDS = 0.5  # the relay retries the broker often in the test
    proxy = TcpProxy("127.0.0.1", _redis_port()).start()
    app.control.purge()
    try:
        with (
            live_gunicorn(tmp_path, REDIS_URL=f"redis://127.0.0.1:{proxy.port}/0") as server,
            httpx.Client(base_url=server.base, headers=bearer(key), timeout=30) as http,
        ):
            # Everything this gunicorn knows of Redis goes through the proxy: warm it up first.
            assert "RateLimit" in http.get("/api/v1/products").headers
            assert httpx.get(server.url("/readyz"), timeout=10).status_code == 200
            proxy.cut()

            with RelayThread(broker_url=broker_url_via(proxy)) as relay:
                numbers = []
                for n in range(20):
                    placed = http.post(
                        "/api/v1/orders",
                        json=order_body(("MUG", 1), ("TEA", 1 + n % 3)),
                        headers={"Idempotency-Key": f"redis-away-{n}"},
                    )
                    assert placed.status_code == 201, placed.text  # the write limiter failed open
                    assert "RateLimit" not in placed.headers  # no verdict: Redis was not asked
                    numbers.append(placed.json()["number"])
                listing = http.get("/api/v1/products")
                assert listing.status_code == 200  # the cache is bypassed, PostgreSQL answers
                assert {item["sku"]: item["available"] for item in listing.json()["results"]} == {
                    "MUG": 980,
                    "TEA": 1000 - sum(1 + n % 3 for n in range(20)),
                }
                token = httpx.post(
                    server.url("/api/v1/auth/tokens"),
                    json={"email": "ada@example.com", "password": "correct horse battery staple"},
                    timeout=10,
                )
                assert token.status_code == 503  # sign-in's limiter fails closed
                assert token.json()["error"]["code"] == "rate_limiter_unavailable" and token.headers["Retry-After"]
                ready = httpx.get(server.url("/readyz"), timeout=10).json()
                assert (ready["checks"]["cache"]["ok"], ready["checks"]["broker"]["ok"]) == (False, False)

                placed_messages = OutboxMessage.objects.filter(kwargs__kind="placed")
                assert placed_messages.count() == 20
                assert set(placed_messages.values_list("state", flat=True)) == {"pending"}  # kept, not lost

                with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10, loglevel="WARNING"):
                    proxy.restore()
                    wait_for(
                        lambda: set(placed_messages.values_list("state", flat=True)) == {"done"},
                        timeout=60,
                        what="every email to be delivered after Redis came back",
                    )
            assert relay.error is None

            # The same gunicorn talks to Redis again: the limiter gives verdicts, sign-in works.
            assert "RateLimit" in http.get("/api/v1/products").headers
            again = httpx.post(
                server.url("/api/v1/auth/tokens"),
                json={"email": "ada@example.com", "password": "correct horse battery staple"},
                timeout=10,
            )
            assert again.status_code == 201
    finally:
        proxy.close()

    assert sorted(placed_messages.values_list("attempts", flat=True)) == [1] * 20  # one publish each
    subjects = Counter(message.subject for message in mail.outbox)
    assert subjects == Counter(f"Order {number}: reserved for you" for number in numbers)  # once per order
    assert all(message.to == ["ada@example.com"] for message in mail.outbox)
    # The cache logs each Redis error it ignores (with its traceback); no request failed with a 500.
    assert "Internal Server Error" not in server.log_text()
    assert_stock_invariants()


class Load:
    """Client threads placing orders and reading until stopped; every answer is recorded."""

    def __init__(self, base: str, key: str, threads: int = 6):
        self.base, self.key = base, key
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.statuses: Counter = Counter()
        self.bad: list[str] = []  # 500s, 503s without the envelope or Retry-After, broken connections
        self.keys: dict[str, tuple[dict, int]] = {}  # Idempotency-Key -> (body, last status)
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _record(self, what: str, response: httpx.Response) -> None:
        with self.lock:
            self.statuses[(what, response.status_code)] += 1
        if response.status_code >= 500:
            body = response.json() if response.headers.get("Content-Type", "").startswith("application/json") else {}
            if (
                response.status_code != 503
                or "Retry-After" not in response.headers
                or body.get("error", {}).get("code") not in ("database_unavailable", "lock_timeout")
            ):
                self.bad.append(f"{what}: {response.status_code} {response.text[:300]}")

    def _run(self, i: int) -> None:
        with httpx.Client(base_url=self.base, headers=bearer(self.key), timeout=30) as http:
            n = 0
            while not self.stop.is_set():
                n += 1
                try:
                    if n % 3:
                        key, body = f"{i}-{n}-{uuid.uuid4().hex[:6]}", order_body(("MUG", 1))
                        response = http.post("/api/v1/orders", json=body, headers={"Idempotency-Key": key})
                        with self.lock:
                            self.keys[key] = (body, response.status_code)
                        self._record("place", response)
                    else:
                        self._record("read", http.get("/api/v1/products/MUG"))
                except httpx.HTTPError as exc:
                    self.bad.append(f"{'place' if n % 3 else 'read'}: {type(exc).__name__}: {exc} at {time.time():.1f}")
                time.sleep(0.02)

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def count(self, what: str, status: int) -> int:
        with self.lock:
            return self.statuses[(what, status)]


def _retry(http: httpx.Client, body: dict, idem: str) -> httpx.Response | None:
    """One retry; None while the key's claim is still in flight. A request cut off between its key
    claim and its order keeps the claim until the lease (IDEMPOTENCY_LEASE_SECONDS) runs out: the
    database was gone, so nothing could drop it. The client is told 409 `request_in_flight`."""
    response = http.post("/api/v1/orders", json=body, headers={"Idempotency-Key": idem})
    if response.status_code == 409 and response.json()["error"]["code"] == "request_in_flight":
        return None
    return response


def test_postgres_gone_mid_load_answers_503_and_recovers_without_a_restart(shop, tmp_path):
    _, key = shop
    port = int(settings.DATABASES["default"].get("PORT") or 5432)
    proxy = TcpProxy("127.0.0.1", port).start()
    env = {
        "DATABASE_URL": database_url(proxy.port),
        "DB_POOL_TIMEOUT": "2",
        "DB_CONNECT_TIMEOUT": "2",
        "CIRCUIT_FAILURE_THRESHOLD": "2",
        "CIRCUIT_COOLDOWN_SECONDS": "1",
        "IDEMPOTENCY_LEASE_SECONDS": "5",  # a claim stranded by the outage frees up soon (see _retry)
    }
    try:
        with live_gunicorn(tmp_path, **env) as server, Load(server.base, key) as load:
            booted = _booted_workers(server)
            wait_for(lambda: load.count("place", 201) >= 20, timeout=60, what="orders before the outage")

            proxy.cut()
            wait_for(lambda: load.count("place", 503) >= 10, timeout=60, what="503s while PostgreSQL is away")
            outage_201s = load.count("place", 201)
            time.sleep(2)  # the load goes on against the open circuit breaker
            proxy.restore()

            wait_for(lambda: load.count("place", 201) >= outage_201s + 20, timeout=60, what="orders after recovery")
            assert _booted_workers(server) == booted  # the same workers recovered: no restart
            # Each probe on a new connection, so SO_REUSEPORT spreads them over the workers: one
            # that took none of the load since the restore is back too, within the pool's
            # reconnection ceiling (DB_POOL_MAX_RECONNECT_DELAY), not after psycopg_pool's backoff.
            wait_for(
                lambda: all(httpx.get(server.url("/readyz"), timeout=10).status_code == 200 for _ in range(8)),
                timeout=15,
                what="every worker ready",
            )
            load.stop.set()
            for thread in load.threads:
                thread.join(timeout=60)

            # A client that got a 503 retries with the same key: an order committed just before the
            # cut is replayed, one that never committed is placed now. Either way exactly one.
            with httpx.Client(base_url=server.base, headers=bearer(key), timeout=30) as http:
                for idem, (body, status) in list(load.keys.items()):
                    if status == 503:
                        retried = wait_for(
                            lambda body=body, idem=idem: _retry(http, body, idem),
                            timeout=30,
                            interval=0.5,
                            what=f"the retry of {idem}",
                        )
                        assert retried.status_code == 201, retried.text
                        load.keys[idem] = (body, 201)
    finally:
        proxy.close()

    assert load.bad == [], load.bad[:10]
    assert load.count("read", 200) > 0
    assert {status for (what, status) in load.statuses} <= {200, 201, 503}, load.statuses
    created = [idem for idem, (_, status) in load.keys.items() if status == 201]
    assert len(created) == len(load.keys)  # every request ended as an order, after its retry if need be
    assert Order.objects.count() == len(created)  # no order lost, none created twice
    assert sorted(Order.objects.values_list("reference", flat=True)) == [""] * len(created)
    assert "Internal Server Error" not in server.log_text()
    assert_stock_invariants()

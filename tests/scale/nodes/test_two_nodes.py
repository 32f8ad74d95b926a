"""Two web nodes behind HAProxy share one PostgreSQL and one Redis: what one node changes, the other
serves at once, and nothing a process keeps for itself (docs/scaling.md lists each such thing)
makes a client's next request, landing on the other node, see an older world.

Node A (web1) and node B (web2) are reached directly when a test needs to say which node does
what, and through HAProxy when the client should not care. The last test kills node B mid-load.
"""

import html
import json
import re
import subprocess
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import httpx
import pytest

from inventory import services as stock
from orders.models import IdempotencyKey, Order
from project.webhooks.models import WebhookDelivery
from tests.factories import ProductFactory, UserFactory, WarehouseFactory
from tests.invariants import assert_stock_invariants
from tests.orders.conftest import order_body
from tests.reliability.support import bearer, pool_children
from tests.scale.nodes.conftest import AUTH_BURST, AVAILABILITY_MAX_AGE_MS, CIRCUIT_COOLDOWN_SECONDS
from tests.support import ROOT, wait_for
from users.services import api_key_create

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.timeout(240)]


def _sku(prefix: str) -> str:
    """A SKU no earlier test of the module used: the nodes remember availability per SKU."""
    return f"{prefix}-{uuid.uuid4().hex[:8].upper()}"


@pytest.fixture
def shop():
    """A warehouse, a staff key and a customer key (rows flushed after each test)."""
    WarehouseFactory(code="MAIN")
    staff = UserFactory(is_staff=True)
    _, staff_key = api_key_create(user=staff, scopes=["read", "write", "staff"])
    customer = UserFactory()
    _, customer_key = api_key_create(user=customer)
    return staff_key, customer_key


def _product(name: str = "Stoneware mug", units: int = 10) -> str:
    sku = _sku("MUG")
    ProductFactory(sku=sku, name=name)
    stock.stock_receive(sku=sku, warehouse_code="MAIN", quantity=units)
    return sku


def _fresh_reads(url: str, times: int = 6, **kwargs) -> list[httpx.Response]:
    """`times` GETs, each on a new connection: the kernel spreads them over the node's workers."""
    return [httpx.get(url, timeout=10, **kwargs) for _ in range(times)]


def test_a_product_edited_through_one_node_is_fresh_on_the_other_at_once(two_nodes, shop):
    staff_key, _ = shop
    sku = _product(name="Stoneware mug")
    a, b = two_nodes.a, two_nodes.b
    # B builds and caches the product, the list and the page first.
    for response in _fresh_reads(b.url(f"/api/v1/products/{sku}")):
        assert response.json()["name"] == "Stoneware mug"
    assert any(p["sku"] == sku for p in httpx.get(b.url("/api/v1/products?page_size=50"), timeout=10).json()["results"])
    assert "Stoneware mug" in httpx.get(b.url(f"/products/{sku}/"), timeout=10).text

    etag = httpx.get(a.url(f"/api/v1/products/{sku}"), headers=bearer(staff_key), timeout=10).headers["ETag"]
    edited = httpx.patch(
        a.url(f"/api/v1/products/{sku}"),
        json={"name": "Porcelain mug", "price": "12.50"},
        headers={**bearer(staff_key), "If-Match": etag},
        timeout=10,
    )
    assert edited.status_code == 200, edited.text

    for response in _fresh_reads(b.url(f"/api/v1/products/{sku}")):
        assert (response.json()["name"], response.json()["price"]) == ("Porcelain mug", "12.50")
    for response in _fresh_reads(b.url("/api/v1/products?page_size=50"), times=3):
        assert {p["sku"]: p["name"] for p in response.json()["results"]}[sku] == "Porcelain mug"
    for response in _fresh_reads(b.url(f"/products/{sku}/"), times=3):
        assert "Porcelain mug" in response.text and "Stoneware mug" not in response.text


def test_stock_sold_through_one_node_shows_on_the_other_within_the_availability_bound(two_nodes, shop):
    """Each process keeps availability it read for CATALOGUE_AVAILABILITY_MAX_AGE_MS
    (inventory.availability): the other node is one more process, held to the same bound."""
    _, customer_key = shop
    sku = _product(units=10)
    a, b = two_nodes.a, two_nodes.b
    for response in _fresh_reads(b.url(f"/api/v1/products/{sku}")):
        assert response.json()["available"] == 10  # B's workers now hold 10

    placed = httpx.post(
        a.url("/api/v1/orders"),
        json=order_body((sku, 3)),
        headers={**bearer(customer_key), "Idempotency-Key": uuid.uuid4().hex},
        timeout=10,
    )
    committed = time.monotonic()
    assert placed.status_code == 201, placed.text

    def b_shows_the_sale():
        return all(r.json()["available"] == 7 for r in _fresh_reads(b.url(f"/api/v1/products/{sku}"), times=4))

    wait_for(b_shows_the_sale, timeout=10, interval=0.05, what="B to show the sale")
    # Within the bound (plus the reads' own time on a busy machine), never a TTL's worth later.
    assert time.monotonic() - committed < AVAILABILITY_MAX_AGE_MS / 1000 + 1.0
    page = httpx.get(b.url(f"/products/{sku}/"), timeout=10)
    assert page.status_code == 200


def test_a_key_revoked_through_one_node_is_refused_by_the_other_on_the_next_request(two_nodes, shop):
    a, b = two_nodes.a, two_nodes.b
    user = UserFactory()
    _, keeper = api_key_create(user=user)
    doomed_row, doomed = api_key_create(user=user)
    # B authenticates the key many times: its bearer statement is prepared on B's pooled
    # connections, and the limiter (Redis) has learnt the key's proof.
    for response in _fresh_reads(b.url("/api/v1/orders"), times=8, headers=bearer(doomed)):
        assert response.status_code == 200, response.text

    revoked = httpx.delete(a.url(f"/api/v1/auth/keys/{doomed_row.prefix}"), headers=bearer(keeper), timeout=10)
    assert revoked.status_code == 204, revoked.text

    for response in _fresh_reads(b.url("/api/v1/orders"), times=8, headers=bearer(doomed)):
        assert response.status_code == 401
    for response in _fresh_reads(two_nodes.proxy.url("/api/v1/orders"), times=4, headers=bearer(doomed)):
        assert response.status_code == 401
    assert httpx.get(b.url("/api/v1/orders"), headers=bearer(keeper), timeout=10).status_code == 200


def test_the_rate_limit_counts_requests_through_both_nodes_by_the_address_haproxy_forwards(two_nodes):
    """`auth` is counted per client address: HAProxy appends the one it saw to X-Forwarded-For,
    and RATELIMIT_TRUSTED_PROXIES=1 takes that entry, not one the client wrote itself. Loopback
    is a /8: binding the client to 127.0.0.2 or 127.0.0.3 makes two clients HAProxy tells apart."""
    login = {"email": "nobody@example.com", "password": "not the password"}

    def client(address: str) -> httpx.Client:
        transport = httpx.HTTPTransport(local_address=address)
        return httpx.Client(base_url=two_nodes.proxy.base, transport=transport, timeout=10)

    with client("127.0.0.2") as guesser, client("127.0.0.3") as neighbour:
        answered = [
            # Each claims to be someone new: entries left of the proxy's prove nothing.
            guesser.post("/api/v1/auth/tokens", json=login, headers={"X-Forwarded-For": f"203.0.113.{n}"})
            for n in range(AUTH_BURST)
        ]
        assert [r.status_code for r in answered] == [401] * AUTH_BURST, [r.text for r in answered]
        assert {r.headers["X-Stockroom-Node"] for r in answered} == {"web1", "web2"}

        refused = guesser.post("/api/v1/auth/tokens", json=login, headers={"X-Forwarded-For": "198.51.100.7"})
        assert refused.status_code == 429, refused.text
        assert int(refused.headers["Retry-After"]) > 0
        # The next request lands on the other node, which refuses it too: one budget.
        again = guesser.post("/api/v1/auth/tokens", json=login)
        assert again.status_code == 429
        assert {refused.headers["X-Stockroom-Node"], again.headers["X-Stockroom-Node"]} == {"web1", "web2"}

        assert neighbour.post("/api/v1/auth/tokens", json=login).status_code == 401


@pytest.mark.parametrize("accept", [None, "*/*", "application/json", "text/html", "application/xml;q=0.9"])
def test_both_nodes_negotiate_the_same_answer_for_an_accept_header(two_nodes, accept):
    """Each process remembers the negotiation's answer per Accept header (project.api.negotiation):
    the first request on one node fills its memory, the other works it out; they must agree."""
    headers = {"Accept": accept} if accept else {}
    answers = set()
    for node in (two_nodes.a, two_nodes.b, two_nodes.a, two_nodes.b):
        for response in _fresh_reads(node.url("/api/v1/products?page_size=1"), times=2, headers=headers):
            answers.add((response.status_code, response.headers["Content-Type"]))
    assert len(answers) == 1, answers
    assert answers <= {(200, "application/json"), (406, "application/json")}


def test_each_node_answers_for_its_own_workers_on_its_own_control_socket(two_nodes):
    """gunicorn's default control socket is one path per user: a second gunicorn would take it over."""

    def workers(node) -> set[int]:
        out = subprocess.run(
            [str(ROOT / ".venv" / "bin" / "gunicornc"), "-s", str(node.control_socket), "-j", "-c", "show workers"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return {worker["pid"] for worker in json.loads(out.stdout)["workers"]}

    a, b = two_nodes.a, two_nodes.b
    assert workers(a) == set(pool_children(a.proc.pid)) and len(workers(a)) == 2
    assert workers(b) == set(pool_children(b.proc.pid)) and len(workers(b)) == 2


def test_metrics_are_scraped_from_each_node_never_through_haproxy(two_nodes):
    """Each node's /metrics sums its own workers only: through the balancer a scrape would get a
    random node's figures. The X-Forwarded-For HAProxy adds makes the node refuse it as loopback."""
    assert httpx.get(two_nodes.a.url("/metrics"), timeout=10).status_code == 200
    assert httpx.get(two_nodes.b.url("/metrics"), timeout=10).status_code == 200
    assert httpx.get(two_nodes.proxy.url("/metrics"), timeout=10).status_code == 403


def test_a_webhook_endpoint_registered_through_one_node_gets_the_other_nodes_orders(two_nodes, shop):
    """Emitting reads the endpoints in its own statement (webhook_write): no process keeps a list."""
    staff_key, customer_key = shop
    sku = _product()
    created = httpx.post(
        two_nodes.a.url("/api/v1/webhooks/endpoints"),
        json={"url": "https://hooks.example.com/stockroom", "events": ["order.placed"]},
        headers=bearer(staff_key),
        timeout=10,
    )
    assert created.status_code == 201, created.text
    placed = httpx.post(
        two_nodes.b.url("/api/v1/orders"),
        json=order_body((sku, 1)),
        headers={**bearer(customer_key), "Idempotency-Key": uuid.uuid4().hex},
        timeout=10,
    )
    assert placed.status_code == 201, placed.text
    assert WebhookDelivery.objects.filter(endpoint_id=created.json()["id"]).count() == 1


def _hidden(page: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', page) or re.search(rf'value="([^"]*)" name="{name}"', page)
    assert match, f"no {name} in the page"
    return html.unescape(match.group(1))


def test_a_shopper_signed_in_on_one_node_shops_and_checks_out_on_the_other(two_nodes, shop):
    """Sessions (and the cart in them) live in PostgreSQL, the CSRF token and the checkout page's
    signed basket are checked with SECRET_KEY, which every node shares: each page of a browser's
    visit may come from either node. Cookies are per host, not per port: one jar serves both."""
    sku = _product(name="Linen apron")
    UserFactory(email="ada@example.com", password="correct horse battery staple")
    a, b = two_nodes.a, two_nodes.b
    with httpx.Client(timeout=10, follow_redirects=True) as browser:
        login = browser.get(a.url("/accounts/login/"))
        signed_in = browser.post(
            a.url("/accounts/login/"),
            data={
                "username": "ada@example.com",
                "password": "correct horse battery staple",
                "csrfmiddlewaretoken": _hidden(login.text, "csrfmiddlewaretoken"),
            },
        )
        assert signed_in.status_code == 200 and "ada@example.com" in signed_in.text

        product = browser.get(b.url(f"/products/{sku}/"))
        added = browser.post(
            b.url("/cart/add/"),
            data={"sku": sku, "quantity": "2", "csrfmiddlewaretoken": _hidden(product.text, "csrfmiddlewaretoken")},
        )
        assert added.status_code == 200, added.text[:500]

        checkout = browser.get(a.url("/checkout/"))
        assert "Linen apron" in checkout.text
        placed = browser.post(
            b.url("/checkout/"),
            data={
                "name": "Ada Lovelace",
                "line1": "12 Analytical St",
                "city": "London",
                "postal_code": "N1 9GU",
                "country": "GB",
                "idempotency_key": _hidden(checkout.text, "idempotency_key"),
                "basket": _hidden(checkout.text, "basket"),
                "csrfmiddlewaretoken": _hidden(checkout.text, "csrfmiddlewaretoken"),
            },
        )
        assert placed.status_code == 200, placed.text[:500]
        order = Order.objects.get(user__email="ada@example.com")
        assert order.number in browser.get(a.url("/orders/")).text
        assert "Linen apron" not in browser.get(a.url("/cart/")).text  # the cart emptied through B


def test_a_breaker_opened_on_one_node_leaves_the_other_serving_and_recovers_on_its_own(two_nodes, shop):
    """Node A loses PostgreSQL (its TcpProxy is cut): A's breaker opens and A answers 503, while B,
    whose breaker is its own, goes on placing orders; clients through HAProxy that retry a 503
    with their Idempotency-Key all get their orders. Once the path is back, A recovers by itself."""
    _, customer_key = shop
    sku = _product(units=100)
    a, b, proxy = two_nodes.a, two_nodes.b, two_nodes.proxy
    two_nodes.db_cut.cut()
    try:

        def a_circuit_open():
            responses = _fresh_reads(a.url("/readyz"), times=2)
            return "circuit open" in a.log_text() and all(r.status_code == 503 for r in responses)

        wait_for(a_circuit_open, timeout=30, what="node A's breaker to open")
        assert all(r.status_code == 200 for r in _fresh_reads(b.url("/readyz"), times=4))

        statuses = Counter()
        with httpx.Client(base_url=proxy.base, headers=bearer(customer_key), timeout=10) as http:
            for _ in range(4):
                key = uuid.uuid4().hex

                def place(key=key):
                    response = http.post("/api/v1/orders", json=order_body((sku, 1)), headers={"Idempotency-Key": key})
                    statuses[(response.headers.get("X-Stockroom-Node"), response.status_code)] += 1
                    return response.status_code == 201

                wait_for(place, timeout=20, interval=0.05, what="an order through HAProxy")
        # Every order was placed by B; A, still in rotation (HAProxy checks liveness), placed none.
        assert statuses[("web2", 201)] == 4 and statuses[("web1", 201)] == 0, statuses
    finally:
        two_nodes.db_cut.restore()

    # Back within the cooldown and the pool's reconnection delay, without a restart.
    wait_for(
        lambda: all(r.status_code == 200 for r in _fresh_reads(a.url("/readyz"), times=6)),
        timeout=CIRCUIT_COOLDOWN_SECONDS + 15,
        what="node A to recover",
    )
    key, answers = uuid.uuid4().hex, []

    def placed_on_a():  # each worker's pool reconnects on its own: a client retries a 503 with its key
        answers.append(
            httpx.post(
                a.url("/api/v1/orders"),
                json=order_body((sku, 1)),
                headers={**bearer(customer_key), "Idempotency-Key": key},
                timeout=10,
            )
        )
        return answers[-1].status_code == 201

    wait_for(placed_on_a, timeout=10, interval=0.2, what="an order on node A")
    assert {r.status_code for r in answers} <= {201, 503}, [r.text for r in answers]
    assert Order.objects.count() == 5
    assert_stock_invariants()


# --- one node killed mid-load ---------------------------------------------------------------------

CLIENTS = 10


@dataclass
class Shopper:
    """Places orders through HAProxy one after another, each with its own Idempotency-Key, retrying a
    connection error, a 5xx or 409 request_in_flight with the same key until it gets its 201."""

    base: str
    key: str
    skus: list[str]
    stop: threading.Event
    orders: dict[str, str] = field(default_factory=dict)  # Idempotency-Key -> order number
    retries: Counter = field(default_factory=Counter)
    nodes: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def run(self, number: int) -> None:
        with httpx.Client(base_url=self.base, headers=bearer(self.key), timeout=15) as http:
            while not self.stop.is_set():
                key = uuid.uuid4().hex
                body = order_body((self.skus[number % len(self.skus)], 1), reference=f"shopper-{number}")
                number += CLIENTS
                deadline = time.monotonic() + 30
                while True:
                    if time.monotonic() > deadline:
                        self.failures.append(f"{key}: no order within 30 s")
                        return
                    try:
                        response = http.post("/api/v1/orders", json=body, headers={"Idempotency-Key": key})
                    except httpx.TransportError as exc:
                        self.retries[type(exc).__name__] += 1
                        continue
                    if response.status_code == 201:
                        self.orders[key] = response.json()["number"]
                        self.nodes[response.headers.get("X-Stockroom-Node")] += 1
                        break
                    if response.status_code >= 500 or (
                        response.status_code == 409 and response.json()["error"]["code"] == "request_in_flight"
                    ):
                        self.retries[response.status_code] += 1
                        time.sleep(0.1)  # a client's back-off between retries, not a wait for the test
                        continue
                    self.failures.append(f"{key}: {response.status_code} {response.text[:300]}")
                    return


def test_killing_a_node_mid_load_loses_no_accepted_order_and_makes_no_duplicate(two_nodes, shop):
    _, customer_key = shop
    skus = [_product(units=100_000) for _ in range(3)]
    b, proxy = two_nodes.b, two_nodes.proxy
    stop = threading.Event()
    shoppers = [Shopper(proxy.base, customer_key, skus, stop) for _ in range(CLIENTS)]
    threads = [threading.Thread(target=s.run, args=(n,), daemon=True) for n, s in enumerate(shoppers)]
    placed = lambda: sum(len(s.orders) for s in shoppers)  # noqa: E731
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: placed() >= 40, timeout=60, what="orders before the kill")
        b.kill()
        killed_at = placed()
        wait_for(lambda: placed() >= killed_at + 40, timeout=60, what="orders on the surviving node")
        wait_for(lambda: "web2 is DOWN" in proxy.log_text(), timeout=10, what="HAProxy to take web2 out")

        b.start()  # the same port; HAProxy's checks bring it back into rotation
        wait_for(lambda: "web2 is UP" in proxy.log_text().split("web2 is DOWN", 1)[1], timeout=20, what="web2 back")
        back_at = sum(s.nodes["web2"] for s in shoppers)
        wait_for(lambda: sum(s.nodes["web2"] for s in shoppers) >= back_at + 10, timeout=30, what="orders on web2")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)

    failures = [failure for s in shoppers for failure in s.failures]
    assert failures == [], failures[:10]
    answered = {key: number for s in shoppers for key, number in s.orders.items()}
    # Every client got its order, and each key holds exactly one: no order lost, none twice.
    assert Order.objects.count() == len(answered)
    assert dict(IdempotencyKey.objects.filter(key__in=answered).values_list("key", "order__number")) == answered
    assert len(set(answered.values())) == len(answered)
    assert_stock_invariants()
    assert "Traceback" not in two_nodes.a.log_text()

"""The rate limiter against the real Redis (its own key prefix per test), and against a closed port."""

import re
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.http import HttpResponse
from django.test import Client, RequestFactory
from django.test.utils import CaptureQueriesContext
from prometheus_client import REGISTRY
from rest_framework.test import APIClient

from project.ratelimit.limiter import GCRA_SCRIPT, Rate, RateLimitMiddleware, ScriptConnections, client_address, limiter
from tests.conftest import bearer
from tests.support import closed_port
from users.services import api_key_create

PASSWORD = "correct horse battery staple"
POLICY = re.compile(r'^"(?P<group>[a-z_]+)";q=(?P<q>\d+);w=(?P<w>\d+)$')
STATE = re.compile(r'^"(?P<group>[a-z_]+)";r=(?P<r>\d+);t=(?P<t>\d+)$')


@pytest.fixture
def limits(settings):
    """The limiter switched on with a key prefix of its own, so no other test or run shares buckets."""
    prefix = f"stockroom-test-rl-{uuid.uuid4().hex[:12]}"
    url = settings.RATELIMIT_REDIS_URL
    settings.RATELIMIT_ENABLED = True
    settings.CACHE_KEY_PREFIX = prefix
    yield settings
    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


def policy(response) -> dict:
    match = POLICY.match(response["RateLimit-Policy"])
    assert match, response["RateLimit-Policy"]
    return {"group": match["group"], "q": int(match["q"]), "w": int(match["w"])}


def state(response) -> dict:
    match = STATE.match(response["RateLimit"])
    assert match, response["RateLimit"]
    return {"group": match["group"], "r": int(match["r"]), "t": int(match["t"])}


def failures(group: str) -> float:
    return REGISTRY.get_sample_value("stockroom_ratelimit_redis_failures_total", {"group": group}) or 0.0


def test_a_limit_of_n_passes_exactly_n_requests_and_refuses_the_next_with_429(limits, customer_client):
    limits.RATELIMIT_READ = "5/60"

    statuses = [customer_client.get("/api/v1/auth/keys").status_code for _ in range(5)]
    refused = customer_client.get("/api/v1/auth/keys")

    assert statuses == [200] * 5
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused["Retry-After"]) <= 12  # one emission interval: 60 s / 5


def test_the_bucket_refills_one_request_per_emission_interval(limits, client):
    limits.RATELIMIT_READ = "2/1"  # one request every 0.5 s, two at once

    first = [client.get("/api/v1/nothing-here").status_code for _ in range(3)]
    time.sleep(0.55)
    after_one_interval = [client.get("/api/v1/nothing-here").status_code for _ in range(2)]

    assert first == [404, 404, 429]
    assert after_one_interval == [404, 429]


def test_twenty_threads_on_one_key_never_pass_more_than_the_limit(limits):
    limits.RATELIMIT_WRITE = "25/60"
    middleware = RateLimitMiddleware(lambda request: HttpResponse("placed"))
    failures_before = failures("write")
    barrier = threading.Barrier(20)

    def buyer(_):
        factory = RequestFactory()
        barrier.wait()
        return [middleware(factory.post("/api/v1/orders", REMOTE_ADDR="198.51.100.20")).status_code for _ in range(5)]

    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = [status for batch in pool.map(buyer, range(20)) for status in batch]

    assert statuses.count(200) == 25
    assert statuses.count(429) == 75
    assert failures("write") == failures_before  # every answer came from Redis, none from failing open


def test_headers_are_structured_fields_on_every_limited_response(limits, customer_client):
    limits.RATELIMIT_READ = "3/60"

    responses = [customer_client.get("/api/v1/auth/keys") for _ in range(4)]

    assert [policy(response) for response in responses] == [{"group": "read", "q": 3, "w": 60}] * 4
    states = [state(response) for response in responses]
    assert [item["r"] for item in states] == [2, 1, 0, 0]
    assert all(item["group"] == "read" and 1 <= item["t"] <= 60 for item in states)
    assert responses[-1].status_code == 429
    assert re.fullmatch(r"[1-9]\d*", responses[-1]["Retry-After"])
    assert "Retry-After" not in responses[0]


def test_write_requests_have_their_own_group(limits, customer, customer_client):
    limits.RATELIMIT_READ = "100/60"
    limits.RATELIMIT_WRITE = "1/60"
    spare, _ = api_key_create(user=customer)
    other, _ = api_key_create(user=customer)

    first = customer_client.delete(f"/api/v1/auth/keys/{spare.prefix}")
    second = customer_client.delete(f"/api/v1/auth/keys/{other.prefix}")
    read = customer_client.get("/api/v1/auth/keys")

    assert first.status_code == 204
    assert policy(first) == {"group": "write", "q": 1, "w": 60}
    assert second.status_code == 429
    assert read.status_code == 200


def test_each_api_key_has_its_own_budget_behind_one_address(limits, customer):
    limits.RATELIMIT_READ = "2/60"
    _, key_a = api_key_create(user=customer)
    _, key_b = api_key_create(user=customer)
    client_a, client_b = bearer(APIClient(), key_a), bearer(APIClient(), key_b)

    a = [client_a.get("/api/v1/auth/keys").status_code for _ in range(3)]
    b = [client_b.get("/api/v1/auth/keys").status_code for _ in range(3)]

    assert a == [200, 200, 429]
    assert b == [200, 200, 429]


def test_invented_key_prefixes_get_no_more_than_their_address(limits, db, customer):
    limits.RATELIMIT_READ = "3/60"

    statuses = [
        bearer(APIClient(), f"sr_{uuid.uuid4().hex[:10]}_forged").get("/api/v1/auth/keys").status_code for _ in range(5)
    ]
    _, real_key = api_key_create(user=customer)
    elsewhere = bearer(APIClient(REMOTE_ADDR="198.51.100.77"), real_key).get("/api/v1/auth/keys")

    assert statuses == [401, 401, 401, 429, 429]
    assert elsewhere.status_code == 200


def test_a_wrong_secret_with_a_victims_prefix_spends_the_callers_address_not_the_victims_key(limits, customer):
    limits.RATELIMIT_READ = "3/60"
    victim_key, secret = api_key_create(user=customer)
    victim = bearer(APIClient(REMOTE_ADDR="198.51.100.10"), secret)
    attacker = bearer(APIClient(REMOTE_ADDR="203.0.113.66"), f"sr_{victim_key.prefix}_not-the-secret")

    first = victim.get("/api/v1/auth/keys").status_code
    attacks = [attacker.get("/api/v1/auth/keys").status_code for _ in range(6)]
    rest = [victim.get("/api/v1/auth/keys").status_code for _ in range(3)]

    assert first == 200
    assert attacks == [401, 401, 401, 429, 429, 429]  # the attacker's address ran dry
    assert rest == [200, 200, 429]  # the victim kept its whole budget of three


def test_a_key_s_first_request_is_moved_from_its_address_to_the_key(limits, customer):
    limits.RATELIMIT_READ = "2/60"
    _, secret = api_key_create(user=customer)
    keyed = bearer(APIClient(REMOTE_ADDR="198.51.100.11"), secret)
    anonymous = APIClient(REMOTE_ADDR="198.51.100.11")

    first = keyed.get("/api/v1/auth/keys")
    anonymous_statuses = [anonymous.get("/api/v1/nothing-here").status_code for _ in range(3)]

    assert first.status_code == 200
    assert anonymous_statuses == [404, 404, 429]  # the address has its whole budget back
    assert keyed.get("/api/v1/auth/keys").status_code == 200
    assert keyed.get("/api/v1/auth/keys").status_code == 429  # the key was charged for both


def test_the_limiter_never_asks_postgresql_about_a_learnt_key(limits, customer):
    _, secret = api_key_create(user=customer)
    request = RequestFactory().get("/api/v1/auth/keys", HTTP_AUTHORIZATION=f"Bearer {secret}")
    middleware = RateLimitMiddleware(lambda request: HttpResponse("ok"))

    with CaptureQueriesContext(connection) as queries:
        response = middleware(request)

    assert response.status_code == 200
    assert len(queries) == 0


def test_a_signed_in_browser_is_counted_by_user_not_by_address(limits, client, customer):
    limits.RATELIMIT_READ = "2/60"
    client.force_login(customer)
    anonymous = Client()

    signed_in = [client.get("/api/v1/auth/keys").status_code for _ in range(3)]
    same_address = anonymous.get("/api/v1/nothing-here")

    assert signed_in == [200, 200, 429]
    assert same_address.status_code == 404


def test_a_signed_in_browser_s_session_row_is_read_once_per_request(limits, client, customer):
    client.force_login(customer)

    with CaptureQueriesContext(connection) as queries:
        response = client.get("/api/v1/auth/keys")

    assert response.status_code == 200  # signed in: the session the limiter read authenticated it
    assert len([q for q in queries if 'FROM "django_session"' in q["sql"]]) == 1


@pytest.mark.parametrize("cookie", ["signed in", "unknown session", "none"])
@pytest.mark.parametrize("path", ["/api/v1/nothing-here", "/api/v1/auth/keys", "/"])
def test_the_session_the_limiter_read_answers_as_sessions_do_without_the_limiter(limits, customer, path, cookie):
    def send(limiter_on: bool):
        limits.RATELIMIT_ENABLED = limiter_on
        client = Client()
        if cookie == "signed in":
            client.force_login(customer)
        elif cookie == "unknown session":
            client.cookies[settings.SESSION_COOKIE_NAME] = "x" * 32
        response = client.get(path)
        cookies = sorted((name, morsel["max-age"]) for name, morsel in response.cookies.items())
        return response.status_code, response.get("Vary"), cookies

    assert send(limiter_on=True) == send(limiter_on=False)


def test_token_creation_is_limited_by_address_whatever_key_the_request_carries(limits, api_client, customer):
    limits.RATELIMIT_AUTH = "2/60"
    body = {"email": customer.email, "password": "wrong"}

    statuses = []
    for _ in range(4):
        api_client.credentials(HTTP_AUTHORIZATION=f"Bearer sr_{uuid.uuid4().hex[:10]}_forged")
        statuses.append(api_client.post("/api/v1/auth/tokens", body, format="json").status_code)
    refused = api_client.post("/api/v1/auth/tokens", body, format="json")
    other_address = Client(REMOTE_ADDR="198.51.100.8").post(
        "/api/v1/auth/tokens", body, content_type="application/json"
    )

    assert statuses == [401, 401, 429, 429]
    assert refused.json()["error"]["code"] == "rate_limited"
    assert policy(refused) == {"group": "auth", "q": 2, "w": 60}
    assert other_address.status_code == 401


def test_sign_up_is_limited_by_address_with_the_other_auth_forms(limits, client):
    limits.RATELIMIT_AUTH = "2/60"
    form = {"email": "not an address", "password1": "x", "password2": "y"}

    attempts = [client.post("/accounts/signup/", form).status_code for _ in range(2)]
    refused = client.post("/accounts/signup/", form)
    other_address = Client(REMOTE_ADDR="198.51.100.9").post("/accounts/signup/", form)

    assert attempts == [400, 400]  # the form again, with its errors
    assert refused.status_code == 429
    assert policy(refused) == {"group": "auth", "q": 2, "w": 60}
    assert other_address.status_code == 400
    assert client.get("/accounts/signup/").status_code == 200  # reading the form is the read group


def test_admin_login_is_rate_limited(limits, client, staff_user):
    limits.RATELIMIT_ADMIN_LOGIN = "3/60"
    form = {"username": staff_user.email, "password": "guess", "next": "/admin/"}

    guesses = [client.post("/admin/login/", form).status_code for _ in range(3)]
    refused = client.post("/admin/login/", {**form, "password": PASSWORD})
    login_page = client.get("/admin/login/")

    assert guesses == [200, 200, 200]  # the form again, with its error
    assert refused.status_code == 429
    assert refused["Content-Type"].startswith("text/plain")
    assert int(refused["Retry-After"]) >= 1
    assert policy(refused) == {"group": "admin_login", "q": 3, "w": 60}
    assert login_page.status_code == 200  # reading the form is the read group


def test_health_metrics_and_static_files_are_never_limited(limits, client):
    limits.RATELIMIT_READ = "1/60"

    responses = [client.get(path) for path in ["/healthz"] * 3 + ["/metrics"] * 3 + ["/static/stockroom.css"] * 3]

    assert all(response.status_code != 429 for response in responses)
    assert not any("RateLimit" in response for response in responses)


def test_nothing_is_limited_when_the_limiter_is_switched_off(limits, client):
    limits.RATELIMIT_READ = "1/60"
    limits.RATELIMIT_ENABLED = False

    statuses = [client.get("/api/v1/nothing-here").status_code for _ in range(3)]

    assert statuses == [404, 404, 404]


class TestRedisUnreachable:
    """The limiter pointed at a closed port; the machine's Redis keeps running."""

    @pytest.fixture(autouse=True)
    def unreachable(self, limits):
        limits.RATELIMIT_REDIS_URL = f"redis://127.0.0.1:{closed_port()}/14"

    def test_reads_and_writes_pass_and_are_counted(self, customer, customer_client):
        spare, _ = api_key_create(user=customer)
        reads, writes = failures("read"), failures("write")

        read = customer_client.get("/api/v1/auth/keys")
        write = customer_client.delete(f"/api/v1/auth/keys/{spare.prefix}")

        assert read.status_code == 200
        assert write.status_code == 204
        assert policy(read) == {"group": "read", "q": 1_000_000, "w": 60}
        assert "RateLimit" not in read  # no state to report without Redis
        assert failures("read") == reads + 1
        assert failures("write") == writes + 1

    def test_token_creation_fails_closed_with_503(self, api_client, customer):
        response = api_client.post(
            "/api/v1/auth/tokens", {"email": customer.email, "password": PASSWORD}, format="json"
        )

        assert response.status_code == 503
        assert response.json()["error"]["code"] == "rate_limiter_unavailable"
        assert int(response["Retry-After"]) >= 1

    def test_admin_login_fails_closed_with_503(self, client, staff_user):
        response = client.post("/admin/login/", {"username": staff_user.email, "password": PASSWORD})

        assert response.status_code == 503
        assert int(response["Retry-After"]) >= 1
        assert "_auth_user_id" not in client.session

    def test_one_warning_per_interval_however_many_requests_fail(self, client, json_log):
        for _ in range(5):
            assert client.get("/api/v1/nothing-here").status_code == 404

        warnings = [line for line in json_log() if line["logger"] == "stockroom.ratelimit"]
        assert len(warnings) == 1
        assert warnings[0]["level"] == "WARNING"
        assert warnings[0]["request_id"]


def test_a_redis_that_does_not_know_the_script_is_sent_it_with_the_call(limits):
    # A script of our own (a unique comment), so no other test or process has loaded it: like
    # the first call after a Redis restart. Never SCRIPT FLUSH: the machine's Redis is shared.
    script = f"{GCRA_SCRIPT}\n-- {uuid.uuid4().hex}"
    connections = ScriptConnections(limits.RATELIMIT_REDIS_URL, size=2, timeout=1.0, script=script)
    client = redis.Redis.from_url(limits.RATELIMIT_REDIS_URL)
    key = f"{limits.CACHE_KEY_PREFIX}:rl:read:addr:192.0.2.50"
    try:
        assert client.script_exists(connections.sha) == [False]
        first = connections.evalsha([key], ["hit", 1_000_000, 2_000_000])
        second = connections.evalsha([key], ["hit", 1_000_000, 2_000_000])
        third = connections.evalsha([key], ["hit", 1_000_000, 2_000_000])
        assert client.script_exists(connections.sha) == [True]
    finally:
        connections.close()
        client.close()

    assert [first[:2], second[:2], third[0]] == [[1, 1], [1, 0], 0]


def _resp_command(buffer: bytes) -> tuple[list[bytes], bytes] | None:
    """The first complete command (a RESP array of bulk strings) in `buffer` and what follows it,
    or None while it is incomplete."""
    if not buffer.startswith(b"*") or b"\r\n" not in buffer:
        return None
    head, rest = buffer[1:].split(b"\r\n", 1)
    parts = []
    for _ in range(int(head)):
        if not rest.startswith(b"$") or b"\r\n" not in rest:
            return None
        size, rest = rest[1:].split(b"\r\n", 1)
        if len(rest) < int(size) + 2:
            return None
        parts.append(rest[: int(size)])
        rest = rest[int(size) + 2 :]
    return parts, rest


class SlowRedis:
    """A fake Redis on a port of its own: answers the connection handshake, and to the
    script call `allowed` (1 or 0) after `delay` seconds; `delays` is popped per script call."""

    def __init__(self, delays: list[float]):
        self.delays = delays
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        with conn:
            buffer = b""
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                buffer += data
                # redis-py 8 sends the tail of its handshake (CLIENT SETINFO twice, SELECT) in one
                # packet: answer every complete command in the buffer, in order.
                while (parsed := _resp_command(buffer)) is not None:
                    command, buffer = parsed
                    try:
                        conn.sendall(self._reply(command))
                    except OSError:
                        return

    def _reply(self, command: list[bytes]) -> bytes:
        name = command[0].upper() if command else b""
        if name in (b"EVAL", b"EVALSHA"):
            delay = self.delays.pop(0) if self.delays else 0.0
            time.sleep(delay)
            allowed = 0 if delay else 1  # a late answer says "refused": it must never be read
            return f"*5\r\n:{allowed}\r\n:5\r\n:1\r\n:{0 if allowed else 60_000_000}\r\n:1\r\n".encode()
        if name == b"HELLO":
            return b"%1\r\n$5\r\nproto\r\n:3\r\n"
        return b"+OK\r\n"

    def close(self):
        self.listener.close()


def test_a_stalled_redis_costs_a_request_the_timeout_and_its_late_answer_is_never_read(limits, client):
    slow = SlowRedis(delays=[0.6])
    limits.RATELIMIT_REDIS_URL = f"redis://127.0.0.1:{slow.port}/0"
    limits.RATELIMIT_REDIS_TIMEOUT = 0.2
    reads = failures("read")
    try:
        started = time.monotonic()
        stalled = client.get("/api/v1/nothing-here")
        waited = time.monotonic() - started
        time.sleep(0.6)  # the late "refused" answer has arrived on the connection that gave up
        after = [client.get("/api/v1/nothing-here") for _ in range(3)]
    finally:
        slow.close()

    assert stalled.status_code == 404  # read: failed open
    assert "RateLimit" not in stalled
    assert waited < 0.55
    assert failures("read") == reads + 1
    assert [response.status_code for response in after] == [404] * 3
    assert [state(response)["r"] for response in after] == [5] * 3  # each an answer to its own call


@pytest.mark.parametrize(
    ("trusted", "forwarded", "expected"),
    [
        (0, "203.0.113.5", "192.0.2.1"),  # no proxy trusted: the header is the client's own words
        (1, "203.0.113.5", "203.0.113.5"),
        (1, "10.6.6.6, 203.0.113.5", "203.0.113.5"),  # the left entry was forged by the client
        (2, "10.6.6.6, 203.0.113.5, 198.51.100.1", "203.0.113.5"),
        (2, "203.0.113.5", "203.0.113.5"),  # fewer hops than trusted: the furthest one known
        (1, "", "192.0.2.1"),
        (1, "2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        (1, "::ffff:203.0.113.9", "203.0.113.9"),
        (1, "not-an-address", "unknown"),
    ],
)
def test_client_address_honours_only_the_trusted_proxy_hops(trusted, forwarded, expected):
    request = RequestFactory().get("/", REMOTE_ADDR="192.0.2.1", HTTP_X_FORWARDED_FOR=forwarded)

    assert client_address(request, trusted) == expected


def test_trusted_proxy_setting_keys_requests_by_the_forwarded_address(limits, client):
    limits.RATELIMIT_READ = "1/60"
    limits.RATELIMIT_TRUSTED_PROXIES = 1

    first = client.get("/api/v1/nothing-here", HTTP_X_FORWARDED_FOR="203.0.113.10")
    second = client.get("/api/v1/nothing-here", HTTP_X_FORWARDED_FOR="203.0.113.10")
    other = client.get("/api/v1/nothing-here", HTTP_X_FORWARDED_FOR="203.0.113.11")

    assert [first.status_code, second.status_code, other.status_code] == [404, 429, 404]


@pytest.mark.parametrize("text", ["600", "600/0", "0/60", "a/b", "10/60/1"])
def test_a_malformed_rate_is_refused_naming_the_setting(text):
    with pytest.raises(ImproperlyConfigured, match="RATELIMIT_READ"):
        Rate.parse("RATELIMIT_READ", text)


def test_the_limiter_is_rebuilt_when_its_settings_change(limits):
    limits.RATELIMIT_READ = "7/70"

    assert limiter().rates["read"] == Rate(7, 70)

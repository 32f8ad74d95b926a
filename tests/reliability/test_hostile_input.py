"""Hostile input: fuzzed CSV imports, formula cells in exports, and oversized or malformed requests
sent over the wire to a live gunicorn (its own limits answer some of them before Django does).
"""

import csv
import io
import json
import random
import socket
import uuid
from datetime import date, timedelta

import httpx
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from inventory import imports
from inventory import services as stock
from inventory.models import ImportJob, Product, StockLevel
from orders import jobs
from orders import services as order_services
from orders.api import render_order
from orders.models import Order
from tests.factories import ProductFactory, UserFactory, WarehouseFactory
from tests.invariants import assert_ledger_invariants
from tests.orders.conftest import ADDRESS, order_body
from tests.reliability.support import bearer, live_gunicorn
from users.services import api_key_create

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

WAREHOUSES = ("MAIN", "EAST")
MAX_LINE = 200


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.IMPORT_MAX_LINE_BYTES = MAX_LINE
    settings.IMPORT_CHUNK_ROWS = 7  # several chunks even for small files
    return settings.MEDIA_ROOT


def run_import(data: bytes, actor=None) -> ImportJob:
    job = imports.import_create(upload=SimpleUploadedFile("fuzz.csv", data, content_type="text/csv"), actor=actor)
    return imports.import_run(import_id=job.pk)


# --- CSV fuzzing -----------------------------------------------------------------------------------

# Lines that must be refused, each for a reason of its own.
bad_lines = st.one_of(
    st.binary(min_size=1, max_size=60).map(lambda b: b.replace(b"\n", b"") + b"\xff\xfe"),  # not UTF-8
    st.text(max_size=20).map(lambda t: ("A1,MAIN,1\x00" + t).encode()),  # NUL
    st.integers(MAX_LINE + 1, MAX_LINE * 40).map(lambda n: b"X" * n),  # too long (bounded reads)
    st.sampled_from([b"A1,MAIN", b"A1,MAIN,1,extra,more,cells", b'"A1,MAIN,1', b"A1,NOWHERE,1", b",MAIN,1"]),
    st.sampled_from([b"A1,MAIN,-1", b"A1,MAIN,1.5", b"A1,MAIN,1e3", b"A1,MAIN,99999999999", b"A1,MAIN,\xd9\xa3"]),
    st.sampled_from([b"=cmd|' /C calc'!A0,MAIN,1", b"A 1,MAIN,1", b"A1,MAIN,", b"A1,main,1"]),
)
# Anything at all: its verdict is not asserted, only that it is reported or applied, never a crash.
junk_lines = st.one_of(
    st.binary(max_size=80).map(lambda b: b.replace(b"\n", b" ")),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=80).map(lambda t: t.replace("\n", " ").encode()),
    st.lists(st.sampled_from(['"', ",", "\r", "\t", "\\", "A", "1", " ", "MAIN", '""']), max_size=30).map(
        lambda parts: "".join(parts).encode()
    ),
)


HEADERS = [b"sku,warehouse,on_hand", b"\xef\xbb\xbfSKU, Warehouse ,on_hand", b"on_hand,sku,warehouse"]
NUL_IN_A_STRING = json.dumps({**order_body(("MUG", 1)), "reference": "a\x00b"}).encode()


@st.composite
def stock_files(draw):
    """(file bytes, {line: (sku, warehouse, on_hand)} that must apply, lines that must be refused)."""
    header = draw(
        st.sampled_from([b"sku,warehouse,on_hand", b"\xef\xbb\xbfSKU, Warehouse ,on_hand", b"on_hand,sku,warehouse"])
    )
    order = [name.strip().lower() for name in header.decode("utf-8-sig").split(",")]
    lines, good, bad = [header], {}, set()
    for n in range(draw(st.integers(0, 40))):
        kind = draw(st.sampled_from(["good", "bad", "junk", "blank"]))
        number = len(lines) + 1
        if kind == "good":
            sku, warehouse = f"F{n:03d}", draw(st.sampled_from(WAREHOUSES))
            on_hand = draw(st.integers(0, 10_000))
            values = {"sku": sku, "warehouse": warehouse, "on_hand": str(on_hand)}
            lines.append(",".join(values[name] for name in order).encode())
            good[number] = (sku, warehouse, on_hand)
        elif kind == "bad":
            lines.append(draw(bad_lines))
            bad.add(number)
        elif kind == "junk":
            lines.append(draw(junk_lines))
        else:
            lines.append(draw(st.sampled_from([b"", b"   ", b"\r"])))
    ending = draw(st.sampled_from([b"\n", b"\r\n"]))
    return ending.join(lines) + draw(st.sampled_from([b"", ending])), good, bad


def test_fuzzed_stock_files_apply_every_good_line_and_report_every_bad_one_by_line(media):
    for code in WAREHOUSES:
        WarehouseFactory(code=code)
    for n in range(40):
        ProductFactory(sku=f"F{n:03d}")
    staff = UserFactory(is_staff=True)
    runs = []

    @settings(
        max_examples=30,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(stock_files())
    def check(file):
        data, good, bad = file
        job = run_import(data, actor=staff)
        runs.append(job.status)
        assert job.status in ImportJob.FINISHED
        reported = {error["line"] for error in job.errors}
        if job.status == "failed":  # a file-level error (no data rows at all): nothing applied
            assert not good and job.rows_ok == 0 and job.errors, job.errors
            return
        assert bad <= reported, (bad - reported, job.errors)
        assert not set(good) & reported, job.errors
        for sku, warehouse, on_hand in good.values():
            assert StockLevel.objects.get(product__sku=sku, warehouse__code=warehouse).on_hand == on_hand
        assert job.rows_ok + job.rows_failed == job.rows_total
        assert job.rows_ok >= len(good)
        assert job.rows_failed == len(job.errors)  # fewer than the cap of 1000: every error kept

    check()
    assert_ledger_invariants()
    assert len(runs) == 30


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(bytes(random.Random(seed).randrange(256) for _ in range(4000)), id=f"random-bytes-{seed}")
        for seed in range(3)
    ]
    + [
        pytest.param(b"\x00" * 5000, id="nul-bytes"),
        pytest.param(b"X" * 100_000, id="one-huge-line"),
        pytest.param(b"\r" * 5000, id="carriage-returns-only"),
        pytest.param(b'"' * 5000, id="quotes-only"),
        pytest.param(b"\xef\xbb\xbf", id="byte-order-mark-only"),
    ],
)
def test_garbage_files_fail_the_import_with_a_reason_and_change_nothing(media, data):
    WarehouseFactory(code="MAIN")
    job = run_import(data)
    assert job.status == "failed", job.errors
    assert job.errors and job.errors[0]["message"]
    assert job.rows_ok == 0
    assert not StockLevel.objects.exists()


def test_an_import_without_an_actor_writes_its_ledger_rows(media):
    # created_by is optional (an import queued by a script, or by staff since removed): the ledger
    # rows then carry no actor, and the chunk's SQL must still type that NULL as the actor column.
    WarehouseFactory(code="MAIN")
    ProductFactory(sku="A1")
    ProductFactory(sku="B2")
    WarehouseFactory(code="EAST")
    stock.stock_receive(sku="B2", warehouse_code="EAST", quantity=1)  # updated, not created, by the import

    job = run_import(b"sku,warehouse,on_hand\nA1,MAIN,4\nB2,EAST,3\n", actor=None)

    assert job.status == "succeeded", job.errors
    assert sorted(StockLevel.objects.values_list("on_hand", flat=True)) == [3, 4]
    assert_ledger_invariants()


def test_formula_cells_from_an_import_stay_inert_in_the_sales_report(media):
    WarehouseFactory(code="MAIN")
    formulas = ['=HYPERLINK("http://x")', "+1+1", "-2", "@SUM(A1:A9)", "=cmd|' /C calc'!A0"]
    rows = "\n".join(f'F{n},MAIN,5,"{name.replace(chr(34), chr(34) * 2)}",1.00' for n, name in enumerate(formulas))
    user = UserFactory()
    job = run_import(f"sku,warehouse,on_hand,name,price\n{rows}\n".encode(), actor=UserFactory(is_staff=True))
    assert job.status == "succeeded", job.errors
    assert sorted(Product.objects.values_list("name", flat=True)) == sorted(formulas)  # stored as given
    for n in range(len(formulas)):
        placed = order_services.order_place(
            user=user,
            lines=[order_services.OrderLineRequest(f"F{n}", 1)],
            shipping_address=ADDRESS,
            render=render_order,
            idempotency_key=f"formula-{n}",
            fingerprint=f"formula-{n}",
        )
        order_services.order_pay(order_id=Order.objects.get(number=placed.body["number"]).pk)

    report = jobs.sales_report_generate(day=date.today())

    cells = [cell for row in csv.reader(io.StringIO(report.csv)) for cell in row]
    names = [cell for cell in cells if cell.lstrip("'") in formulas]
    assert sorted(name[1:] for name in names) == sorted(formulas)
    assert all(name.startswith("'") for name in names)
    assert not any(cell[:1] in "=+-@" and cell for cell in cells if cell not in ("",)), cells


# --- oversized and malformed requests over the wire ----------------------------------------------------


@pytest.fixture(scope="module")
def module_gunicorn(django_db_setup, django_db_blocker, tmp_path_factory):
    """One gunicorn for the wire tests of this module (starting one per test costs seconds each);
    it only needs the test database to exist, each test brings its own rows."""
    with live_gunicorn(tmp_path_factory.mktemp("gunicorn"), workers=1, threads=4) as server:
        yield server


@pytest.fixture
def live(module_gunicorn):
    """The module's gunicorn, with this test's data (flushed after it) and a fresh log window."""
    WarehouseFactory(code="MAIN")
    ProductFactory(sku="MUG")
    staff = UserFactory(is_staff=True)
    _, staff_key = api_key_create(user=staff, scopes=["read", "write", "staff"])
    _, customer_key = api_key_create(user=UserFactory())
    module_gunicorn.forget_log()
    return module_gunicorn, staff_key, customer_key


def raw_request(server, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    """Send bytes as they are (httpx would refuse to send some of these) and read the status line."""
    host, port = server.base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head + body)
        answer = b""
        while chunk := sock.recv(65536):  # each request says Connection: close, or gunicorn closes
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    return status, answer


def assert_envelope(response: httpx.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.text[:500]
    error = response.json()["error"]
    assert set(error) >= {"code", "detail", "fields"}
    if code is not None:
        assert error["code"] == code


def test_an_oversized_body_is_413_with_the_envelope(live):
    server, _, customer_key = live
    body = json.dumps({**order_body(("MUG", 1)), "reference": "x" * 3_000_000})
    response = httpx.post(
        server.url("/api/v1/orders"),
        content=body,
        headers={**bearer(customer_key), "Idempotency-Key": "big", "Content-Type": "application/json"},
        timeout=30,
    )
    assert_envelope(response, 413, "request_too_large")


def test_the_reviewers_order_of_866000_empty_lines_is_a_small_400_over_the_wire(live):
    # The outside review's reproduction as it was sent: 2.6 MB, just under the body limit.
    server, _, customer_key = live
    body = json.dumps({"lines": [{}] * 866_000, "shipping_address": ADDRESS}, separators=(",", ":"))
    response = httpx.post(
        server.url("/api/v1/orders"),
        content=body,
        headers={**bearer(customer_key), "Idempotency-Key": "review-866000", "Content-Type": "application/json"},
        timeout=60,
    )
    assert_envelope(response, 400, "invalid")
    assert len(response.content) < SMALL_BODY
    assert response.json()["error"]["fields"] == {"lines": ["An order has at most 50 lines."]}
    assert not server.tracebacks()


def test_a_claimed_length_over_the_upload_limit_is_refused_before_the_body_is_sent(live):
    server, staff_key, _ = live
    head = (
        "POST /api/v1/imports HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {staff_key}\r\nContent-Type: multipart/form-data; boundary=x\r\n"
        "Content-Length: 900000000\r\nConnection: close\r\n\r\n"
    ).encode()
    status, answer = raw_request(server, head)
    assert status == 413
    assert b"request_too_large" in answer


def test_a_chunked_body_without_a_length_is_read_as_empty_and_refused_with_400(live):
    server, _, customer_key = live
    body = json.dumps(order_body(("MUG", 1))).encode()
    head = (
        "POST /api/v1/orders HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {customer_key}\r\nIdempotency-Key: chunked\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    ).encode()
    status, answer = raw_request(server, head, b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
    # Django reads a body by its Content-Length only, so a chunked one arrives empty: 400, with
    # the missing fields named (a proxy in front would normally have de-chunked it).
    assert status == 400
    assert b'"lines":["This field is required."]' in answer
    assert not server.tracebacks()


@pytest.mark.parametrize(
    ("what", "head"),
    [
        ("a header over gunicorn's field limit", b"X-Big: " + b"a" * 10_000 + b"\r\n"),
        ("more headers than gunicorn allows", b"".join(b"X-H%d: v\r\n" % n for n in range(150))),
    ],
)
def test_oversized_headers_are_refused_by_gunicorn_with_400(live, what, head):
    server, _, _ = live
    request = b"GET /api/v1/products HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" + head + b"\r\n"
    status, _ = raw_request(server, request)
    assert status in (400, 431), what
    assert httpx.get(server.url("/healthz"), timeout=5).status_code == 200  # the worker lives on


def test_a_request_line_over_gunicorns_limit_is_refused(live):
    server, _, _ = live
    request = b"GET /api/v1/products?search=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    status, _ = raw_request(server, request)
    assert status in (400, 414)


def test_a_huge_bearer_key_within_the_header_limit_is_401(live):
    server, _, _ = live
    response = httpx.get(server.url("/api/v1/orders"), headers={"Authorization": "Bearer " + "k" * 7000}, timeout=10)
    assert_envelope(response, 401)


@pytest.mark.parametrize(
    ("what", "content", "content_type", "status"),
    [
        ("invalid JSON", b'{"lines": [', "application/json", 400),
        ("JSON that is not UTF-8", b'{"reference": "\xff\xfe"}', "application/json", 400),
        ("a JSON array", b"[1, 2, 3]", "application/json", 400),
        ("a JSON string", b'"lines"', "application/json", 400),
        ("deeply nested JSON", b"[" * 100_000 + b"]" * 100_000, "application/json", 400),
        (
            "a huge JSON number",
            b'{"lines": [{"sku": "MUG", "quantity": 1' + b"0" * 5000 + b"}]}",
            "application/json",
            400,
        ),
        (
            "NUL in a string",
            json.dumps({**order_body(("MUG", 1)), "reference": "a\x00b"}).encode(),
            "application/json",
            400,
        ),
        ("a form body", b"lines=1", "application/x-www-form-urlencoded", 415),
        ("no content type", b"{}", "", 415),
    ],
)
def test_malformed_bodies_are_clean_4xx_with_the_envelope(live, what, content, content_type, status):
    server, _, customer_key = live
    headers = {**bearer(customer_key), "Idempotency-Key": f"bad-{abs(hash(what))}"}
    if content_type:
        headers["Content-Type"] = content_type
    response = httpx.post(server.url("/api/v1/orders"), content=content, headers=headers, timeout=30)
    assert_envelope(response, status)
    assert not server.tracebacks(), what


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/products/a%00b"),
        ("PATCH", "/api/v1/products/a%00b"),
        ("GET", "/api/v1/orders/a%00b"),
        ("POST", "/api/v1/orders/a%00b/pay"),
        ("DELETE", "/api/v1/auth/keys/a%00b"),
        ("GET", "/api/v1/products/%ff%fe"),
        ("GET", "/api/v1/orders/%C3%A9%0A"),
    ],
)
def test_nul_and_odd_bytes_in_a_path_are_404_with_the_envelope(live, method, path):
    server, staff_key, _ = live
    headers = {**bearer(staff_key), "If-Match": '"1"', "Content-Type": "application/json"}
    response = httpx.request(method, server.url(path), headers=headers, content=b"{}", timeout=10)
    assert_envelope(response, 404, "not_found")
    assert not server.tracebacks(), path


@pytest.mark.parametrize(
    "query",
    [
        "/api/v1/products?search=a%00b",
        "/api/v1/products?updated_since=a%00b",
        "/api/v1/orders?user=a%00b%40example.com",
        "/api/v1/orders?status=%00",
        "/api/v1/stock?sku=a%00b",
        "/api/v1/products?cursor=%00",
        "/api/v1/products?page_size=99999999999999999999",
        "/api/v1/auth/keys?page_size=-1",
    ],
)
def test_nul_and_odd_values_in_a_query_are_answered_without_a_server_error(live, query):
    server, staff_key, _ = live
    response = httpx.get(server.url(query), headers=bearer(staff_key), timeout=10)
    assert response.status_code in (200, 400, 404), (query, response.status_code, response.text[:300])
    if response.status_code != 200:
        assert response.json()["error"]["code"]
    assert not server.tracebacks(), query


@pytest.mark.parametrize(
    ("what", "files", "data"),
    [
        ("no file", {"other": (None, "x")}, None),
        ("the file as a plain field", {"file": (None, "sku,warehouse,on_hand\n")}, None),
        ("two files", [("file", ("a.csv", b"a")), ("file", ("b.csv", b"b"))], None),
    ],
)
def test_odd_import_uploads_are_400_or_accepted_never_500(live, what, files, data):
    server, staff_key, _ = live
    response = httpx.post(server.url("/api/v1/imports"), files=files, data=data, headers=bearer(staff_key), timeout=10)
    assert response.status_code in (202, 400), (what, response.text[:300])
    assert not server.tracebacks(), what


def test_a_broken_multipart_body_is_400(live):
    server, staff_key, _ = live
    response = httpx.post(
        server.url("/api/v1/imports"),
        content=b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n\r\nabc',
        headers={**bearer(staff_key), "Content-Type": "multipart/form-data; boundary=x"},
        timeout=10,
    )
    assert_envelope(response, 400)
    assert not server.tracebacks()


# --- oversized lists: the work is bounded by the limit, not by the input -----------------------------
#
# Each list a client can send is counted against its limit before any item of it is looked at.
# The tests send 100,000 items and count the calls of the real per-item validator (a counting
# wrapper around it, the code path unchanged) and measure the answer: 400, a small body, and no
# more per-item work than the limit allows. No clocks.

HUGE = 100_000
SMALL_BODY = 4096  # bytes: an error envelope naming the limit, whatever the input's size


class Calls:
    """Wraps a function or method so each call is counted, then runs it unchanged."""

    def __init__(self, monkeypatch, owner, name: str):
        self.count = 0
        real = getattr(owner, name)

        def counted(*args, **kwargs):
            self.count += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, counted)


@pytest.fixture
def api(db):
    from rest_framework.test import APIClient

    WarehouseFactory(code="MAIN")
    ProductFactory(sku="MUG")
    stock.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=10)
    _, key = api_key_create(user=UserFactory())
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def _post_json(client, path: str, body, **headers):
    content = json.dumps(body, separators=(",", ":"))
    return client.generic("POST", path, content, content_type="application/json", **headers)


def _assert_small_400(response) -> dict:
    assert response.status_code == 400, response.content[:500]
    assert len(response.content) < SMALL_BODY, len(response.content)
    return response.json()["error"]


@pytest.mark.parametrize(
    ("what", "line", "count"),
    [
        ("empty lines", {}, HUGE),
        ("well-formed lines", {"sku": "MUG", "quantity": 1}, 80_000),  # 80,000 of them fit the body limit
        ("bad lines", {"sku": "", "quantity": "x"}, 80_000),
    ],
)
def test_an_order_with_a_huge_list_of_lines_is_refused_before_any_line_is_validated(
    api, monkeypatch, settings, what, line, count
):
    from orders.serializers import LineRequestSerializer

    validated = Calls(monkeypatch, LineRequestSerializer, "run_validation")
    body = {**order_body(), "lines": [line] * count}

    response = _post_json(api, "/api/v1/orders", body, HTTP_IDEMPOTENCY_KEY=f"huge-{count}-{len(line)}")

    error = _assert_small_400(response)
    assert error["fields"].get("lines") == [f"An order has at most {settings.ORDER_MAX_LINES} lines."]
    assert validated.count == 0, what
    assert not Order.objects.exists()
    assert StockLevel.objects.get().reserved == 0


def test_an_order_at_the_limit_still_validates_each_line_once(api, monkeypatch, settings):
    from orders.serializers import LineRequestSerializer

    validated = Calls(monkeypatch, LineRequestSerializer, "run_validation")
    lines = [{"sku": f"S{n}", "quantity": 0} for n in range(settings.ORDER_MAX_LINES)]  # bad: the serializer speaks

    response = _post_json(api, "/api/v1/orders", {**order_body(), "lines": lines}, HTTP_IDEMPOTENCY_KEY="at-limit")

    assert response.status_code == 400
    assert validated.count == settings.ORDER_MAX_LINES


def test_a_token_request_with_a_huge_list_of_scopes_is_refused_before_any_scope_is_checked(db, monkeypatch):
    from rest_framework.fields import ChoiceField
    from rest_framework.test import APIClient

    user = UserFactory()
    checked = Calls(monkeypatch, ChoiceField, "to_internal_value")
    body = {"email": user.email, "password": "whatever it is", "scopes": ["nope"] * HUGE}

    response = _post_json(APIClient(), "/api/v1/auth/tokens", body)

    error = _assert_small_400(response)
    assert "scopes" in error["fields"]
    assert checked.count == 0


def test_an_import_with_a_huge_number_of_bad_rows_keeps_a_bounded_error_list(media, settings):
    from rest_framework.test import APIClient

    settings.IMPORT_CHUNK_ROWS = 5000
    WarehouseFactory(code="MAIN")
    staff = UserFactory(is_staff=True)
    _, key = api_key_create(user=staff, scopes=["read", "write", "staff"])
    data = b"sku,warehouse,on_hand\n" + b"A1,NOWHERE,1\n" * HUGE

    job = run_import(data, actor=staff)

    assert job.rows_failed == HUGE
    assert len(job.errors) == imports.MAX_ERRORS
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    status = client.get(f"/api/v1/imports/{job.pk}")
    assert status.status_code == 200
    assert len(status.json()["errors"]) == imports.MAX_ERRORS
    assert len(status.content) < 200 * imports.MAX_ERRORS  # each message is short, and there are at most so many


def test_a_session_cart_with_a_huge_number_of_lines_is_read_only_up_to_the_limit(db, monkeypatch, settings):
    from django.test import Client

    from orders import cart

    ProductFactory(sku="MUG")
    client = Client()
    client.get("/cart/")
    session = client.session
    session[cart.SESSION_KEY] = {f"S{n}": 1 for n in range(HUGE)}  # a session row written by hand
    session.save()
    checked = Calls(monkeypatch, cart, "is_sku")

    response = client.get("/cart/")

    assert response.status_code == 200
    assert checked.count <= 2 * settings.ORDER_MAX_LINES  # the page and the header's count, each bounded
    assert len(client.session[cart.SESSION_KEY]) <= settings.ORDER_MAX_LINES


@pytest.mark.parametrize("count", [51, HUGE])
def test_a_checkout_basket_over_the_line_limit_is_refused_before_any_line_is_read(admin, monkeypatch, settings, count):
    from orders import forms

    # Only the server signs baskets, so this is a page rendered before ORDER_MAX_LINES was lowered.
    basket = forms.sign_basket([(f"S{n}", 1) for n in range(count)])
    checked = Calls(monkeypatch, forms, "is_sku")
    data = {**ADDRESS, "line2": "", "idempotency_key": str(uuid.uuid4()), "basket": basket}

    response = admin.post("/checkout/", data)

    assert response.status_code in (302, 400)  # refused as out of date (an empty cart goes back to it)
    assert checked.count == 0
    assert not Order.objects.exists()


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/cart/add/", "sku"),
        ("/cart/set/", "quantity"),
        ("/checkout/", "basket"),
        ("/accounts/keys/", "scopes"),
        ("/admin/orders/order/", "_selected_action"),
    ],
)
def test_a_form_post_with_a_huge_number_of_fields_is_400_before_any_view_runs(admin, path, field):
    body = "&".join(f"{field}={n}" for n in range(HUGE))

    response = admin.generic("POST", path, body, content_type="application/x-www-form-urlencoded")

    assert response.status_code == 400
    assert len(response.content) < 50_000  # the 400 page, not an echo of the fields


def _many_orders(count: int, *, expired: bool = True) -> None:
    from django.utils import timezone

    user = UserFactory()
    when = timezone.now() - timedelta(minutes=1 if expired else -60)
    Order.objects.bulk_create(
        [
            Order(
                number=f"SR-T-{n:06d}",
                user=user,
                total=0,
                currency="EUR",
                shipping_name="A",
                shipping_line1="B",
                shipping_city="C",
                shipping_postal_code="D",
                shipping_country="GB",
                expires_at=when,
            )
            for n in range(count)
        ],
        batch_size=5000,
    )


@pytest.mark.parametrize("action", ["release_expired_selected", "bulk_fulfil_selected", "cancel_orders"])
def test_an_admin_action_over_more_orders_than_its_limit_is_refused_with_a_message(admin, monkeypatch, action):
    from orders.jobs import BULK_FULFIL_MAX_ORDERS
    from orders.models import BulkFulfilment

    _many_orders(BULK_FULFIL_MAX_ORDERS + 1)
    work = [
        Calls(monkeypatch, jobs, "expire_reservations"),
        Calls(monkeypatch, jobs, "bulk_fulfilment_request"),
        Calls(monkeypatch, order_services, "order_cancel"),
    ]
    admin.raise_request_exception = False
    first = Order.objects.order_by("pk").values_list("pk", flat=True).first()

    response = admin.post(
        "/admin/orders/order/",
        {"action": action, "select_across": "1", "index": "0", "_selected_action": [str(first)]},
        follow=True,
    )

    assert response.status_code == 200, response.status_code
    text = response.content.decode()
    assert "Select at most" in text and "Nothing was done" in text, text[:2000]
    assert [calls.count for calls in work] == [0, 0, 0]
    assert not Order.objects.exclude(status=Order.Status.RESERVED).exists()
    assert not BulkFulfilment.objects.exists()

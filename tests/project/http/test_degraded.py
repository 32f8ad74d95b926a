"""PostgreSQL unreachable (a TCP proxy the test owns is cut): stale catalogue, 503 writes, recovery."""

import json
import subprocess
import sys
import uuid

import httpx
import pytest
from django.conf import settings

from inventory import services as stock
from tests.factories import ProductFactory, UserFactory, WarehouseFactory
from tests.orders.conftest import order_body
from tests.support import ROOT, TcpProxy, gunicorn_server, subprocess_env, wait_for
from users.services import api_key_create

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def _database_url(port: int) -> str:
    db = settings.DATABASES["default"]
    return f"postgres://{db['USER']}@127.0.0.1:{port}/{db['NAME']}"


@pytest.fixture
def proxied_gunicorn(tmp_path):
    proxy = TcpProxy("127.0.0.1", int(settings.DATABASES["default"].get("PORT") or 5432)).start()
    try:
        with gunicorn_server(
            tmp_path,
            DATABASE_URL=_database_url(proxy.port),
            WEB_CONCURRENCY="1",
            GUNICORN_THREADS="4",
            DB_POOL_MIN_SIZE="1",
            DB_POOL_TIMEOUT="2",
            DB_CONNECT_TIMEOUT="2",
            CIRCUIT_FAILURE_THRESHOLD="2",
            CIRCUIT_COOLDOWN_SECONDS="1",
        ) as base:
            yield base, proxy
    finally:
        proxy.close()


def test_database_outage_serves_stale_catalogue_refuses_writes_and_recovers(proxied_gunicorn):
    base, proxy = proxied_gunicorn
    WarehouseFactory(code="MAIN")
    ProductFactory(sku="MUG", name="Blue mug")
    stock.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=5)
    _, key = api_key_create(user=UserFactory())
    headers = {"Authorization": f"Bearer {key}"}

    warm_detail = httpx.get(f"{base}/api/v1/products/MUG", timeout=5)
    warm_list = httpx.get(f"{base}/api/v1/products", timeout=5)
    assert warm_detail.status_code == warm_list.status_code == 200
    assert "X-Stale" not in warm_detail.headers
    # A change after the warm-up that only the database knows of (availability is read from it).
    stock.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=1)

    proxy.cut()

    detail = httpx.get(f"{base}/api/v1/products/MUG", timeout=10)
    listing = httpx.get(f"{base}/api/v1/products", timeout=10)
    assert detail.status_code == 200, detail.text
    assert detail.headers["X-Stale"] == "true"
    assert detail.json()["available"] == 5  # the last value seen, not the one it could not read
    assert listing.status_code == 200
    assert listing.headers["X-Stale"] == "true"

    order = httpx.post(
        f"{base}/api/v1/orders",
        json=order_body(("MUG", 1)),
        headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
        timeout=10,
    )
    assert order.status_code == 503
    assert order.headers["Retry-After"]
    assert order.json()["error"]["code"] == "database_unavailable"
    never_cached = httpx.get(f"{base}/api/v1/products/NOT-CACHED", timeout=10)
    assert never_cached.status_code == 503
    ready = httpx.get(f"{base}/readyz", timeout=10)
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"]["ok"] is False

    proxy.restore()

    def fresh():
        response = httpx.get(f"{base}/api/v1/products/MUG", timeout=10)
        return response.status_code == 200 and "X-Stale" not in response.headers and response.json()["available"] == 6

    wait_for(fresh, timeout=30, interval=0.5, what="fresh reads after the database came back")
    placed = httpx.post(
        f"{base}/api/v1/orders",
        json=order_body(("MUG", 1)),
        headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
        timeout=10,
    )
    assert placed.status_code == 201, placed.text


REPLICA_SCRIPT = """
import json
import django
django.setup()
from django.db import connections, transaction
from django.test.utils import CaptureQueriesContext
from inventory.models import Warehouse
from inventory.selectors import catalogue_list
from orders.models import Order

def selects(capture):
    return sum(q["sql"].startswith("SELECT") for q in capture.captured_queries)

counts = {}
for name, read in [
    ("outside", lambda: list(catalogue_list())),
    ("inside", lambda: transaction.atomic()(lambda: list(catalogue_list()))()),
    ("orders", lambda: list(Order.objects.all())),
    # Last: once something was written, reads stay on the primary (a request starts without writes).
    ("after_write", lambda: (Warehouse.objects.filter(pk=-1).update(name="x"), list(catalogue_list()))),
]:
    with CaptureQueriesContext(connections["replica"]) as replica:
        with CaptureQueriesContext(connections["default"]) as primary:
            read()
    counts[name] = (selects(replica), selects(primary))
print(json.dumps(counts))
"""


def test_catalogue_reads_go_to_the_replica_outside_transactions_until_a_write():
    url = _database_url(int(settings.DATABASES["default"].get("PORT") or 5432))
    result = subprocess.run(
        [sys.executable, "-c", REPLICA_SCRIPT],
        cwd=ROOT,
        env=subprocess_env(
            DJANGO_SETTINGS_MODULE="project.settings.test", DATABASE_URL=url, REPLICA_DATABASE_URL=url, DB_POOL="0"
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    counts = json.loads(result.stdout.strip().splitlines()[-1])
    assert counts["outside"] == [1, 0]  # catalogue read on the replica
    assert counts["inside"] == [0, 1]  # inside a transaction: the primary
    assert counts["orders"] == [0, 1]  # not a catalogue model: the primary
    assert counts["after_write"] == [0, 1]  # after a write: the primary


# The replica as a real hot standby held behind (lag, a client's own writes, the cache, a replica
# gone): tests/scale/replica.

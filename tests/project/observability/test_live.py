"""Metrics and logs of real processes: gunicorn with two workers, the outbox relay and a prefork
Celery worker, all on this test's database. Known actions, then exact counts in the scrapes."""

import json
import re
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import yaml
from django.conf import settings
from django.utils import timezone

from inventory import services as stock
from orders.models import Order
from project.celery import app
from project.outbox.models import OutboxMessage
from tests.factories import ProductFactory, UserFactory, WarehouseFactory
from tests.support import ROOT, free_port, stop_process, subprocess_env, wait_for
from users.services import api_key_create

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

DASHBOARD = ROOT / "ops" / "grafana" / "stockroom.json"
ALERTS = ROOT / "ops" / "prometheus" / "alerts.yml"
ADDRESS = {
    "name": "Ada Lovelace",
    "line1": "12 Analytical St",
    "city": "London",
    "postal_code": "N1 9GU",
    "country": "GB",
}
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def test_database_url() -> str:
    db = settings.DATABASES["default"]
    credentials = quote(db["USER"] or "")
    if db.get("PASSWORD"):
        credentials += ":" + quote(db["PASSWORD"])
    return f"postgres://{credentials}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


test_database_url.__test__ = False  # a helper, not a test


def parse(text: str) -> list[tuple[str, dict, float]]:
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        if match:
            labels = dict(LABEL.findall(match.group(2) or ""))
            samples.append((match.group(1), labels, float(match.group(3))))
    return samples


def value(samples, name: str, **labels) -> float:
    return sum(v for n, got, v in samples if n == name and all(got.get(k) == want for k, want in labels.items()))


def scrape(url: str) -> list[tuple[str, dict, float]]:
    response = httpx.get(url, timeout=5)
    assert response.status_code == 200, response.text[:300]
    return parse(response.text)


def json_lines(path: Path) -> list[dict]:
    lines = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
    return lines


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


class Stack:
    """gunicorn (2 workers), the relay and a prefork worker; each logs to a file of its own."""

    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path
        self.web_port, self.worker_port, self.relay_port = free_port(), free_port(), free_port()
        self.web = f"http://127.0.0.1:{self.web_port}"
        self.worker_metrics = f"http://127.0.0.1:{self.worker_port}/metrics"
        self.relay_metrics = f"http://127.0.0.1:{self.relay_port}/metrics"
        self.procs: list[subprocess.Popen] = []
        self.logs: dict[str, Path] = {}
        common = {
            "DJANGO_SETTINGS_MODULE": "project.settings.test",
            "DATABASE_URL": test_database_url(),
            "DB_POOL_MAX_SIZE": "4",
            "LOG_LEVEL": "INFO",
        }
        self.env = {name: dict(common) for name in ("web", "relay", "worker")}
        self.env["web"] |= {
            "GUNICORN_BIND": f"127.0.0.1:{self.web_port}",
            "WEB_CONCURRENCY": "2",
            "GUNICORN_THREADS": "2",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus-web"),
            "DB_POOL_STATS_SECONDS": "0",  # copy the pool's statistics at every request's end
        }
        self.env["relay"] |= {
            "DB_POOL": "0",
            "RELAY_METRICS_PORT": str(self.relay_port),
            "OUTBOX_BACKLOG_SECONDS": "0.2",
        }
        self.env["worker"] |= {
            "DB_POOL": "0",
            "WORKER_METRICS_PORT": str(self.worker_port),
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus-worker"),  # as bin/worker sets it
        }

    def _start(self, name: str, argv: list[str]) -> None:
        env = subprocess_env(**self.env[name])
        if "PROMETHEUS_MULTIPROC_DIR" not in self.env[name]:
            env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        if "PROMETHEUS_MULTIPROC_DIR" in self.env[name]:
            Path(self.env[name]["PROMETHEUS_MULTIPROC_DIR"]).mkdir(exist_ok=True)  # as bin/worker does
        log = self.tmp / f"{name}.log"
        self.logs[name] = log
        with log.open("wb") as out:
            self.procs.append(subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT))

    def start(self) -> "Stack":
        self._start("web", [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"])
        self._start("relay", [sys.executable, "manage.py", "run_outbox_relay"])
        self._start(
            "worker",
            [
                *(sys.executable, "-m", "celery", "-A", "project.celery", "worker"),
                *("--pool", "prefork", "--concurrency", "2", "--loglevel", "INFO"),
                *("--hostname", f"obs-{uuid.uuid4().hex[:8]}@%h", "--without-heartbeat", "--without-gossip"),
            ],
        )
        for url, what in (
            (f"{self.web}/healthz", "gunicorn"),
            (self.relay_metrics, "the relay's metrics"),
            (self.worker_metrics, "the worker's metrics"),
        ):
            wait_for(lambda url=url: answers(url), timeout=60, what=what)
        return self

    def stop(self) -> None:
        for proc in reversed(self.procs):
            stop_process(proc, timeout=20)

    def log(self, name: str) -> list[dict]:
        return json_lines(self.logs[name])


@pytest.fixture
def stack(transactional_db, tmp_path):
    running = Stack(tmp_path)
    try:
        yield running.start()
    finally:
        running.stop()


@pytest.fixture
def shop_with_mugs(transactional_db):
    WarehouseFactory(code="MAIN", priority=1)
    ProductFactory(sku="MUG", price="12.50")
    stock.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=5)
    _, key = api_key_create(user=UserFactory(), scopes=["read", "write"])
    return key


def place(base: str, key: str, quantity: int, idempotency_key: str, request_id: str) -> httpx.Response:
    # A fresh connection per request, so both gunicorn workers take a share.
    with httpx.Client(timeout=15) as client:
        return client.post(
            f"{base}/api/v1/orders",
            json={"lines": [{"sku": "MUG", "quantity": quantity}], "shipping_address": ADDRESS},
            headers={"Authorization": f"Bearer {key}", "Idempotency-Key": idempotency_key, "X-Request-ID": request_id},
        )


def test_known_actions_give_exact_counts_and_one_request_id_from_web_to_task(shop_with_mugs, stack):
    key = shop_with_mugs
    first = place(stack.web, key, 1, "obs-k1", "obs-trace-1")
    second = place(stack.web, key, 1, "obs-k2", "obs-trace-2")
    third = place(stack.web, key, 1, "obs-k3", "obs-trace-3")
    short = place(stack.web, key, 10, "obs-k4", "obs-trace-4")
    replay = place(stack.web, key, 1, "obs-k1", "obs-trace-5")
    assert [r.status_code for r in (first, second, third, short, replay)] == [201, 201, 201, 409, 201]
    assert short.json()["error"]["code"] == "insufficient_stock"
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert httpx.get(f"{stack.web}/api/v1/products", timeout=5).status_code == 200  # the catalogue cache

    # One order runs out of time; the sweep (a real task on the worker) expires it.
    Order.objects.filter(number=second.json()["number"]).update(expires_at=timezone.now() - timedelta(minutes=1))
    app.send_task("orders.expire_reservations")

    # 3 "placed" emails and 1 "expired" email, each relayed once and done by the worker.
    wait_for(
        lambda: OutboxMessage.objects.filter(state="done").count() == 4,
        timeout=60,
        what="four outbox messages to be done",
    )
    worker = wait_for(
        lambda: (
            (s := scrape(stack.worker_metrics))
            and value(s, "stockroom_outbox_done_total", task="orders.send_order_email") >= 4
            and value(s, "stockroom_task_runs_total", task="orders.expire_reservations") >= 1
            and s
        ),
        timeout=30,
        what="the worker's task counters",
    )
    relay = wait_for(
        lambda: (
            (s := scrape(stack.relay_metrics))
            and value(s, "stockroom_outbox_messages", state="pending") == 0
            and value(s, "stockroom_outbox_messages", state="sent") == 0
            and value(s, "stockroom_outbox_messages", state="dead") == 0
            and s
        ),
        timeout=30,
        what="the relay to measure an empty backlog",
    )
    web = scrape(f"{stack.web}/metrics")

    placed = {o: value(web, "stockroom_orders_placed_total", outcome=o) for o in ("created", "replayed")}
    placed |= {o: value(web, "stockroom_orders_placed_total", outcome=o) for o in ("insufficient_stock", "conflict")}
    placed |= {o: value(web, "stockroom_orders_placed_total", outcome=o) for o in ("invalid", "lock_timeout", "error")}
    assert placed == {
        "created": 3,
        "replayed": 1,
        "insufficient_stock": 1,
        "conflict": 0,
        "invalid": 0,
        "lock_timeout": 0,
        "error": 0,
    }
    assert value(web, "stockroom_order_placement_seconds_count") == 5
    assert value(web, "stockroom_stock_changes_total", reason="reservation") == 3
    # Each placement's locking statement (the reservation UPDATE, or the one-round-trip SQL function).
    assert value(web, "stockroom_lock_wait_seconds_count") >= 4
    assert value(web, "stockroom_db_pool_requests_total", alias="default") > 0
    assert value(web, "stockroom_db_pool_max", alias="default") > 0

    # The emails go in groups (one task run may send several): counted per email and per run.
    assert value(worker, "stockroom_outbox_done_total", task="orders.send_order_email") == 4
    assert value(worker, "stockroom_emails_sent_total") == 4
    email_runs = value(worker, "stockroom_task_runs_total", task="orders.send_order_email", state="success")
    assert 1 <= email_runs <= 4
    assert value(worker, "stockroom_task_runs_total", task="orders.expire_reservations", state="success") == 1
    assert value(worker, "stockroom_task_runs_total") == email_runs + 1
    assert value(worker, "stockroom_task_failures_total") == 0
    assert value(worker, "stockroom_task_duration_seconds_count", task="orders.send_order_email") == email_runs
    assert value(worker, "stockroom_expired_reservations_total") == 1
    assert value(worker, "stockroom_stock_changes_total", reason="expiry") == 1

    assert value(relay, "stockroom_outbox_published_total", task="orders.send_order_email") == 4
    assert value(relay, "stockroom_outbox_published_total") == 4
    assert value(relay, "stockroom_outbox_backlog_measured_timestamp_seconds") > 0

    # The request id of the first order: in the web's log line and in its email task's log line.
    order_id = Order.objects.get(number=first.json()["number"]).pk
    web_lines = [line for line in stack.log("web") if line.get("request_id") == "obs-trace-1"]
    assert any(line["logger"] == "stockroom.orders.placement" and line["outcome"] == "created" for line in web_lines)
    task_line = wait_for(
        lambda: next(
            (
                line
                for line in stack.log("worker")
                if line.get("logger") == "stockroom.orders.tasks" and line.get("order_id") == order_id
            ),
            None,
        ),
        timeout=10,
        what="the email task's log line",
    )
    assert task_line["request_id"] == "obs-trace-1"
    assert task_line["kind"] == "placed"

    # Every metric the Grafana dashboard plots, and every Stockroom metric an alert watches, is
    # in one of the three scrapes.
    scraped = {name for samples in (web, worker, relay) for name, _, _ in samples}
    missing = sorted(dashboard_metrics() - scraped)
    assert not missing, missing
    missing = sorted({name for name in alert_metrics() if name.startswith("stockroom_")} - scraped)
    assert not missing, missing


def dashboard_metrics() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", []) if target.get("expr")
    ]
    names = {name for expr in exprs for name in re.findall(r"\b((?:stockroom|django)_[a-zA-Z0-9_]+)", expr)}
    assert len(names) > 30, names  # the parse found the dashboard's metrics
    return names


def alert_metrics() -> set[str]:
    rules = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
    return {name for rule in rules for name in re.findall(r"\b((?:stockroom|django)_[a-zA-Z0-9_]+)", rule["expr"])}


def test_no_scrape_touches_the_database_when_it_is_down(tmp_path):
    """Web and relay with an unreachable database still answer their scrapes at once."""
    from tests.support import closed_port

    running = Stack(tmp_path)
    dead_db = f"postgres://postgres@127.0.0.1:{closed_port()}/stockroom"
    for name in ("web", "relay", "worker"):
        running.env[name]["DATABASE_URL"] = dead_db
    try:
        running.start()
        for url in (f"{running.web}/metrics", running.relay_metrics, running.worker_metrics):
            scrape(url)
        relay = wait_for(
            lambda: (
                (s := scrape(running.relay_metrics))
                and value(s, "stockroom_outbox_backlog_measure_failures_total") >= 1
                and s
            ),
            timeout=20,
            what="a failed backlog measurement",
        )
        # Never measured: no backlog series at all rather than a reassuring zero.
        assert not any(name == "stockroom_outbox_messages" for name, _, _ in relay)
    finally:
        running.stop()

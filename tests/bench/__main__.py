"""`make bench`: Stockroom under load, against ceilings measured in the same run.

Starts gunicorn with the production profile (behind `X-Forwarded-Proto: https`, so the SSL
redirect stays on and does not interfere) on a fresh benchmark database, drives it with wrk and
Lua scripts from a separate process, warms up, takes the median of three runs, and prints one
table: requests/s, p50, p99, errors, conflicts, ratio to the full-stack ceiling, invariant check.
Results are also written as JSON and Markdown under bench-results/.

    python -m tests.bench                 # everything (a few minutes)
    python -m tests.bench --smoke         # one second of two scenarios (make test runs this)
    python -m tests.bench --only orders_uniform,orders_hot --duration 5
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import psutil
import psycopg
from psycopg import sql

from tests.bench import bulk_set, mixed, placement_db, two_nodes, whole_shop

ROOT = Path(__file__).resolve().parents[2]
LUA_DIR = Path(__file__).resolve().parent / "lua"
RESULTS_DIR = ROOT / "bench-results"
# Overridable so the smoke run inside `make test` never touches a full run's database or Redis.
BENCH_DB = os.environ.get("BENCH_DATABASE", "stockroom_bench")
FLOOR_DB = f"{BENCH_DB}_floor"
FLOORS_DIR = Path(__file__).resolve().parent / "floors"
BENCH_REDIS_DB = int(os.environ.get("BENCH_REDIS_DB", "12"))  # the broker uses the next number
BENCH_SECRET_KEY = secrets.token_urlsafe(64)
STRATEGIES = ("conditional", "row_lock", "optimistic", "global_lock")


@dataclass
class Scenario:
    name: str
    path: str
    script: str = "get.lua"
    server: str = "full"  # "full" (production stack) or "bare" (no middleware)
    env: dict = field(default_factory=dict)  # extra env for the Lua script
    strategy: str | None = None  # restart gunicorn with this STOCK_RESERVATION_STRATEGY
    writes: bool = False  # check invariants afterwards


@dataclass
class Result:
    scenario: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    conflicts: int
    ratio: float | None = None
    invariants: str = "-"
    runs: list = field(default_factory=list)


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- the benchmark database ----------------------------------------------------------------------


def bench_urls() -> tuple[str, str]:
    base = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/stockroom")
    database_url = base.rsplit("/", 1)[0] + f"/{BENCH_DB}"
    redis_base = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    redis_url = redis_base.rsplit("/", 1)[0] + f"/{BENCH_REDIS_DB}"
    return database_url, redis_url


def fresh_database(database_url: str) -> None:
    admin_url = database_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(BENCH_DB)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(BENCH_DB)))


SEED_SQL = """
INSERT INTO inventory_warehouse (code, name, priority, active, created_at)
VALUES ('MAIN', 'Main', 1, true, now()), ('EAST', 'East', 2, true, now());
INSERT INTO inventory_product (sku, name, description, price, active, low_stock_threshold,
                               low_stock_alerted, version, created_at, updated_at)
SELECT 'SKU-' || lpad(g::text, 5, '0'), 'Bench product ' || g, 'A product to benchmark with.',
       9.99, true, 0, false, 1, now(), now()
  FROM generate_series(1, %(products)s) g
UNION ALL SELECT 'HOT', 'The hot product', 'Everyone wants it.', 19.99, true, 0, false, 1, now(), now();
INSERT INTO inventory_stocklevel (product_id, warehouse_id, on_hand, reserved, version, updated_at)
SELECT p.id, w.id, %(units)s, 0, 2, now() FROM inventory_product p CROSS JOIN inventory_warehouse w
 WHERE w.code = 'MAIN' OR p.sku = 'HOT';
INSERT INTO inventory_stockmovement (level_id, delta_on_hand, delta_reserved, reason, reference, note, created_at)
SELECT id, on_hand, 0, 'receipt', 'bench-seed', '', now() FROM inventory_stocklevel;
"""


SEED_BATCH_SQL = """
INSERT INTO users_user (password, last_login, is_superuser, email, full_name, is_staff, is_active, date_joined)
VALUES ('!', NULL, false, 'bench@example.com', 'Bench', true, true, now());
INSERT INTO inventory_product (sku, name, description, price, active, low_stock_threshold,
                               low_stock_alerted, version, created_at, updated_at)
SELECT 'IMP-' || lpad(g::text, 7, '0'), 'Imported product ' || g, '', 4.99, true, 0, false, 1, now(), now()
  FROM generate_series(1, %(import_products)s) g;
INSERT INTO orders_order (number, user_id, status, total, currency, reference, shipping_name, shipping_line1,
                          shipping_line2, shipping_city, shipping_postal_code, shipping_country, version,
                          expires_at, created_at, updated_at)
SELECT 'EXP-' || g, u.id, 'reserved', 9.99, 'EUR', '', 'Bench', '1 Load St', '', 'Lyon', '69001', 'FR', 1,
       now() - interval '1 hour', now() - interval '2 hours', now() - interval '2 hours'
  FROM generate_series(1, %(expiry_orders)s) g
 CROSS JOIN (SELECT id FROM users_user WHERE email = 'bench@example.com') u;
INSERT INTO orders_orderline (order_id, product_id, quantity, unit_price)
SELECT o.id, p.id, 1, 9.99
  FROM orders_order o
  JOIN inventory_product p
    ON p.sku = 'SKU-' || lpad(((substring(o.number FROM 5)::int %% %(products)s) + 1)::text, 5, '0')
 WHERE o.number LIKE 'EXP-%%';
INSERT INTO orders_allocation (line_id, stock_level_id, quantity)
SELECT l.id, s.id, 1
  FROM orders_orderline l
  JOIN orders_order o ON o.id = l.order_id AND o.number LIKE 'EXP-%%'
  JOIN inventory_stocklevel s ON s.product_id = l.product_id
  JOIN inventory_warehouse w ON w.id = s.warehouse_id AND w.code = 'MAIN';
UPDATE inventory_stocklevel s SET reserved = s.reserved + a.units
  FROM (SELECT stock_level_id, sum(quantity) AS units FROM orders_allocation GROUP BY 1) a
 WHERE s.id = a.stock_level_id;
INSERT INTO inventory_stockmovement (level_id, delta_on_hand, delta_reserved, reason, reference, note, created_at)
SELECT al.stock_level_id, 0, al.quantity, 'reservation', o.number, '', now()
  FROM orders_allocation al JOIN orders_orderline l ON l.id = al.line_id JOIN orders_order o ON o.id = l.order_id
"""


def seed(database_url: str, redis_url: str, products: int, import_rows: int, expiry_orders: int) -> str:
    """Migrate the bench database, load the catalogue, the import's products and the expired
    reservations set-based (with their ledger), copy it for the psql floors, make a staff API key."""
    env = bench_env(database_url, redis_url, settings="project.settings.base")
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
    params = {
        "products": products,
        "units": 10_000_000,
        "import_products": import_rows // 2,
        "expiry_orders": expiry_orders,
    }
    with psycopg.connect(database_url, autocommit=True) as conn:
        for statement in filter(str.strip, (SEED_SQL + ";\n" + SEED_BATCH_SQL).split(";\n")):
            conn.execute(statement, params)
        conn.execute("ANALYZE")
    admin_url = database_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(FLOOR_DB)))
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(FLOOR_DB), sql.Identifier(BENCH_DB))
        )
    script = (
        "from users.models import User; from users.services import api_key_create;"
        "u = User.objects.get(email='bench@example.com');"
        "print(api_key_create(user=u, scopes=['read', 'write', 'staff'])[1])"
    )
    out = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip().splitlines()[-1]


def invariant_breaches(database_url: str) -> int:
    from tests.invariants import breaches_in  # needs Django set up, which the bench does late

    return breaches_in(database_url)


def logged_breaches(database_url: str, name: str, found: int = 0) -> int:
    """The invariant breaches after scenario `name` (plus `found`, those it counted itself), logged
    when there are any."""
    count = invariant_breaches(database_url) + found
    if count:
        log(f"{name}: invariants BROKEN ({count})")
    return count


# --- gunicorn ---------------------------------------------------------------------------------


def bench_env(database_url: str, redis_url: str, *, settings: str = "project.settings.production", **extra) -> dict:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE=settings,
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        REDIS_BROKER_DB=str(BENCH_REDIS_DB + 1),
        CACHE_KEY_PREFIX=f"stockroom-{BENCH_DB}",
        CELERY_QUEUE_PREFIX=f"stockroom-{BENCH_DB}",
        SECRET_KEY=BENCH_SECRET_KEY,  # one per run: it peppers the API key made at seeding
        ALLOWED_HOSTS="127.0.0.1,localhost",
        BENCH_ENDPOINTS="1",
        DEBUG="0",
        # The production profile refuses to start without a way into /metrics (project.observability.checks).
        METRICS_TOKEN=f"bench-metrics-{BENCH_SECRET_KEY[-16:]}",
        LOG_LEVEL="WARNING",
        # The limiter stays on; the benchmark's one client just gets a roomy budget.
        RATELIMIT_READ="100000000/60",
        RATELIMIT_WRITE="100000000/60",
    )
    env.update(extra)
    return env


class Gunicorn:
    def __init__(self, env: dict, tmp: Path):
        self.port = free_port()
        self.env = dict(
            env, GUNICORN_BIND=f"127.0.0.1:{self.port}", PROMETHEUS_MULTIPROC_DIR=str(tmp / f"prom-{self.port}")
        )
        self.proc: subprocess.Popen | None = None
        # Its log goes to a file: a pipe nobody reads fills up (64 KB of slow-query warnings under
        # lock contention) and then every thread that logs blocks for good.
        self.log_path = tmp / f"gunicorn-{self.port}.log"

    def __enter__(self) -> Gunicorn:
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"],
                cwd=ROOT,
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        import urllib.request

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {self.log_path.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1)
                return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("gunicorn did not start")

    def worker_peak_rss_mb(self) -> float:
        peak = 0
        for child in psutil.Process(self.proc.pid).children():
            try:
                with open(f"/proc/{child.pid}/status") as status:
                    for line in status:
                        if line.startswith("VmHWM:"):
                            peak = max(peak, int(line.split()[1]))
            except OSError:
                continue
        return peak / 1024

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


# --- wrk --------------------------------------------------------------------------------------


WRK_THREADS = 2


def wrk(port: int, scenario: Scenario, seconds: float, connections: int, extra_env: dict) -> dict:
    env = dict(
        os.environ,
        BENCH_LUA_DIR=str(LUA_DIR),
        BENCH_RUN_ID=secrets.token_hex(4),
        BENCH_WRK_THREADS=str(WRK_THREADS),
        **scenario.env,
        **extra_env,
    )
    command = [
        "wrk", f"-t{WRK_THREADS}", f"-c{connections}", f"-d{max(seconds, 1):.0f}s", "--latency",
        "-s", str(LUA_DIR / scenario.script), f"http://127.0.0.1:{port}{scenario.path}",
    ]  # fmt: skip
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=seconds + 60)
    line = next((row for row in out.stdout.splitlines() if row.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result: {out.stdout[-1000:]} {out.stderr[-1000:]}")
    return json.loads(line.removeprefix("BENCH_JSON "))


def run_once(port: int, scenario: Scenario, args, extra_env: dict, connections: int | None = None) -> dict:
    raw = wrk(port, scenario, args.duration, connections or args.connections, extra_env)
    statuses = {int(k): v for k, v in raw["statuses"].items()}
    ok = sum(n for status, n in statuses.items() if 200 <= status < 300)
    conflicts = statuses.get(409, 0)
    errors = raw["socket_errors"] + sum(n for status, n in statuses.items() if status >= 300 and status != 409)
    if not statuses:  # not one answer in the whole run: every connection's request failed
        log(f"{scenario.name}: no response at all in {args.duration}s")
        errors += args.connections
    return {"rps": ok / raw["seconds"], "p50_ms": raw["p50_ms"], "p99_ms": raw["p99_ms"], "errors": errors,
            "conflicts": conflicts, "statuses": statuses}  # fmt: skip


def summarise(name: str, runs: list[dict]) -> Result:
    middle = sorted(runs, key=lambda run: run["rps"])[len(runs) // 2]
    return Result(
        scenario=name,
        rps=middle["rps"],
        p50_ms=middle["p50_ms"],
        p99_ms=middle["p99_ms"],
        errors=sum(run["errors"] for run in runs),
        conflicts=sum(run["conflicts"] for run in runs),
        runs=runs,
    )


def measure_group(port: int, members: list[Scenario], args, extra_env: dict) -> dict[str, list[dict]]:
    """Every scenario on one server: each warmed up, then run in rounds (one run of each scenario per
    round), so that a slow spell of the shared host falls on all of them alike, not on one."""
    for scenario in members:
        if args.warmup:
            wrk(port, scenario, args.warmup, args.connections, extra_env)
    runs: dict[str, list[dict]] = {scenario.name: [] for scenario in members}
    for round_number in range(1, args.runs + 1):
        log(f"round {round_number} of {args.runs}: {', '.join(runs)} ({args.duration}s each)")
        for scenario in members:
            runs[scenario.name].append(run_once(port, scenario, args, extra_env))
    return runs


def scenarios(products: int) -> list[Scenario]:
    listed = [
        Scenario("ceiling_bare", "/_bench/trivial", server="bare"),
        Scenario("ceiling_full", "/_bench/trivial"),
        Scenario("catalogue_cached", "/api/v1/products?page_size=25"),
        Scenario("catalogue_cold", "/api/v1/products?page_size=25", script="cold.lua"),
        Scenario("product_detail", "/api/v1/products/SKU-00042"),
        Scenario(
            "orders_uniform", "/api/v1/orders", script="orders.lua", env={"BENCH_SKUS": str(products)}, writes=True
        ),
        Scenario("orders_hot", "/api/v1/orders", script="orders.lua", env={"BENCH_SKUS": "HOT"}, writes=True),
    ]
    for strategy in STRATEGIES:
        listed.append(
            Scenario(f"hot_{strategy}", "/api/v1/orders", script="orders.lua", env={"BENCH_SKUS": "HOT"},
                     strategy=strategy, writes=True)
        )  # fmt: skip
    return listed


def table(results: list[Result], meta: dict) -> str:
    lines = [
        f"Stockroom benchmark, {meta['date']}, {meta['cores']} cores, {meta['duration']}s x {meta['runs']} runs "
        f"(median), {meta['connections']} connections",
    ]
    if not results:  # only the scenarios that report on their own (--only)
        return lines[0]
    lines += [
        "",
        "| scenario | req/s | p50 ms | p99 ms | errors | conflicts | ratio to ceiling | invariants |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        ratio = "-" if r.ratio is None else f"{r.ratio:.3f}"
        figures = [f"{r.rps:,.0f}", f"{r.p50_ms:.1f}", f"{r.p99_ms:.1f}", r.errors, r.conflicts]
        cells = [r.scenario, *figures, ratio, r.invariants]
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    lines.append("")
    # The median hides how far runs of one scenario lie apart; on a shared machine that is the
    # first thing to check before trusting a ratio.
    lines.append("req/s of each run: " + "; ".join(
        f"{r.scenario} " + " / ".join(f"{run['rps']:,.0f}" for run in r.runs) for r in results
    ))  # fmt: skip
    lines.append(f"gunicorn worker peak RSS: {meta['web_peak_rss_mb']:.0f} MB")
    for key, value in meta.get("ratios", {}).items():
        lines.append(f"{key}: {value:.3f}")
    return "\n".join(lines)


# --- batch jobs against their psql floors -----------------------------------------------------------


@dataclass
class BatchResult:
    scenario: str
    seconds: float
    floor_seconds: float
    peak_rss_mb: float | None
    invariants: str = "-"

    @property
    def ratio(self) -> float:
        return self.seconds / self.floor_seconds if self.floor_seconds else float("nan")


def _psql(database_url: str, script: Path, *, stdin: Path | None = None) -> float:
    started = time.perf_counter()
    with open(stdin, "rb") if stdin else open(os.devnull, "rb") as source:
        subprocess.run(
            ["psql", database_url, "-q", "-v", "actor=NULL", "-f", str(script)],
            stdin=source, stdout=subprocess.DEVNULL, check=True, timeout=3600,
        )  # fmt: skip
    return time.perf_counter() - started


def write_import_csv(path: Path, rows: int) -> None:
    import random

    rng = random.Random(7)
    with path.open("w") as out:
        out.write("sku,warehouse,on_hand\n")
        for n in range(1, rows // 2 + 1):
            sku = f"IMP-{n:07d}"
            out.write(f"{sku},MAIN,{rng.randint(0, 500)}\n{sku},EAST,{rng.randint(0, 500)}\n")


class Worker:
    """A Celery worker (prefork, one child) and the outbox relay that feeds it, on the bench
    database; tracks the worker's peak RSS."""

    def __init__(self, env: dict):
        self.env = dict(env, DB_POOL="0", LOG_LEVEL="INFO", WORKER_METRICS_PORT="0", RELAY_METRICS_PORT="0")
        self.proc: subprocess.Popen | None = None
        self.relay: subprocess.Popen | None = None
        self.peak_rss_mb = 0.0

    def __enter__(self) -> Worker:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "project.celery", "worker", "--pool", "prefork",
             "--concurrency", "1", "--without-mingle", "--without-gossip", "--loglevel", "INFO"],
            cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        for line in self.proc.stderr:
            if "ready" in line:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the Celery worker did not start")
        import threading

        threading.Thread(target=self.proc.stderr.read, daemon=True).start()
        self.relay = subprocess.Popen(
            [sys.executable, "manage.py", "run_outbox_relay"], cwd=ROOT, env=self.env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        return self

    def sample_rss(self) -> None:
        for child in psutil.Process(self.proc.pid).children(recursive=True):
            try:
                self.peak_rss_mb = max(self.peak_rss_mb, child.memory_info().rss / 2**20)
            except psutil.Error:
                continue

    def __exit__(self, *exc):
        for proc in (self.relay, self.proc):
            if proc and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()


def run_import(port: int, env: dict, api_key: str, rows: int, tmp: Path, database_url: str) -> BatchResult:
    import httpx

    csv_path = tmp / "import.csv"
    write_import_csv(csv_path, rows)
    # The order scenarios left one confirmation email per order in the outbox; they are not part
    # of this scenario, and the worker would send them all before it reached the import.
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE project_outboxmessage SET state = 'done', done_at = now() WHERE state <> 'done'")
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {api_key}", "X-Forwarded-Proto": "https"}
    with Worker(env) as worker:
        started = time.perf_counter()
        with csv_path.open("rb") as upload:
            accepted = httpx.post(f"{base}/api/v1/imports", headers=headers, files={"file": upload}, timeout=600)
        accepted.raise_for_status()
        status_url = f"{base}/api/v1/imports/{accepted.json()['id']}"
        while True:
            worker.sample_rss()
            state = httpx.get(status_url, headers=headers, timeout=30).json()
            if state["status"] in ("succeeded", "partial", "failed"):
                break
            time.sleep(0.2)
        seconds = time.perf_counter() - started
        worker.sample_rss()
        if state["status"] != "succeeded":
            raise RuntimeError(f"the import ended {state['status']}: {state.get('errors', [])[:5]}")
        peak = worker.peak_rss_mb
    floor_url = database_url.rsplit("/", 1)[0] + f"/{FLOOR_DB}"
    floor = _psql(floor_url, FLOORS_DIR / "import.sql", stdin=csv_path)
    return BatchResult(f"import_{rows}_rows", seconds, floor, peak)


def run_expiry(env: dict, orders: int, database_url: str) -> BatchResult:
    script = (
        "import time; from orders.jobs import expire_reservations;"
        "t = time.perf_counter(); n = expire_reservations(); print('EXPIRED', n, time.perf_counter() - t)"
    )
    out = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script], cwd=ROOT, env=dict(env, DB_POOL="0"),
        capture_output=True, text=True, check=True, timeout=3600,
    )  # fmt: skip
    line = next(row for row in out.stdout.splitlines() if row.startswith("EXPIRED "))
    _, count, seconds = line.split()
    if int(count) < orders:
        raise RuntimeError(f"expired {count} of {orders} reservations")
    floor_url = database_url.rsplit("/", 1)[0] + f"/{FLOOR_DB}"
    floor = _psql(floor_url, FLOORS_DIR / "expiry.sql")
    return BatchResult(f"expiry_{orders}_reservations", float(seconds), floor, None)


def batch_table(results: list[BatchResult]) -> str:
    lines = [
        "| batch job | seconds | psql floor seconds | ratio to floor | worker peak RSS MB | invariants |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in results:
        rss = "-" if r.peak_rss_mb is None else f"{r.peak_rss_mb:.0f}"
        lines.append(
            f"| {r.scenario} | {r.seconds:.1f} | {r.floor_seconds:.1f} | {r.ratio:.2f} | {rss} | {r.invariants} |"
        )
    return "\n".join(lines)


def run_whole_shop(args, database_url: str, redis_url: str, tmp: Path, extra: dict) -> list[whole_shop.Round]:
    """tests/bench/whole_shop.py: the shop as `make run` starts it, email through SMTP to a sink."""
    uniform = next(s for s in scenarios(args.products) if s.name == "orders_uniform")
    shop_tmp = tmp / "whole-shop"
    shop_tmp.mkdir(parents=True, exist_ok=True)
    with whole_shop.SmtpSink() as sink:
        env = bench_env(
            database_url,
            redis_url,
            EMAIL_BACKEND="project.mail.smtp.EmailBackend",
            EMAIL_HOST="127.0.0.1",
            EMAIL_PORT=str(sink.port),
        )
        with Gunicorn(env, shop_tmp) as server, whole_shop.Background(env, shop_tmp) as background:

            def place_orders(seconds: float) -> float:
                return wrk(server.port, uniform, seconds, args.connections, extra)["seconds"]

            def one_round(seconds: float) -> whole_shop.Round:
                return whole_shop.run_round(
                    place_orders=place_orders, load_seconds=seconds, web_pid=server.proc.pid,
                    background=background, sink=sink, database_url=database_url, redis_url=redis_url,
                )  # fmt: skip

            if args.warmup:  # the worker and relay start, connect and import their tasks
                one_round(args.warmup)
            rounds = []
            for number in range(1, args.runs + 1):
                log(f"whole_shop: round {number} of {args.runs}")
                rounds.append(one_round(args.shop_seconds))
            return rounds


def run_two_nodes(args, database_url: str, redis_url: str, tmp: Path, extra: dict) -> list[two_nodes.Round]:
    """tests/bench/two_nodes.py: two nodes of two workers behind HAProxy, one of four behind it, and direct."""
    by_name = {scenario.name: scenario for scenario in scenarios(args.products)}
    return two_nodes.run(
        env=bench_env(database_url, redis_url), tmp=tmp, runs=args.runs, free_port=free_port, gunicorn=Gunicorn,
        scenarios=[by_name["orders_uniform"], by_name["product_detail"]],
        warmup=lambda port, scenario: args.warmup and wrk(port, scenario, args.warmup, args.connections, extra),
        measure=lambda port, scenario: run_once(port, scenario, args, extra),
    )  # fmt: skip


def run_mixed(args, database_url: str, redis_url: str, tmp: Path, extra: dict) -> dict[str, list[mixed.MixedRound]]:
    """tests/bench/mixed.py: readers and orderers alone, then together, on one production server."""
    import httpx

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per /metrics read otherwise
    env = bench_env(database_url, redis_url)
    by_name = {scenario.name: scenario for scenario in scenarios(args.products)}
    by_name["product_hot"] = Scenario("product_hot", "/api/v1/products/HOT")
    uniform = by_name["orders_uniform"]
    by_name[mixed.PACED_ORDERS] = replace(
        uniform, name=mixed.PACED_ORDERS, env={**uniform.env, "BENCH_RATE": str(mixed.PACED_ORDERS_PER_SECOND)}
    )
    chosen = [m for m in mixed.MIXED if not args.only or m.name in args.only.split(",")]
    results: dict[str, list[mixed.MixedRound]] = {}
    with Gunicorn(env, tmp) as server:

        def run(name: str, connections: int) -> float:
            return run_once(server.port, by_name[name], args, extra, connections=connections)["rps"]

        def metrics() -> str:
            headers = {"Authorization": f"Bearer {env['METRICS_TOKEN']}", "X-Forwarded-Proto": "https"}
            response = httpx.get(f"http://127.0.0.1:{server.port}/metrics", headers=headers, timeout=30)
            response.raise_for_status()
            return response.text

        for pair in chosen:
            if args.warmup:
                wrk(server.port, by_name[pair.readers], args.warmup, pair.reader_connections, extra)
                wrk(server.port, by_name[pair.writers], args.warmup, pair.writer_connections, extra)
            results[pair.name] = []
            for number in range(1, args.runs + 1):
                sides = "readers alone, together, orderers alone"
                log(f"{pair.name}: round {number} of {args.runs} ({sides}; {args.duration}s each)")
                results[pair.name].append(mixed.run_round(pair, run, metrics))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="one short run of two scenarios (make test)")
    parser.add_argument("--only", default="", help="comma-separated scenario names")
    parser.add_argument("--duration", type=float, default=8)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--products", type=int, default=10_000)
    parser.add_argument("--output", type=Path, default=RESULTS_DIR)
    parser.add_argument("--import-rows", type=int, default=1_000_000, help="0: skip the import scenario")
    parser.add_argument("--expiry-orders", type=int, default=100_000, help="0: skip the expiry scenario")
    parser.add_argument("--bulk-batches", type=int, default=20, help="bulk_set: batches of 1,000 rows (0: skip)")
    parser.add_argument("--shop-seconds", type=float, default=30, help="whole_shop: seconds of orders per half-round")
    parser.add_argument("--db-clients", default="16,64", help="placement_db: pgbench client counts, comma-separated")
    parser.add_argument(
        "--hot-buckets",
        default="0,1,4,16,64",
        help="placement_db: the hot SKU's stock buckets per run (0: hot mode off)",
    )
    args = parser.parse_args()
    if args.smoke:
        args.duration, args.warmup, args.runs, args.products, args.connections = 1, 0, 1, 200, 4
        args.import_rows, args.expiry_orders, args.bulk_batches = 0, 0, 0
        args.only = args.only or "ceiling_full,catalogue_cached"
    if shutil.which("wrk") is None:
        log("wrk is missing: apt-get install -y wrk")
        return 2

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings.base")
    import django

    django.setup()  # only for the invariant queries, which live in the selectors
    database_url, redis_url = bench_urls()
    log(f"fresh database {BENCH_DB}, seeding {args.products} products")
    fresh_database(database_url)
    api_key = seed(database_url, redis_url, args.products, args.import_rows, args.expiry_orders)
    import redis

    redis.Redis.from_url(redis_url).flushdb()

    chosen = [s for s in scenarios(args.products) if not args.only or s.name in args.only.split(",")]
    results: list[Result] = []
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"stockroom-bench-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    peak_rss = 0.0
    broken = 0
    extra = {"BENCH_API_KEY": api_key}
    groups: dict[tuple, list[Scenario]] = {}
    for scenario in chosen:
        groups.setdefault((scenario.server, scenario.strategy), []).append(scenario)
    for (server, strategy), members in groups.items():
        settings_module = "tests.bench.bare_settings" if server == "bare" else "project.settings.production"
        env = bench_env(database_url, redis_url, settings=settings_module,
                        STOCK_RESERVATION_STRATEGY=strategy or "conditional")  # fmt: skip
        with Gunicorn(env, tmp) as server_proc:
            log(f"{', '.join(s.name for s in members)}: {args.warmup}s warm-up each, then {args.runs} rounds")
            runs = measure_group(server_proc.port, members, args, extra)
            count = invariant_breaches(database_url) if any(s.writes for s in members) else 0
            broken += count
            for scenario in members:
                result = summarise(scenario.name, runs[scenario.name])
                if scenario.writes:  # after every run of the group's writers
                    result.invariants = "ok" if count == 0 else f"BROKEN ({count})"
                results.append(result)
            peak_rss = max(peak_rss, server_proc.worker_peak_rss_mb())

    every_job = {"import", "expiry", "bulk_set", "whole_shop", "placement_db", *(m.name for m in mixed.MIXED)}
    every_job.add("two_nodes")
    wanted = set(args.only.split(",")) if args.only else every_job
    mixed_results: dict[str, list[mixed.MixedRound]] = {}
    if any(m.name in wanted for m in mixed.MIXED):
        log("mixed: readers and orderers alone, then together, on one server")
        mixed_results = run_mixed(args, database_url, redis_url, tmp, extra)
        broken += logged_breaches(database_url, "mixed")
    shop_rounds: list[whole_shop.Round] = []
    if "whole_shop" in wanted:
        log(f"whole_shop: web, worker, relay and beat with SMTP; {args.runs} rounds of {args.shop_seconds}s web-only"
            f" then {args.shop_seconds}s whole-shop and its drain")  # fmt: skip
        shop_rounds = run_whole_shop(args, database_url, redis_url, tmp, extra)
        broken += logged_breaches(database_url, "whole_shop")
        if not whole_shop.delivered_exactly(shop_rounds):
            log("whole_shop: emails received differ from orders placed, or a Message-ID came twice")
            broken += 1

    node_rounds: list[two_nodes.Round] = []
    if "two_nodes" in wanted:
        log(f"two_nodes: orders and product reads through HAProxy to 2 nodes, to 1 node, and to that node directly;"
            f" {args.runs} interleaved rounds")  # fmt: skip
        node_rounds = run_two_nodes(args, database_url, redis_url, tmp, extra)
        broken += logged_breaches(database_url, "two_nodes")

    batch_results: list[BatchResult] = []
    if (args.import_rows and "import" in wanted) or (args.expiry_orders and "expiry" in wanted):
        env = bench_env(database_url, redis_url)
        if args.import_rows and "import" in wanted:
            with Gunicorn(env, tmp) as server_proc:
                log(f"import of {args.import_rows:,} rows through the API and a worker, then its psql floor")
                batch_results.append(run_import(server_proc.port, env, api_key, args.import_rows, tmp, database_url))
        if args.expiry_orders and "expiry" in wanted:
            log(f"expiry of {args.expiry_orders:,} reservations, then its psql floor")
            batch_results.append(run_expiry(env, args.expiry_orders, database_url))
        count = invariant_breaches(database_url)
        broken += count
        for result in batch_results:
            result.invariants = "ok" if count == 0 else f"BROKEN ({count})"

    bulk_run: bulk_set.BulkSetRun | None = None
    if args.bulk_batches and "bulk_set" in wanted:
        with Gunicorn(bench_env(database_url, redis_url), tmp) as server_proc:
            log(f"bulk_set: {args.bulk_batches} batches of 1,000 rows through the API, then its psql floor")
            floor_url = database_url.rsplit("/", 1)[0] + f"/{FLOOR_DB}"
            bulk_run = bulk_set.run(server_proc.port, api_key, batches=args.bulk_batches, products=args.products,
                                    floor_url=floor_url, tmp=tmp)  # fmt: skip
        broken += logged_breaches(database_url, "bulk_set")

    # Last: it adds a few hundred thousand orders, which the scenarios above should not carry.
    placement_rounds: list[placement_db.PlacementRound] = []
    if "placement_db" in wanted:
        clients = tuple(int(c) for c in args.db_clients.split(","))
        hot_buckets = tuple(int(n) for n in args.hot_buckets.split(","))
        log(
            f"placement_db: pgbench calling orders_place_order, uniform then hot with {hot_buckets} stock buckets,"
            f" {clients} clients, {args.runs} rounds"
        )
        placement_rounds = placement_db.run(
            database_url, products=args.products, seconds=args.duration, runs=args.runs, warmup=args.warmup,
            clients=clients, hot_buckets=hot_buckets,
            switch=placement_db.service_switch(bench_env(database_url, redis_url, settings="project.settings.base")),
        )  # fmt: skip
        for line in (line for r in placement_rounds for line in r.breaches):
            log(f"placement_db: {line}")
        broken += logged_breaches(database_url, "placement_db", found=sum(len(r.breaches) for r in placement_rounds))
        if placement_db.refused(placement_rounds):
            log(f"placement_db: {placement_db.refused(placement_rounds)} calls placed no order")
            broken += 1

    by_name = {r.scenario: r for r in results}
    ceiling = by_name.get("ceiling_full")
    for result in results:
        if ceiling and ceiling.rps:
            result.ratio = result.rps / ceiling.rps
    ratios = {}
    if "orders_hot" in by_name and "orders_uniform" in by_name and by_name["orders_uniform"].rps:
        ratios["hot / uniform"] = by_name["orders_hot"].rps / by_name["orders_uniform"].rps
    if ceiling and "ceiling_bare" in by_name and by_name["ceiling_bare"].rps:
        ratios["full-stack ceiling / bare ceiling"] = ceiling.rps / by_name["ceiling_bare"].rps
    meta = {
        "date": dt.date.today().isoformat(),
        "cores": os.cpu_count(),
        "duration": args.duration,
        "runs": args.runs,
        "connections": args.connections,
        "web_peak_rss_mb": peak_rss,
        "ratios": ratios,
    }
    text = table(results, meta)
    if mixed_results:
        text += "\n\n" + mixed.report(mixed_results)
    if shop_rounds:
        text += "\n\n" + whole_shop.report(shop_rounds)
    if node_rounds:
        text += "\n\n" + two_nodes.report(node_rounds)
    if batch_results:
        text += "\n\n" + batch_table(batch_results)
    if bulk_run:
        text += "\n\n" + bulk_set.report(bulk_run)
    if placement_rounds:
        text += "\n\n" + placement_db.report(placement_rounds)
    print(text)
    args.output.mkdir(parents=True, exist_ok=True)
    stem = args.output / f"{meta['date']}-{meta['cores']}cores{'-smoke' if args.smoke else ''}"
    stem.with_suffix(".md").write_text(text + "\n")
    stem.with_suffix(".json").write_text(
        json.dumps(
            {
                "meta": meta,
                "results": [asdict(r) for r in results],
                "batch": [dict(asdict(r), ratio=r.ratio) for r in batch_results],
                "mixed": {
                    name: [
                        dict(
                            asdict(r),
                            reader_ratio=r.reader_ratio,
                            writer_ratio=r.writer_ratio,
                            share=r.share,
                            hit_ratio=r.hit_ratio,
                        )
                        for r in rounds
                    ]
                    for name, rounds in mixed_results.items()
                },
                "whole_shop": [
                    dict(asdict(r), web_rps=r.web_rps, shop_rps=r.shop_rps, ratio=r.ratio) for r in shop_rounds
                ],
                "two_nodes": two_nodes.as_json(node_rounds),
                "placement_db": [dict(asdict(r), ratios={n: r.ratio(n) for n in r.hot}) for r in placement_rounds],
                "bulk_set": bulk_run.as_json() if bulk_run else None,
            },
            indent=2,
        )
    )
    shutil.rmtree(tmp, ignore_errors=True)
    if broken:
        log(f"INVARIANTS BROKEN: {broken} breaches")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

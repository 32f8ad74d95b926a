"""The placement function at the database level: pgbench clients calling `orders_place_order`
directly (no Python, no HTTP), uniform over the catalogue and all on the one `HOT` SKU, the hot
SKU with hot mode off (N = 0 stock buckets: every order queues on its stock level's row) and on
with N buckets per level (orders take from a bucket with SKIP LOCKED).

On two cores Python hides the limit a hot SKU meets first. Here the database is the whole cost, so
hot / uniform shows that queue and what the buckets take off it. Each round runs, with the same
number of clients and for `seconds` each, the uniform script then the hot one at every N
(interleaved, DESIGN.md §12), each run on a freshly vacuumed database (_tidy). Before each hot run
the product is switched to its N by the service (inventory.services.product_set_buckets: the
column set, the levels locked FOR UPDATE, the buckets' units given back and the buckets removed;
the first order refills N), and after the scenario it is left with hot mode off.

A round counts the orders the database holds before and after each run, so a run whose calls were
refused (out of stock, an error answered as JSON) is reported, not mistaken for throughput; the
reconcile job's checks (ledger sums, reserved equals live allocations plus bucket units) run after
each round with the buckets still full. While each run goes, pg_stat_activity is sampled: what the
clients' backends wait on. The scripts are in tests/bench/pgbench/.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).resolve().parent / "pgbench"
UNIFORM, HOT = SCRIPTS / "place_uniform.sql", SCRIPTS / "place_hot.sql"
HOT_SKU = "HOT"  # the SKU place_hot.sql orders
CLIENTS = (16, 64)
HOT_BUCKETS = (0, 1, 4, 16, 64)  # 0: hot mode off
# The N the headline ratio is read at, and what the admin's "Turn hot mode on" sets. On the 2-core
# bench host at 64 clients: N=4 about 0.46 of uniform, N=16 about 0.67, N=64 about 0.89; at 16
# clients N=16 and N=64 both about 0.95. A take holds its bucket until its order's commit is
# flushed, so with fewer buckets than buyers orders queue on the buckets; a take draws one bucket
# by slot, so more buckets cost a take nothing.
RECOMMENDED_BUCKETS = 64
TPS = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.MULTILINE)
PROCESSED = re.compile(r"^number of transactions actually processed: (\d+)", re.MULTILINE)
SAMPLE_SECONDS = 0.1

Switch = Callable[[int], None]  # sets HOT's stock buckets (0: hot mode off)


@dataclass
class PgbenchRun:
    tps: float
    calls: int  # transactions pgbench completed
    orders: int  # orders the database gained meanwhile
    waits: dict[str, int] = field(default_factory=dict)  # sampled backends of the clients, by wait

    @property
    def refused(self) -> int:
        return self.calls - self.orders


@dataclass
class PlacementRound:
    clients: int
    uniform: PgbenchRun
    hot: dict[int, PgbenchRun]  # by stock buckets, 0: hot mode off
    breaches: list[str] = field(default_factory=list)  # the invariant checks after the round

    def ratio(self, buckets: int) -> float:
        return self.hot[buckets].tps / self.uniform.tps if self.uniform.tps else 0.0


def _orders(database_url: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM orders_order").fetchone()[0]


def bench_user(database_url: str, email: str = "bench@example.com") -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT id FROM users_user WHERE email = %s", [email]).fetchone()
    if row is None:
        raise RuntimeError(f"no user {email} in the benchmark database")
    return row[0]


class _WaitSampler(threading.Thread):
    """What the pgbench clients' backends do, every SAMPLE_SECONDS: running (no wait event), a wait
    event (Lock:transactionid, LWLock:MultiXactOffsetSLRU, ...), or idle, waiting for pgbench."""

    QUERY = """
        SELECT CASE WHEN state <> 'active' THEN 'idle (client side)'
                    ELSE coalesce(wait_event_type || ':' || wait_event, 'running') END, count(*)
          FROM pg_stat_activity
         WHERE datname = current_database() AND application_name = 'pgbench' AND pid <> pg_backend_pid()
         GROUP BY 1"""

    def __init__(self, database_url: str):
        super().__init__(daemon=True)
        self.database_url = database_url
        self.waits: Counter[str] = Counter()
        self.stop = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            while not self.stop.wait(SAMPLE_SECONDS):
                self.waits.update(dict(conn.execute(self.QUERY).fetchall()))


def pgbench(database_url: str, script: Path, *, clients: int, seconds: float, uid: int, products: int) -> PgbenchRun:
    """One pgbench run of `script`; raises if a client aborted (pgbench exits non-zero then)."""
    before = _orders(database_url)
    command = [
        "pgbench", "--no-vacuum", "--protocol=prepared", f"--client={clients}",
        f"--jobs={min(clients, os.cpu_count() or 1)}", f"--time={max(1, round(seconds))}",
        f"--file={script}", f"--define=uid={uid}", f"--define=products={products}", database_url,
    ]  # fmt: skip
    sampler = _WaitSampler(database_url)
    sampler.start()
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    finally:
        sampler.stop.set()
        sampler.join()
    if done.returncode != 0:
        raise RuntimeError(f"pgbench {script.name} with {clients} clients failed: {done.stderr.strip()[-500:]}")
    tps, calls = TPS.search(done.stdout), PROCESSED.search(done.stdout)
    if tps is None or calls is None:
        raise RuntimeError(f"unexpected pgbench output: {done.stdout[-500:]}")
    return PgbenchRun(float(tps.group(1)), int(calls.group(1)), _orders(database_url) - before, dict(sampler.waits))


def service_switch(env: dict[str, str]) -> Switch:
    """Switch HOT with inventory.services.product_set_buckets, in a Django process of its own on the
    database `env` names: the bench process's Django points at the development database, and the
    switch is the service's own transaction, not a copy of it."""

    def switch(buckets: int) -> None:
        script = (
            "from inventory.services import product_set_buckets;"
            f"product_set_buckets(sku={HOT_SKU!r}, buckets={int(buckets)})"
        )
        done = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", script], cwd=ROOT, env=dict(env, DB_POOL="0"),
            capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"switching {HOT_SKU} to {buckets} stock buckets failed: {done.stderr.strip()[-1000:]}")

    return switch


def hot_state(database_url: str) -> tuple[int, int]:
    """HOT's stock_buckets and the bucket rows its levels hold."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute(
            """SELECT p.stock_buckets, (SELECT count(*) FROM inventory_stockbucket b
                                          JOIN inventory_stocklevel s ON s.id = b.level_id
                                         WHERE s.product_id = p.id)
                 FROM inventory_product p WHERE p.sku = %s""",
            [HOT_SKU],
        ).fetchone()


def _set_buckets(database_url: str, switch: Switch, buckets: int) -> None:
    switch(buckets)
    state = hot_state(database_url)
    if state != (buckets, 0):  # the service sets the column and removes every bucket
        raise RuntimeError(f"{HOT_SKU} after switching to {buckets} buckets: (stock_buckets, buckets) = {state}")


def _tidy(database_url: str) -> None:
    """What autovacuum does between runs on a production server (this host runs with it off): every
    take rewrites a bucket row and every order with hot mode off the level's row, so without it a
    run would wade through the dead row versions of the runs before it (64 buckets grow by about 30
    pages in 15 s of takes, and each take scans them) and the N measured last would pay for the
    others."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")


def breaches(database_url: str) -> list[str]:
    """The reconcile job's stock checks on the whole database, read in one snapshot: ledger sums and
    bounds per level (inventory.selectors.stock_ledger_breaches) and reserved equal to live
    allocations plus bucket units (orders.selectors.order_stock_breaches)."""
    from inventory.selectors import LEDGER_BREACHES_SQL  # these need Django set up, the bench sets it up late
    from orders.selectors import RESERVED_VS_ALLOCATIONS_SQL

    found = []
    with psycopg.connect(database_url) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        for name, query in (("ledger", LEDGER_BREACHES_SQL), ("reserved_vs_allocations", RESERVED_VS_ALLOCATIONS_SQL)):
            cursor = conn.execute(query)
            columns = [column.name for column in cursor.description]
            found += [f"{name}: {dict(zip(columns, row, strict=True))}" for row in cursor.fetchall()]
    return found


def run(
    database_url: str,
    *,
    products: int,
    seconds: float,
    runs: int,
    warmup: float,
    switch: Switch,
    clients: tuple[int, ...] = CLIENTS,
    hot_buckets: tuple[int, ...] = HOT_BUCKETS,
) -> list[PlacementRound]:
    """`runs` rounds per client count, after a warm-up of each run: uniform, then the hot SKU at
    each number of stock buckets (switched by `switch` before each hot run). Leaves HOT with hot
    mode off, even when a run fails."""
    uid = bench_user(database_url)

    def place(script: Path, count: int, length: float) -> PgbenchRun:
        _tidy(database_url)
        return pgbench(database_url, script, clients=count, seconds=length, uid=uid, products=products)

    def one_round(count: int, length: float) -> PlacementRound:
        uniform = place(UNIFORM, count, length)
        hot = {}
        for buckets in hot_buckets:
            _set_buckets(database_url, switch, buckets)
            hot[buckets] = place(HOT, count, length)
        return PlacementRound(count, uniform, hot)

    rounds = []
    try:
        for count in clients:
            if warmup:
                one_round(count, warmup)
            for _ in range(runs):
                rounds.append(one_round(count, seconds))
                rounds[-1].breaches = breaches(database_url)  # the last N's buckets still hold units
    finally:
        _set_buckets(database_url, switch, 0)
    return rounds


def refused(rounds: list[PlacementRound]) -> int:
    """Calls that placed no order (a refusal answered as JSON); a healthy run has none."""
    return sum(r.uniform.refused + sum(run.refused for run in r.hot.values()) for r in rounds)


def _spread(values: list[float], digits: int) -> str:
    return f"{statistics.median(values):,.{digits}f} ({min(values):,.{digits}f}-{max(values):,.{digits}f})"


def _waits(runs: list[PgbenchRun], top: int = 4) -> str:
    total = Counter()
    for one in runs:
        total.update(one.waits)
    samples = sum(total.values())
    return ", ".join(f"{name} {n / samples:.0%}" for name, n in total.most_common(top)) if samples else "-"


def report(rounds: list[PlacementRound]) -> str:
    """One table per client count: orders/s of each run and hot / uniform (median, min-max over the
    rounds, each hot run against the uniform run of its own round), then the headline ratio."""
    parts = []
    for count in sorted({r.clients for r in rounds}):
        mine = [r for r in rounds if r.clients == count]
        lines = [
            f"| placement at the database, {count} pgbench clients ({len(mine)} rounds; median, min-max) "
            "| orders/s | hot / uniform | refused | backends (sampled) |",
            "|---|---:|---:|---:|---|",
            f"| uniform over the catalogue | {_spread([r.uniform.tps for r in mine], 0)} | - "
            f"| {sum(r.uniform.refused for r in mine)} | {_waits([r.uniform for r in mine])} |",
        ]
        for buckets in mine[0].hot:
            label = "one hot SKU, hot mode off (N=0)" if buckets == 0 else f"one hot SKU, N={buckets} buckets"
            runs = [r.hot[buckets] for r in mine]
            lines.append(
                f"| {label} | {_spread([run.tps for run in runs], 0)} | {_spread([r.ratio(buckets) for r in mine], 2)} "
                f"| {sum(run.refused for run in runs)} | {_waits(runs)} |"
            )
        parts.append("\n".join(lines))
    headline = [r for r in rounds if r.clients == 64 and RECOMMENDED_BUCKETS in r.hot]
    if headline:
        parts.append(
            f"hot / uniform at 64 clients, N={RECOMMENDED_BUCKETS} buckets (target >= 0.8): "
            f"{_spread([r.ratio(RECOMMENDED_BUCKETS) for r in headline], 2)}"
        )
    broken = [line for r in rounds for line in r.breaches]
    parts.append(f"invariants after each round: {'ok' if not broken else f'BROKEN ({len(broken)})'}")
    return "\n\n".join(parts)

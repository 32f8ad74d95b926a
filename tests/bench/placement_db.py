"""The placement function at the database level: pgbench clients calling `orders_place_order`
directly (no Python, no HTTP), uniform over the catalogue and all on the one `HOT` SKU.

On two cores Python hides the limit a hot SKU meets first: every order on it queues on one stock
level's row lock. Here the database is the whole cost, so hot / uniform shows that queue. Each
round runs the uniform script then the hot one for `seconds` with the same number of clients
(interleaved, DESIGN.md §12); a round counts the orders the database holds before and after each
run, so a run whose calls were refused (out of stock, an error answered as JSON) is reported, not
mistaken for throughput. The scripts are in tests/bench/pgbench/.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg

SCRIPTS = Path(__file__).resolve().parent / "pgbench"
UNIFORM, HOT = SCRIPTS / "place_uniform.sql", SCRIPTS / "place_hot.sql"
CLIENTS = (16, 64)
TPS = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.MULTILINE)
PROCESSED = re.compile(r"^number of transactions actually processed: (\d+)", re.MULTILINE)


@dataclass
class PgbenchRun:
    tps: float
    calls: int  # transactions pgbench completed
    orders: int  # orders the database gained meanwhile

    @property
    def refused(self) -> int:
        return self.calls - self.orders


@dataclass
class PlacementRound:
    clients: int
    uniform: PgbenchRun
    hot: PgbenchRun

    @property
    def ratio(self) -> float:
        return self.hot.tps / self.uniform.tps if self.uniform.tps else 0.0


def _orders(database_url: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM orders_order").fetchone()[0]


def bench_user(database_url: str, email: str = "bench@example.com") -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT id FROM users_user WHERE email = %s", [email]).fetchone()
    if row is None:
        raise RuntimeError(f"no user {email} in the benchmark database")
    return row[0]


def pgbench(database_url: str, script: Path, *, clients: int, seconds: float, uid: int, products: int) -> PgbenchRun:
    """One pgbench run of `script`; raises if a client aborted (pgbench exits non-zero then)."""
    before = _orders(database_url)
    command = [
        "pgbench", "--no-vacuum", "--protocol=prepared", f"--client={clients}",
        f"--jobs={min(clients, os.cpu_count() or 1)}", f"--time={max(1, round(seconds))}",
        f"--file={script}", f"--define=uid={uid}", f"--define=products={products}", database_url,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"pgbench {script.name} with {clients} clients failed: {done.stderr.strip()[-500:]}")
    tps, calls = TPS.search(done.stdout), PROCESSED.search(done.stdout)
    if tps is None or calls is None:
        raise RuntimeError(f"unexpected pgbench output: {done.stdout[-500:]}")
    return PgbenchRun(float(tps.group(1)), int(calls.group(1)), _orders(database_url) - before)


def run(
    database_url: str, *, products: int, seconds: float, runs: int, warmup: float, clients: tuple[int, ...] = CLIENTS
) -> list[PlacementRound]:
    """`runs` rounds (uniform, then hot) per client count, after a warm-up of each."""
    uid = bench_user(database_url)
    rounds = []
    for count in clients:
        if warmup:
            for script in (UNIFORM, HOT):
                pgbench(database_url, script, clients=count, seconds=warmup, uid=uid, products=products)
        for _ in range(runs):
            uniform = pgbench(database_url, UNIFORM, clients=count, seconds=seconds, uid=uid, products=products)
            hot = pgbench(database_url, HOT, clients=count, seconds=seconds, uid=uid, products=products)
            rounds.append(PlacementRound(count, uniform, hot))
    return rounds


def refused(rounds: list[PlacementRound]) -> int:
    """Calls that placed no order (a refusal answered as JSON); a healthy run has none."""
    return sum(r.uniform.refused + r.hot.refused for r in rounds)


def _spread(values: list[float], digits: int) -> str:
    return f"{statistics.median(values):,.{digits}f} ({min(values):,.{digits}f}-{max(values):,.{digits}f})"


def report(rounds: list[PlacementRound]) -> str:
    lines = [
        "| placement at the database (median, min-max) | uniform orders/s | one hot SKU orders/s | hot / uniform |",
        "|---|---:|---:|---:|",
    ]
    for count in sorted({r.clients for r in rounds}):
        mine = [r for r in rounds if r.clients == count]
        lines.append(
            f"| {count} pgbench clients | {_spread([r.uniform.tps for r in mine], 0)} "
            f"| {_spread([r.hot.tps for r in mine], 0)} | {_spread([r.ratio for r in mine], 2)} |"
        )
    return "\n".join(lines)

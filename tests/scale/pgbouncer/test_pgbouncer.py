"""Behind a real PgBouncer 1.18 in transaction mode (ops/pgbouncer/pgbouncer.ini): what today's
session shape breaks, and that the DATABASE_POOLER=pgbouncer shape serves the shop.

- the `options` startup parameter (the timeouts) is refused; the pooler shape takes the timeouts
  from the database's defaults and refuses to run without them;
- prepared statements of two clients meet on one server connection; the pooler shape prepares none;
- the order tests (API and concurrency) and the relay's NOTIFY wake-up pass through PgBouncer, with
  the test database created, migrated and dropped over the direct connection.
"""

import os
import subprocess
import sys
import threading
import time

import psycopg
import pytest
from django.db import OperationalError, connection
from django.db.utils import ConnectionHandler

from project.db.pooler import SessionLimitsMissing
from project.settings.base import database_settings
from tests.scale.pgbouncer.support import running_pgbouncer
from tests.support import ROOT, subprocess_env, wait_for

pytestmark = pytest.mark.slow

RUN_ID = os.environ.get("TEST_RUN_ID", "")
SCRATCH = f"stockroom_pgbouncer{RUN_ID}_{os.getpid()}"


@pytest.fixture(autouse=True)
def _connections_of_our_own(django_db_blocker):
    """These tests connect only through Django connections of their own (never the test database),
    so pytest-django's guard is lifted instead of creating a test database nobody uses."""
    with django_db_blocker.unblock():
        yield


@pytest.fixture(scope="module")
def direct() -> dict:
    """Where the machine's PostgreSQL is (the test settings' host, port and user)."""
    settings_dict = connection.settings_dict
    return {
        "host": settings_dict["HOST"] or "127.0.0.1",
        "port": int(settings_dict["PORT"] or 5432),
        "user": settings_dict["USER"] or "postgres",
    }


@pytest.fixture(scope="module")
def scratch(direct):
    """A database of this module's own on the machine's PostgreSQL, dropped afterwards."""
    with psycopg.connect(**direct, dbname="postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{SCRATCH}"')
    yield SCRATCH
    with psycopg.connect(**direct, dbname="postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{SCRATCH}" WITH (FORCE)')


@pytest.fixture(scope="module")
def pgbouncer(direct, scratch):
    host, port = direct["host"], direct["port"]
    databases = {
        # One server connection at most: two clients' statements meet on it.
        "probe_one": f"host={host} port={port} dbname={scratch} pool_size=1 reserve_pool=0 max_db_connections=1",
        "*": f"host={host} port={port}",
    }
    with running_pgbouncer(databases=databases, user=direct["user"]) as server:
        yield server


def _direct_url(direct: dict, database: str) -> str:
    return f"postgres://{direct['user']}@{direct['host']}:{direct['port']}/{database}"


def _wrapper(config: dict, *, pool: bool = False):
    """A Django connection (this project's backend) with `config`, outside the test's own aliases;
    one connection of its own unless `pool`."""
    if not pool:
        config = {**config, "OPTIONS": {k: v for k, v in config["OPTIONS"].items() if k != "pool"}, "CONN_MAX_AGE": 0}
    alias = f"pgbouncer_probe_{id(config)}"
    # Its own alias: the circuit breaker and the pools are per alias, the test's own stay untouched.
    return ConnectionHandler({"default": {"ENGINE": "django.db.backends.dummy"}, alias: config})[alias]


def _manage(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=subprocess_env(DJANGO_SETTINGS_MODULE="project.settings.base", **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_startup_options_are_refused_and_the_pooler_shape_runs_with_the_databases_own_timeouts(
    pgbouncer, direct, scratch, settings
):
    # Today's shape: the timeouts ride in the `options` startup parameter, which PgBouncer refuses.
    today = _wrapper(database_settings(pgbouncer.url(scratch)))
    with pytest.raises(OperationalError, match="unsupported startup parameter: options"):
        today.ensure_connection()

    # The pooler shape, before the database has its defaults: refused, loudly, never run without them.
    limits = {
        "DB_STATEMENT_TIMEOUT_MS": "400",
        "DB_LOCK_TIMEOUT_MS": "300",
        "DB_IDLE_IN_TRANSACTION_TIMEOUT_MS": "5000",
    }
    for name, value in limits.items():
        setattr(settings, name, int(value))
    pooled = database_settings(pgbouncer.url(scratch), pooler="pgbouncer", direct_url=_direct_url(direct, scratch))
    with pytest.raises(SessionLimitsMissing, match="statement_timeout=0ms \\(configured 400ms\\)"):
        _wrapper(pooled).ensure_connection()
    # A web process's pool discards such a connection and never lends it (the request fails).
    web = _wrapper(pooled, pool=True)
    assert web.settings_dict["OPTIONS"]["pool"]
    with pytest.raises(OperationalError, match="couldn't get a connection"):
        web.ensure_connection()
    web.close_pool()
    env = {
        "DATABASE_URL": pgbouncer.url(scratch),
        "DATABASE_POOLER": "pgbouncer",
        "DATABASE_DIRECT_URL": _direct_url(direct, scratch),
        "DB_POOL": "0",
        **limits,
    }
    check = _manage("check", "--database", "default", env=env)
    assert check.returncode != 0
    assert "stockroom.E101" in check.stderr

    # The operator's step: the database's own defaults, over the direct connection; then PgBouncer
    # replaces the server connections it opened before (they keep the old values).
    done = _manage("set_database_timeouts", env=env)
    assert done.returncode == 0, done.stderr
    pgbouncer.admin("RECONNECT")

    def connects():
        wrapper = _wrapper(pooled)
        try:
            wrapper.ensure_connection()
        except SessionLimitsMissing:
            return None
        return wrapper

    wrapper = wait_for(connects, timeout=10, what="server connections with the new defaults")
    with wrapper.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone() == ("400ms",)
        cursor.execute("SHOW lock_timeout")
        assert cursor.fetchone() == ("300ms",)
        started = time.monotonic()
        with pytest.raises(OperationalError, match="statement timeout"):
            cursor.execute("SELECT pg_sleep(5)")
        assert time.monotonic() - started < 3
    wrapper.close()
    assert _manage("check", "--database", "default", env=env).returncode == 0


def test_prepared_statements_of_two_clients_collide_and_the_pooler_shape_prepares_none(pgbouncer, direct, scratch):
    # psycopg names its prepared statements per connection (_pg3_0, _pg3_1 ...): through one server
    # connection, the second client's first one meets the first client's.
    url = pgbouncer.url("probe_one")
    with (
        psycopg.connect(url, autocommit=True, prepare_threshold=0) as first,
        psycopg.connect(url, autocommit=True, prepare_threshold=0) as second,
    ):
        first.execute("SELECT %s::int", [1]).fetchone()
        with pytest.raises(psycopg.errors.DuplicatePreparedStatement):
            second.execute("SELECT %s::text", ["x"]).fetchone()

    # The pooler shape: prepared_cursor (the bearer lookup's) is a plain cursor; nothing is prepared.
    pooled = database_settings(url, pooler="pgbouncer", direct_url=_direct_url(direct, scratch))
    clients = [_wrapper(pooled), _wrapper(pooled)]
    with psycopg.connect(**direct, dbname=scratch, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{scratch}" SET statement_timeout = 15000')  # the configured values
        conn.execute(f'ALTER DATABASE "{scratch}" SET lock_timeout = 3000')
        conn.execute(f'ALTER DATABASE "{scratch}" SET idle_in_transaction_session_timeout = 30000')
    pgbouncer.admin("RECONNECT probe_one")
    wait_for(lambda: _limits_connect(clients[0]), timeout=10, what="server connections with the defaults")
    for round_ in range(8):
        for client in clients:
            with client.prepared_cursor() as cursor:
                cursor.execute("SELECT %s::int + 1", [round_])
                assert cursor.fetchone() == (round_ + 1,)
    with clients[0].cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements")
        assert cursor.fetchone() == (0,)
    for client in clients:
        client.close()


def _limits_connect(wrapper) -> bool:
    try:
        wrapper.ensure_connection()
    except SessionLimitsMissing:
        return False
    return True


class PoolWatcher:
    """Samples PgBouncer's SHOW POOLS for one database: the most clients and servers at once."""

    def __init__(self, pgbouncer, database: str):
        self.pgbouncer, self.database = pgbouncer, database
        self.clients = self.servers = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.2):
            for pool in self.pgbouncer.admin("SHOW POOLS"):
                if pool["database"] == self.database:
                    self.clients = max(self.clients, pool["cl_active"] + pool["cl_waiting"])
                    servers = pool["sv_active"] + pool["sv_idle"] + pool["sv_used"] + pool["sv_tested"]
                    self.servers = max(self.servers, servers + pool["sv_login"])

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)


def test_the_order_tests_pass_through_pgbouncer(pgbouncer, direct):
    """The order API and concurrency tests, and the relay's wake-up, in a pytest of their own whose
    DATABASE_URL is PgBouncer. Its test database is created, migrated and dropped over the direct
    connection (project.db.backend.creation); the drop ends PgBouncer's idle server connections."""
    run_id = f"{RUN_ID}pgb"
    test_database = f"test_stockroom{run_id}"
    files = [
        "tests/orders/test_api.py",
        "tests/concurrency/test_order_concurrency.py",
        "tests/scale/pgbouncer/through_pgbouncer.py",
    ]
    env = subprocess_env(
        DATABASE_URL=pgbouncer.url("stockroom"),
        DATABASE_POOLER="pgbouncer",
        DATABASE_DIRECT_URL=_direct_url(direct, "stockroom"),
        TEST_RUN_ID=run_id,
    )
    started = time.monotonic()
    with PoolWatcher(pgbouncer, test_database) as pools:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                *files,
                "-q",
                "-p",
                "no:cacheprovider",
                "-o",
                "addopts=",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
    elapsed = time.monotonic() - started
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert " passed" in summary and "skipped" not in summary and "failed" not in summary, summary
    # The traffic went through PgBouncer, in transactions over few server connections.
    stats = {row["database"]: row for row in pgbouncer.admin("SHOW STATS")}
    assert stats[test_database]["total_xact_count"] > 1000
    assert 0 < pools.servers <= 25
    print(
        f"through pgbouncer: {summary} in {elapsed:.0f}s; {stats[test_database]['total_xact_count']} transactions,"
        f" at most {pools.clients} clients at once on {pools.servers} server connections"
    )
    # Dropped, though PgBouncer held server connections to it.
    with psycopg.connect(**direct, dbname="postgres", autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", [test_database]).fetchone() == (0,)

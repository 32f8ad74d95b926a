"""A live gunicorn on the test database for the reliability suite, and what its tests share.

Gunicorn runs with the production profile's process model (gthread workers, the psycopg pool,
the full middleware stack) and the test settings module, which only isolates Redis numbers,
queue names and the key prefix (TEST_RUN_ID is inherited) and lifts the rate limits. Its log
goes to a file the tests read afterwards: a traceback there is a failure even if the client
never saw it.
"""

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
import psycopg.sql
from django.conf import settings
from django.db import connection

from tests.support import ROOT, free_port, stop_process, subprocess_env, wait_for


def database_url(port: int | None = None) -> str:
    """The pytest test database (its name is only known once the test database exists)."""
    db = settings.DATABASES["default"]
    host = "127.0.0.1" if port is not None else (db.get("HOST") or "127.0.0.1")
    port = port or int(db.get("PORT") or 5432)
    return f"postgres://{db['USER']}@{host}:{port}/{connection.settings_dict['NAME']}"


def test_env(**overrides: str) -> dict[str, str]:
    """The environment of a process of this test run: test settings on the test database."""
    return subprocess_env(
        **{"DJANGO_SETTINGS_MODULE": "project.settings.test", "DATABASE_URL": database_url(), **overrides}
    )


class LiveServer:
    def __init__(self, base: str, log: Path, proc: subprocess.Popen):
        self.base = base
        self.log = log
        self.proc = proc
        self._log_start = 0

    def url(self, path: str) -> str:
        return self.base + path

    def log_text(self) -> str:
        """What gunicorn logged since it started, or since forget_log()."""
        if not self.log.exists():
            return ""
        with open(self.log, "rb") as log:
            log.seek(self._log_start)
            return log.read().decode(errors="replace")

    def forget_log(self) -> None:
        """Start reading the log from here (a server shared by several tests)."""
        self._log_start = self.log.stat().st_size if self.log.exists() else 0

    def tracebacks(self) -> list[str]:
        """Tracebacks gunicorn or Django logged (an unhandled error answered 500, a worker crash)."""
        text = self.log_text()
        return [chunk[:3000] for chunk in text.split("Traceback (most recent call last)")[1:]]


@contextmanager
def live_gunicorn(tmp_path: Path, *, workers: int = 2, threads: int = 4, **env: str):
    """gunicorn -c gunicorn.conf.py on a free port; yields a LiveServer, stops it on exit."""
    port = free_port()
    log = tmp_path / f"gunicorn-{port}.log"
    overrides = {
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": str(workers),
        "GUNICORN_THREADS": str(threads),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / f"prometheus-{port}"),
        "LOG_LEVEL": "WARNING",
        **env,
    }
    if "DATABASE_URL" not in env:
        overrides["DATABASE_URL"] = database_url()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"],
            cwd=ROOT,
            env=subprocess_env(DJANGO_SETTINGS_MODULE="project.settings.test", **overrides),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = LiveServer(f"http://127.0.0.1:{port}", log, proc)

    def up():
        if proc.poll() is not None:
            raise AssertionError(f"gunicorn exited: {server.log_text()[-3000:]}")
        try:
            return httpx.get(server.url("/healthz"), timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, timeout=30, what="gunicorn to answer")
        yield server
    finally:
        stop_process(proc, timeout=20)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# --- Celery workers in their own processes --------------------------------------------------------


def pool_children(pid: int) -> list[int]:
    """The prefork pool's processes: the worker's direct children."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in children.read_text().split()] if children.exists() else []


@contextmanager
def celery_worker(log: Path, *, queues: str | None = None, pool: str = "prefork", concurrency: int = 1, **env: str):
    """`celery -A project.celery worker --pool prefork --concurrency 1` on the test database and queues
    (TEST_RUN_ID is inherited), in a session of its own so the whole worker can be killed at once.
    Persistent connections (DB_POOL=0) as in bin/worker; no metrics port (parallel runs).
    `queues` (names, comma-separated; default: the default queue, as bin/worker), `pool` and
    `concurrency` start another kind, e.g. bin/webhooks' threads pool on the webhooks queue."""
    overrides = {
        "DB_POOL": "0",
        "WORKER_METRICS_PORT": "0",
        "PROMETHEUS_MULTIPROC_DIR": str(log.parent / "prom"),
        # Unbuffered: a worker killed with SIGKILL keeps no log lines in a buffer it cannot flush.
        "PYTHONUNBUFFERED": "1",
    }
    (log.parent / "prom").mkdir(exist_ok=True)
    log_start = log.stat().st_size if log.exists() else 0
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "celery"),
                "-A",
                "project.celery",
                "worker",
                "--pool",
                pool,
                "--concurrency",
                str(concurrency),
                "--loglevel",
                "INFO",
                "--hostname",
                f"reliability-{uuid.uuid4().hex[:8]}@%h",
                "--without-mingle",
                "--without-gossip",
                *(["--queues", queues] if queues else []),
            ],
            cwd=ROOT,
            env=test_env(**{**overrides, **env}),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def ready():
        if proc.poll() is not None:
            raise AssertionError(f"the worker exited: {log.read_bytes()[log_start:][-3000:]!r}")
        if pool == "prefork":
            return pool_children(proc.pid)
        with open(log, "rb") as text:
            text.seek(log_start)
            return b" ready." in text.read()  # "celery@host ready.", once it consumes

    try:
        wait_for(ready, timeout=30, what="the worker to be ready")
        yield proc
    finally:
        if proc.poll() is None:
            for child in pool_children(proc.pid):
                # A child still busy with a test's task would hold a warm shutdown up.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
            stop_process(proc, timeout=20)


def kill_whole_worker(proc: subprocess.Popen) -> None:
    """SIGKILL the worker and its pool at once: nothing gets to ack, reject or clean up."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


# --- row locks held by the test, and the backends waiting for them ------------------------------------


@contextmanager
def row_lock(table: str, row_id: int):
    """Hold FOR UPDATE on one row from a connection of the test's own, until the block ends."""
    with psycopg.connect(database_url(), autocommit=False) as conn:
        conn.execute(
            psycopg.sql.SQL("SELECT 1 FROM {} WHERE id = %s FOR UPDATE").format(psycopg.sql.Identifier(table)),
            [row_id],
        )
        yield conn
        conn.rollback()


def lock_waiters() -> list[int]:
    """Backends of the test database waiting for a row lock right now."""
    with psycopg.connect(database_url(), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchall()
    return [pid for (pid,) in rows]


def terminate_backends(pids: list[int]) -> None:
    """End the database sessions of a killed process. PostgreSQL would notice the dead client only
    when that backend next writes to it (or by TCP keepalive); ending it now keeps the test exact."""
    with psycopg.connect(database_url(), autocommit=True) as conn:
        for pid in pids:
            conn.execute("SELECT pg_terminate_backend(%s)", [pid])

"""Two web nodes behind Debian's HAProxy, on this run's test database, once per module.

Each node is a gunicorn of this checkout (gunicorn.conf.py, two gthread workers, the psycopg
pool) with its own port, control socket and metrics folder, started in a session of its own so a
test can SIGKILL its master and workers at once and start it again on the same port. Node A
reaches PostgreSQL through a TcpProxy the test can cut (its circuit breaker then opens); node B
directly. HAProxy runs ops/haproxy/stockroom.cfg, the file `make two-nodes` runs, in the
foreground as a child of the test; `X-Stockroom-Node` says which node answered.

The nodes keep their processes (and everything a process remembers) across the module's tests:
each test makes its own SKUs and keys, and the cache is emptied before each (tests/conftest.py).
"""

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis
from django.conf import settings

from tests.reliability.support import database_url
from tests.support import ROOT, TcpProxy, free_port, stop_process, subprocess_env, wait_for

HAPROXY = "/usr/sbin/haproxy"
HAPROXY_CONFIG = ROOT / "ops" / "haproxy" / "stockroom.cfg"
# The production bound of the per-process availability values (the test settings read every time).
AVAILABILITY_MAX_AGE_MS = 1000
CIRCUIT_COOLDOWN_SECONDS = 2
# The `auth` group's budget on the nodes: per client address, shared by both nodes through Redis.
AUTH_BURST = 8


@dataclass
class Node:
    """One gunicorn: `start`, `kill` (SIGKILL, master and workers at once) and `start` again."""

    name: str
    port: int
    folder: Path
    database_url: str
    proc: subprocess.Popen | None = None
    env: dict = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def control_socket(self) -> Path:
        return self.folder / f"{self.name}.ctl"

    @property
    def log(self) -> Path:
        return self.folder / f"{self.name}.log"

    def url(self, path: str) -> str:
        return self.base + path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def start(self) -> None:
        env = {
            "DJANGO_SETTINGS_MODULE": "tests.scale.nodes.node_settings",
            "DATABASE_URL": self.database_url,
            "GUNICORN_BIND": f"127.0.0.1:{self.port}",
            "GUNICORN_CONTROL_SOCKET": str(self.control_socket),
            "PROMETHEUS_MULTIPROC_DIR": str(self.folder / f"prometheus-{self.name}"),
            # The pool sizes of bin/two-nodes: two workers of four threads, a connection per thread.
            "WEB_CONCURRENCY": "2",
            "GUNICORN_THREADS": "4",
            "DB_POOL_MIN_SIZE": "1",
            "DB_POOL_MAX_SIZE": "4",
            "RATELIMIT_TRUSTED_PROXIES": "1",
            "NODE_RATELIMIT_AUTH": f"{AUTH_BURST}/600",
            "CATALOGUE_AVAILABILITY_MAX_AGE_MS": str(AVAILABILITY_MAX_AGE_MS),
            "CIRCUIT_COOLDOWN_SECONDS": str(CIRCUIT_COOLDOWN_SECONDS),
            # A request on the node that lost PostgreSQL waits this long for a connection before its 503.
            "DB_POOL_TIMEOUT": "1",
            # A claim stranded by a killed node frees up soon (clients retry on 409 request_in_flight).
            "IDEMPOTENCY_LEASE_SECONDS": "5",
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
            **self.env,
        }
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"],
                cwd=ROOT,
                env=subprocess_env(**env),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited: {self.log_text()[-3000:]}")
            try:
                return httpx.get(self.url("/healthz"), timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, timeout=30, what=f"{self.name} to answer")

    def kill(self) -> None:
        """SIGKILL the master and its workers at once: nothing finishes a request or says goodbye."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop_process(self.proc, timeout=20)
            with contextlib.suppress(ProcessLookupError):  # a worker left behind by a failed stop
                os.killpg(self.proc.pid, signal.SIGKILL)


@dataclass
class HAProxy:
    port: int
    log: Path
    proc: subprocess.Popen

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base + path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def nodes_answering(self, tries: int = 8) -> set[str]:
        """The nodes that answered `tries` liveness requests (round robin: both, when both are up)."""
        seen = set()
        for _ in range(tries):
            try:
                response = httpx.get(self.url("/healthz"), timeout=2)
            except httpx.HTTPError:
                continue
            if response.status_code == 200:
                seen.add(response.headers["X-Stockroom-Node"])
        return seen


@contextlib.contextmanager
def haproxy(folder: Path, *nodes: Node):
    """ops/haproxy/stockroom.cfg in the foreground on a free port, in front of `nodes` (one or two)."""
    port = free_port()
    env = {"STOCKROOM_LISTEN": f"127.0.0.1:{port}", "STOCKROOM_NODE1": f"127.0.0.1:{nodes[0].port}"}
    if len(nodes) > 1:
        env["STOCKROOM_NODE2"] = f"127.0.0.1:{nodes[1].port}"
    log = folder / f"haproxy-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [HAPROXY, "-db", "-f", str(HAPROXY_CONFIG)],
            cwd=folder,
            env=subprocess_env(**env),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    proxy = HAProxy(port, log, proc)
    names = {f"web{n}" for n in range(1, len(nodes) + 1)}
    try:
        wait_for(lambda: proxy.nodes_answering() == names, timeout=20, what="HAProxy to see every node up")
        yield proxy
    finally:
        stop_process(proc)


@dataclass
class TwoNodes:
    a: Node
    b: Node
    proxy: HAProxy
    db_cut: TcpProxy  # between node A and PostgreSQL


@pytest.fixture(scope="module")
def two_nodes(django_db_setup, django_db_blocker, tmp_path_factory):
    if not os.access(HAPROXY, os.X_OK):
        pytest.fail("HAProxy is missing: `make proxies` installs Debian's")
    folder = tmp_path_factory.mktemp("nodes")
    db_cut = TcpProxy("127.0.0.1", int(settings.DATABASES["default"].get("PORT") or 5432)).start()
    with django_db_blocker.unblock():  # the test database's name is known once it exists
        a = Node("web1", free_port(), folder, database_url(db_cut.port))
        b = Node("web2", free_port(), folder, database_url())
    try:
        a.start()
        b.start()
        with haproxy(folder, a, b) as proxy:
            yield TwoNodes(a, b, proxy, db_cut)
    finally:
        a.stop()
        b.stop()
        db_cut.close()
        forget_rate_limits()


def forget_rate_limits() -> None:
    """Drop the rate-limit buckets the nodes charged. They share the suite's key prefix (its cache
    is emptied between tests), but not its rates: a bucket filled at the nodes' strict `auth` rate
    would still refuse this address's logins and resets in later modules, at any rate."""
    connection = redis.Redis.from_url(settings.RATELIMIT_REDIS_URL)
    try:
        keys = list(connection.scan_iter(f"{settings.CACHE_KEY_PREFIX}:rl:*", count=1000))
        if keys:
            connection.delete(*keys)
    finally:
        connection.close()

"""The psycopg pool's own statistics, as Prometheus metrics of the web processes.

Why not a custom collector that calls `pool.get_stats()` at scrape time: under gunicorn one worker
answers `/metrics` and sums every worker's files, so a collector would only ever see the pool of
the worker that happened to answer. Instead each worker copies its pool's statistics into
multiprocess metrics when a request ends, at most every DB_POOL_STATS_SECONDS (a clock read
otherwise):

- gauges with multiprocess_mode="livesum" (open connections, idle ones, requests waiting, the
  configured maximum): summed over live workers; gunicorn.conf.py's child_exit drops a dead
  worker's files;
- counters for psycopg_pool's cumulative statistics (requests, queued, wait time, timeouts,
  connections opened, lost, failed): the increase since the last copy, so restarts and dead
  workers sum correctly.

A worker that serves no request keeps its last values; with a pool that shrinks only after
`max_idle` (10 minutes by default) the gauges stay close. No database access: the statistics are
psycopg_pool's in-memory counters.
"""

import threading
import time

from django.conf import settings
from django.core.signals import request_finished
from django.db import connections
from prometheus_client import Counter, Gauge

POOL_SIZE = Gauge(
    "stockroom_db_pool_connections",
    "Connections open in the pool (in use and idle)",
    ["alias"],
    multiprocess_mode="livesum",
)
POOL_AVAILABLE = Gauge(
    "stockroom_db_pool_available", "Idle connections ready in the pool", ["alias"], multiprocess_mode="livesum"
)
POOL_MAX = Gauge(
    "stockroom_db_pool_max",
    "Configured maximum connections, summed over processes",
    ["alias"],
    multiprocess_mode="livesum",
)
POOL_WAITING = Gauge(
    "stockroom_db_pool_requests_waiting",
    "Requests waiting for a connection right now",
    ["alias"],
    multiprocess_mode="livesum",
)

# psycopg_pool stats key -> (counter, scale to the metric's unit)
_COUNTERS = {
    "requests_num": (Counter("stockroom_db_pool_requests_total", "Connections asked of the pool", ["alias"]), 1),
    "requests_queued": (
        Counter("stockroom_db_pool_requests_queued_total", "Requests that had to wait for a connection", ["alias"]),
        1,
    ),
    "requests_wait_ms": (
        Counter("stockroom_db_pool_wait_seconds_total", "Time spent waiting for a connection", ["alias"]),
        0.001,
    ),
    "requests_errors": (
        Counter(
            "stockroom_db_pool_request_errors_total",
            "Requests refused: pool timeout (DB_POOL_TIMEOUT) or full queue",
            ["alias"],
        ),
        1,
    ),
    "usage_ms": (
        Counter("stockroom_db_pool_usage_seconds_total", "Time connections were lent out", ["alias"]),
        0.001,
    ),
    "connections_num": (
        Counter("stockroom_db_pool_connections_opened_total", "Connections opened to PostgreSQL", ["alias"]),
        1,
    ),
    "connections_errors": (
        Counter("stockroom_db_pool_connection_errors_total", "Failed attempts to open a connection", ["alias"]),
        1,
    ),
    "connections_lost": (
        Counter("stockroom_db_pool_connections_lost_total", "Connections found broken and dropped", ["alias"]),
        1,
    ),
    "returns_bad": (
        Counter("stockroom_db_pool_returns_bad_total", "Connections returned in a bad state and discarded", ["alias"]),
        1,
    ),
}


class PoolStatsCopier:
    """Copies each pooled alias's statistics into the metrics, at most every `interval` seconds."""

    def __init__(self, interval: float):
        self.interval = interval
        self._next = 0.0
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], int] = {}

    def maybe_copy(self) -> None:
        now = time.monotonic()
        if now < self._next or not self._lock.acquire(blocking=False):
            return  # another thread of this worker is copying; its values will do
        try:
            self._next = now + self.interval
            self.copy()
        finally:
            self._lock.release()

    def copy(self) -> None:
        for alias in connections:
            # Our backend's (project.db.backend): reading it never creates or opens a pool.
            pool = connections[alias].opened_pool() if _pooled(alias) else None
            if pool is None:
                continue
            try:
                stats = pool.get_stats()
            except RuntimeError:  # the stats dict changed under the copy (another thread); next time
                continue
            POOL_SIZE.labels(alias=alias).set(stats.get("pool_size", 0))
            POOL_AVAILABLE.labels(alias=alias).set(stats.get("pool_available", 0))
            POOL_MAX.labels(alias=alias).set(stats.get("pool_max", 0))
            POOL_WAITING.labels(alias=alias).set(stats.get("requests_waiting", 0))
            for key, (counter, scale) in _COUNTERS.items():
                value = stats.get(key, 0)
                delta = value - self._seen.get((alias, key), 0)
                child = counter.labels(alias=alias)  # the series exists from the first copy, even at 0
                if delta > 0:
                    child.inc(delta * scale)
                self._seen[(alias, key)] = value


def _pooled(alias: str) -> bool:
    return bool(connections.settings[alias].get("OPTIONS", {}).get("pool"))


_copier: PoolStatsCopier | None = None


def _after_request(**kwargs) -> None:
    if _copier is not None:
        _copier.maybe_copy()


def install() -> None:
    """Copy pool statistics at the end of requests in this process (web processes; a process
    without a pool, like a worker with DB_POOL=0, has nothing to copy and skips at once)."""
    global _copier
    if not any(_pooled(alias) for alias in connections):
        return
    _copier = PoolStatsCopier(settings.DB_POOL_STATS_SECONDS)
    request_finished.connect(_after_request, dispatch_uid="stockroom.db_pool_metrics")

"""Run real threads against real PostgreSQL, lined up on a barrier, and watch for lock waits."""

import threading
import time
from collections.abc import Callable

from django.db import connection

from project.observability.metrics import LOCK_RETRIES

WAITING_LOCKS_SQL = """
SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
 WHERE NOT l.granted AND a.datname = current_database()
"""


class LockWaitWatcher:
    """Polls pg_locks from its own connection; `waits` counts samples with a blocked backend."""

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.waits = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        try:
            with connection.cursor() as cursor:
                while not self._stop.is_set():
                    cursor.execute(WAITING_LOCKS_SQL)
                    if cursor.fetchone()[0]:
                        self.waits += 1
                    time.sleep(self.interval)
        finally:
            connection.close()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)


def total_retries() -> float:
    return sum(
        sample.value for metric in LOCK_RETRIES.collect() for sample in metric.samples if sample.name.endswith("_total")
    )


def run_concurrently(worker: Callable[[int], object], count: int, *, timeout: float = 60) -> list:
    """Start `count` threads that wait on one barrier, run worker(i), and return results or exceptions."""
    barrier = threading.Barrier(count)
    results: list = [None] * count

    def run(i: int):
        try:
            barrier.wait(timeout=timeout)
            results[i] = worker(i)
        except Exception as exc:  # the test inspects every outcome, failures included
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    assert not any(thread.is_alive() for thread in threads), "a worker thread hung"
    return results

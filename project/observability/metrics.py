"""The platform's metrics (Prometheus): lock retries and waits, slow statements, Celery tasks.
docs/operating.md lists every metric, the apps' own included.

Every metric is an ordinary prometheus_client metric, so it works in each kind of process:

- web (gunicorn): multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set by gunicorn.conf.py); `/metrics`
  sums the files of every worker;
- Celery worker: prefork children write to the worker's own multiprocess folder (bin/worker sets
  it); the main process serves them on WORKER_METRICS_PORT (project.observability.tasks);
- outbox relay: one process, its own registry, served on RELAY_METRICS_PORT (project.outbox.metrics).

Each app defines its own metrics in `<app>/metrics.py` and creates their known label values in its
`AppConfig.ready()`; the platform creates its own in ProjectConfig.ready(). So a series exists with
0 before its first event: a rate() over it works, and an alert on it is not silently empty.

No metric is read from the database at scrape time: the pool's statistics are copied into
gauges when requests end (project.observability.pool), the outbox backlog is measured by the relay
on a timer and cached there (project.outbox.metrics). A scrape never waits for PostgreSQL.
"""

from collections.abc import Iterable

from prometheus_client import Counter, Histogram

# --- locks ---------------------------------------------------------------------------------------

LOCK_RETRY_CAUSES = ("LockNotAvailable", "DeadlockDetected", "Retry")  # project.db.transactions.retry_cause
LOCK_RETRIES = Counter(
    "stockroom_lock_retries_total",
    "Services re-run after a lock timeout, deadlock or a changed read",
    ["service", "cause"],
)
LOCK_WAIT_SECONDS = Histogram(
    "stockroom_lock_wait_seconds",
    "Duration of statements that take row or advisory locks and may wait for them, by table and kind "
    "(select_for_update without SKIP LOCKED/NOWAIT, update, advisory, function: a locking SQL function such as "
    "orders_place_order). A single-row statement's time is almost all waiting; a batch UPDATE's or a "
    "function's includes its work.",
    ["table", "kind"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
SLOW_QUERIES = Counter(
    "stockroom_slow_queries_total", "Statements slower than SLOW_QUERY_MS (each is logged)", ["alias"]
)

# --- Celery tasks (project.observability.tasks feeds these from Celery's signals) ------------------

TASK_RUNS = Counter(
    "stockroom_task_runs_total",
    "Task runs finished, by task and Celery state (success, failure, retry, ...)",
    ["task", "state"],
)
TASK_FAILURES = Counter("stockroom_task_failures_total", "Task runs that raised, by task", ["task"])
TASK_SECONDS = Histogram(
    "stockroom_task_duration_seconds",
    "Task run time (task_prerun to task_postrun), by task",
    ["task"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
)


def record_retry(service: str, cause: str) -> None:
    LOCK_RETRIES.labels(service=service, cause=cause).inc()


def initialise_retry_series(services: Iterable[str]) -> None:
    """A zero series per cause for each service an app wants watched from the first scrape."""
    for service in services:
        for cause in LOCK_RETRY_CAUSES:
            LOCK_RETRIES.labels(service=service, cause=cause)


def initialise_series() -> None:
    """The platform's own label values known at start-up (ProjectConfig.ready)."""
    SLOW_QUERIES.labels(alias="default")


def initialise_task_series(task_names: Iterable[str]) -> None:
    """A zero series per registered task (the worker calls this at start)."""
    for name in task_names:
        TASK_RUNS.labels(task=name, state="success")
        TASK_FAILURES.labels(task=name)
        TASK_SECONDS.labels(task=name)

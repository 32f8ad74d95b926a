"""Celery task metrics (runs, failures, durations by task) and the worker's own metrics port.

Connected when this module is imported (project.celery imports it). The receivers run in the
process that runs the task: a prefork child, the solo pool's only process, or a test's in-thread worker.

Prefork children each count their own tasks, so a Celery worker runs in prometheus_client's
multiprocess mode: bin/worker points PROMETHEUS_MULTIPROC_DIR at a folder of its own (one per
worker instance, next to its WORKER_METRICS_PORT), and the main process serves the sum of every
child's files on WORKER_METRICS_PORT (0 turns the server off). At start the main process deletes
files other processes left there, so a restarted worker starts from zero like any process. A
worker without PROMETHEUS_MULTIPROC_DIR (celery started by hand) serves its main process only:
with the prefork pool that misses every task, and it says so in its log.
"""

import logging
import os
import time
from pathlib import Path

from celery import signals
from celery.apps.worker import Worker as CeleryWorkerCommand
from django.conf import settings
from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
from prometheus_client import multiprocess as prometheus_multiprocess

from project.observability.metrics import TASK_FAILURES, TASK_RUNS, TASK_SECONDS, initialise_task_series

logger = logging.getLogger("stockroom.metrics")

_started: dict[str, float] = {}  # task id -> perf_counter at prerun; a child runs one task at a time
_server = None


@signals.task_prerun.connect(dispatch_uid="stockroom.task_metrics.prerun")
def _task_started(task_id=None, **kwargs):
    if task_id is not None:
        _started[task_id] = time.perf_counter()


@signals.task_postrun.connect(dispatch_uid="stockroom.task_metrics.postrun")
def _task_finished(task_id=None, task=None, state=None, **kwargs):
    started = _started.pop(task_id, None)
    name = getattr(task, "name", None) or "unknown"
    TASK_RUNS.labels(task=name, state=(state or "unknown").lower()).inc()
    if started is not None:
        TASK_SECONDS.labels(task=name).observe(time.perf_counter() - started)


@signals.task_failure.connect(dispatch_uid="stockroom.task_metrics.failure")
def _task_failed(sender=None, **kwargs):
    TASK_FAILURES.labels(task=getattr(sender, "name", None) or "unknown").inc()


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def metrics_registry() -> CollectorRegistry:
    """The registry a metrics port serves: every process's files in multiprocess mode, else this process."""
    folder = multiprocess_dir()
    if folder is None:
        return REGISTRY
    registry = CollectorRegistry()
    prometheus_multiprocess.MultiProcessCollector(registry, path=folder)
    return registry


def forget_other_processes(folder: str) -> None:
    """Delete metric files of processes other than this one (a previous run's children)."""
    mine = f"_{os.getpid()}.db"
    for path in Path(folder).glob("*.db"):
        if not path.name.endswith(mine):
            path.unlink(missing_ok=True)


def serve_metrics(*, port: int, addr: str, what: str, registry: CollectorRegistry | None = None):
    """Start the metrics HTTP server thread; a busy port is logged, never fatal to the process."""
    if not port:
        return None
    try:
        server, _ = start_http_server(port, addr=addr, registry=registry or metrics_registry())
    except OSError as exc:
        logger.warning("%s metrics not served: cannot listen on %s:%s (%s)", what, addr, port, exc)
        return None
    logger.info("%s metrics on http://%s:%s/metrics", what, addr, port, extra={"metrics_port": port})
    return server


@signals.worker_init.connect(dispatch_uid="stockroom.task_metrics.worker_init")
def _worker_started(sender=None, **kwargs):
    global _server
    folder = multiprocess_dir()
    if folder is not None:
        forget_other_processes(folder)
    elif "prefork" in str(getattr(sender, "pool_cls", "")).lower():  # a name or a class, before bootsteps
        logger.warning("PROMETHEUS_MULTIPROC_DIR is not set: the prefork children's task metrics are not served")
    # The worker's own app (the sender of worker_init is the worker): the platform imports no wiring.
    initialise_task_series(name for name in sender.app.tasks if not name.startswith("celery."))
    # Only the `celery worker` command serves: a worker embedded in another process (the tests'
    # in-thread workers) records its tasks in that process's registry and opens no port.
    if isinstance(sender, CeleryWorkerCommand):
        _server = serve_metrics(port=settings.WORKER_METRICS_PORT, addr=settings.METRICS_BIND_ADDRESS, what="worker")


@signals.worker_shutdown.connect(dispatch_uid="stockroom.task_metrics.worker_shutdown")
def _worker_stopped(**kwargs):
    global _server
    if _server is not None:
        _server.shutdown()
        _server.server_close()
        _server = None


@signals.worker_process_shutdown.connect(dispatch_uid="stockroom.task_metrics.child_shutdown")
def _child_stopped(pid=None, **kwargs):
    # Live gauges of a child that is gone must stop being summed (counters stay, as they should).
    folder = multiprocess_dir()
    if folder is not None:
        prometheus_multiprocess.mark_process_dead(pid or os.getpid(), folder)

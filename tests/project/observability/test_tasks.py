"""Task metrics from Celery's signals, on a real (in-thread) worker; the worker's metrics port."""

import os
import socket

import pytest
from celery.contrib.testing.worker import start_worker
from prometheus_client import REGISTRY

from project.celery import app
from project.observability.tasks import forget_other_processes, serve_metrics
from tests.support import wait_for

SUCCEEDS = "tests.observability.succeeds"
FAILS = "tests.observability.fails"


@app.task(name=SUCCEEDS)
def succeeds() -> int:
    return 1


@app.task(name=FAILS)
def fails() -> None:
    raise ValueError("this task always fails")


def sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def celery_worker(transactional_db):
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10, loglevel="WARNING") as worker:
        yield worker


def test_runs_failures_and_durations_are_counted_by_task(celery_worker):
    before = {
        "ok": sample("stockroom_task_runs_total", task=SUCCEEDS, state="success"),
        "failed": sample("stockroom_task_runs_total", task=FAILS, state="failure"),
        "failures": sample("stockroom_task_failures_total", task=FAILS),
        "timed": sample("stockroom_task_duration_seconds_count", task=SUCCEEDS),
    }

    succeeds.delay()
    succeeds.delay()
    fails.delay()

    wait_for(
        lambda: (
            sample("stockroom_task_runs_total", task=SUCCEEDS, state="success") - before["ok"] == 2
            and sample("stockroom_task_runs_total", task=FAILS, state="failure") - before["failed"] == 1
        ),
        timeout=20,
        what="three task runs",
    )
    assert sample("stockroom_task_failures_total", task=FAILS) - before["failures"] == 1
    assert sample("stockroom_task_failures_total", task=SUCCEEDS) == 0
    assert sample("stockroom_task_duration_seconds_count", task=SUCCEEDS) - before["timed"] == 2


def test_registered_tasks_have_a_series_from_the_worker_start(celery_worker):
    assert (
        REGISTRY.get_sample_value("stockroom_task_runs_total", {"task": "orders.send_order_email", "state": "success"})
        is not None
    )
    assert (
        REGISTRY.get_sample_value("stockroom_task_failures_total", {"task": "orders.expire_reservations"}) is not None
    )


def test_a_restarted_worker_forgets_files_of_earlier_processes(tmp_path):
    mine = tmp_path / f"counter_{os.getpid()}.db"
    earlier = [tmp_path / "counter_1.db", tmp_path / f"histogram_{os.getpid()}1.db", tmp_path / "gauge_livesum_7.db"]
    for path in [mine, *earlier]:
        path.write_bytes(b"")

    forget_other_processes(str(tmp_path))

    assert sorted(tmp_path.iterdir()) == [mine]


def test_a_busy_metrics_port_is_logged_not_fatal(caplog):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]

        assert serve_metrics(port=port, addr="127.0.0.1", what="test") is None

    assert any("cannot listen" in record.getMessage() for record in caplog.records)
    assert serve_metrics(port=0, addr="127.0.0.1", what="test") is None  # 0: off

"""Helpers for the stock import tests: CSV files, uploads, waiting for a job, a worker subprocess."""

import os
import signal
import subprocess
import sys
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path

from celery.contrib.testing.worker import start_worker
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection

from inventory.models import ImportJob
from project.celery import app
from tests.project.outbox.support import RelayThread
from tests.support import ROOT, stop_process, subprocess_env, wait_for

HEADER = "sku,warehouse,on_hand"


@contextmanager
def running_import_worker():
    """The real outbox relay and a real Celery worker (solo pool), both in threads, on the test
    broker DB and queue: an upload's task goes out through the outbox like in production."""
    app.control.purge()
    with (
        start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=30, loglevel="WARNING") as worker,
        RelayThread() as relay,
    ):
        yield worker
    assert relay.error is None


def csv_bytes(rows: Iterable[str], header: str = HEADER) -> bytes:
    return ("\n".join([header, *rows]) + "\n").encode()


def csv_upload(data: bytes, name: str = "stock.csv") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="text/csv")


def post_import(client, data: bytes, name: str = "stock.csv") -> int:
    response = client.post("/api/v1/imports", {"file": csv_upload(data, name)}, format="multipart")
    assert response.status_code == 202, response.content
    return response.json()["id"]


def wait_finished(import_id: int, *, timeout: float = 60) -> ImportJob:
    return wait_for(
        lambda: ImportJob.objects.filter(pk=import_id, status__in=ImportJob.FINISHED).first(),
        timeout=timeout,
        what=f"import {import_id} to finish",
    )


def pool_children(pid: int) -> list[int]:
    """The prefork pool's processes: the worker's direct children."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in children.read_text().split()] if children.exists() else []


@contextmanager
def worker_process(*, media_root: Path, concurrency: int = 1, log_path: Path, **env: str):
    """A real `celery -A project.celery worker --pool prefork` on the test database, queue and media folder."""
    overrides = {
        "DJANGO_SETTINGS_MODULE": "project.settings.test",
        "DATABASE_URL": f"postgres://{connection.settings_dict['USER']}@{connection.settings_dict['HOST']}:"
        f"{connection.settings_dict['PORT']}/{connection.settings_dict['NAME']}",
        "DB_POOL": "0",
        "MEDIA_ROOT": str(media_root),
        **env,
    }
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "celery"),
                "-A",
                "project.celery",
                "worker",
                "--pool",
                "prefork",
                "--concurrency",
                str(concurrency),
                "--loglevel",
                "INFO",
                "--hostname",
                f"import-test-{os.getpid()}@%h",
                "--without-mingle",
                "--without-gossip",
            ],
            cwd=ROOT,
            env=subprocess_env(**overrides),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(lambda: len(pool_children(proc.pid)) >= concurrency, timeout=30, what="the worker's pool")
            yield proc
        finally:
            for child in pool_children(proc.pid):
                # Children still busy with a test's import would hold the warm shutdown up.
                os.kill(child, signal.SIGKILL)
            stop_process(proc, timeout=20)

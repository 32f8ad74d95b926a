"""Housekeeping: uploaded import files, expired sessions, and the schedules that clean them."""

import os
import time
from datetime import timedelta

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.core.files.base import ContentFile
from django.db import connection
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from inventory import imports
from inventory.imports import apply, run, stage
from inventory.models import ImportJob, Product
from inventory.services import import_files_prune
from inventory.tasks import prune_import_files
from project.celery import app
from project.schedules import SCHEDULES, schedules_ensure
from project.tasks import clear_sessions
from tests.factories import WarehouseFactory
from tests.inventory.import_support import csv_bytes

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.IMPORT_CHUNK_ROWS = 10
    return settings.MEDIA_ROOT


@pytest.fixture
def catalogue(media):
    WarehouseFactory(code="MAIN")
    Product.objects.bulk_create([Product(sku=f"P{n:03d}", name="p", price=1) for n in range(25)])
    return [f"P{n:03d},MAIN,{n + 1}" for n in range(25)]


def new_job(data: bytes) -> ImportJob:
    job = ImportJob(original_name="stock.csv")
    job.file.save("stock.csv", ContentFile(data), save=False)
    job.save()
    return job


def file_path(job: ImportJob):
    return job.file.storage.path(job.file.name)


def age(path, *, days: float) -> None:
    stamp = time.time() - days * 86_400
    os.utime(path, (stamp, stamp))


# --- uploaded import files ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "status"), [((), "succeeded"), (("P000,MAIN,x",), "partial"), (("NOPE,MAIN,1",), "failed")]
)
def test_an_import_file_is_deleted_once_the_import_finishes(catalogue, rows, status):
    rows = [*catalogue[:3], *rows] if status != "failed" else list(rows)
    job = new_job(csv_bytes(rows))
    path = file_path(job)
    assert os.path.exists(path)

    job = imports.import_run(import_id=job.pk)

    assert job.status == status
    assert not os.path.exists(path)


def test_a_refused_or_stopped_import_has_its_file_deleted(catalogue):
    empty = new_job(b"")
    stopped = new_job(csv_bytes(catalogue))
    stage.stage_file(stopped.pk)

    imports.import_run(import_id=empty.pk)
    imports.import_fail(import_id=stopped.pk, message="Stopped by staff.")

    assert ImportJob.objects.get(pk=empty.pk).status == "failed"
    assert not os.path.exists(file_path(empty))
    assert not os.path.exists(file_path(stopped))


def test_an_import_resumed_after_a_crash_still_reads_its_file_until_it_finishes(catalogue):
    job = new_job(csv_bytes(catalogue))
    stage.stage_file(job.pk)
    run.claim_warehouses(job.pk)
    assert apply.apply_next_chunk(job.pk)
    # The worker dies here, and a database crash empties the UNLOGGED staging table: the retried
    # task must stage the file again.
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM inventory_importrow WHERE import_id = %s", [job.pk])
    assert os.path.exists(file_path(job))

    job = imports.import_run(import_id=job.pk)

    assert (job.status, job.rows_ok) == ("succeeded", 25)
    assert not os.path.exists(file_path(job))


def test_leftover_import_files_older_than_the_setting_are_pruned_but_not_an_unfinished_imports(catalogue, settings):
    settings.IMPORT_FILES_KEEP_DAYS = 3
    queued = new_job(csv_bytes(catalogue))  # an import still waiting, for days
    finished = new_job(csv_bytes(catalogue))  # a crash between its finish and its file's deletion
    ImportJob.objects.filter(pk=finished.pk).update(status="succeeded", finished_at=timezone.now())
    storage = queued.file.storage
    orphan = storage.save("imports/orphan.csv", ContentFile(b"sku,warehouse,on_hand\n"))  # its job never saved
    recent = storage.save("imports/recent.csv", ContentFile(b"sku,warehouse,on_hand\n"))
    for name in (queued.file.name, finished.file.name, orphan):
        age(storage.path(name), days=4)
    age(storage.path(recent), days=2)

    assert prune_import_files() == 2  # the scheduled task, with IMPORT_FILES_KEEP_DAYS

    assert sorted(storage.listdir("imports")[1]) == sorted(
        os.path.basename(name) for name in (queued.file.name, recent)
    )
    assert import_files_prune(older_than_days=1) == 1  # recent
    assert import_files_prune(older_than_days=1) == 0


def test_pruning_import_files_without_a_folder_or_with_a_bad_age_does_nothing(media):
    assert import_files_prune(older_than_days=1) == 0
    assert prune_import_files(older_than_days=0) == 0


# --- sessions ------------------------------------------------------------------------------------


def test_expired_sessions_are_cleared(db):
    expired, live = SessionStore(), SessionStore()
    expired["cart"] = live["cart"] = {"1": 2}
    expired.create()
    live.create()
    Session.objects.filter(session_key=expired.session_key).update(expire_date=timezone.now() - timedelta(days=1))

    clear_sessions()

    assert list(Session.objects.values_list("session_key", flat=True)) == [live.session_key]


# --- schedules -----------------------------------------------------------------------------------


def test_sessions_and_import_files_are_cleaned_on_a_schedule_by_registered_tasks(db):
    schedules_ensure()

    scheduled = set(PeriodicTask.objects.values_list("task", flat=True))
    assert {"project.clear_sessions", "inventory.prune_import_files"} <= scheduled
    app.loader.import_default_modules()
    assert {task for task, *_ in SCHEDULES.values()} <= set(app.tasks)

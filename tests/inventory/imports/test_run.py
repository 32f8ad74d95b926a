"""Resuming an import: the service run again after each kind of interruption, on real PostgreSQL.

(The end-to-end crash, a worker's child killed mid-import, is in tests/inventory/test_import_crash.py.)
"""

import threading

import pytest
from django.core.files.base import ContentFile
from django.db import connection, transaction

from inventory import imports
from inventory.imports import apply, run, stage
from inventory.models import ImportJob, Product, StockLevel, StockMovement
from tests.factories import WarehouseFactory
from tests.invariants import assert_ledger_invariants
from tests.inventory.import_support import csv_bytes

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.IMPORT_CHUNK_ROWS = 10
    return settings.MEDIA_ROOT


def new_job(rows: list[str]) -> ImportJob:
    job = ImportJob(original_name="stock.csv")
    job.file.save("stock.csv", ContentFile(csv_bytes(rows)), save=False)
    job.save()
    return job


def staging_rows(import_id: int) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM inventory_importrow WHERE import_id = %s", [import_id])
        return cursor.fetchone()[0]


@pytest.fixture
def catalogue(media):
    WarehouseFactory(code="MAIN")
    Product.objects.bulk_create([Product(sku=f"P{n:03d}", name="p", price=1) for n in range(45)])
    return [f"P{n:03d},MAIN,{n + 1}" for n in range(45)]


def test_a_run_stopped_between_chunks_resumes_at_the_next_chunk(catalogue):
    job = new_job([*catalogue[:20], "BAD,MAIN,x", *catalogue[20:]])
    stage.stage_file(job.pk)
    run.claim_warehouses(job.pk)
    assert apply.apply_next_chunk(job.pk) and apply.apply_next_chunk(job.pk)
    # ... the worker dies here; the task runs again:
    job = imports.import_run(import_id=job.pk)

    assert (job.status, job.rows_total, job.rows_done, job.rows_ok, job.rows_failed) == ("partial", 46, 46, 45, 1)
    assert job.errors == [{"line": 22, "message": "on_hand 'x' is not a whole number from 0 to 1000000000."}]
    assert (job.chunks_applied, job.chunks_total) == (5, 5)
    assert StockMovement.objects.filter(reference=f"import:{job.pk}").count() == 45
    assert sum(StockLevel.objects.values_list("on_hand", flat=True)) == sum(range(1, 46))
    assert staging_rows(job.pk) == 0
    assert_ledger_invariants()


def test_staging_emptied_by_a_database_crash_is_rebuilt_from_the_file_and_applied_chunks_are_skipped(catalogue):
    job = new_job(catalogue)
    stage.stage_file(job.pk)
    run.claim_warehouses(job.pk)
    assert apply.apply_next_chunk(job.pk)
    with connection.cursor() as cursor:  # what a PostgreSQL crash does to an UNLOGGED table
        cursor.execute("DELETE FROM inventory_importrow WHERE import_id = %s", [job.pk])

    job = imports.import_run(import_id=job.pk)

    assert (job.status, job.rows_done, job.rows_ok, job.chunks_applied) == ("succeeded", 45, 45, 5)
    assert StockMovement.objects.filter(reference=f"import:{job.pk}").count() == 45
    assert_ledger_invariants()


def test_a_second_run_while_the_first_holds_the_job_is_told_to_wait_and_changes_nothing(catalogue):
    job = new_job(catalogue)
    holding, release = threading.Event(), threading.Event()

    def first_run():
        try:
            with transaction.atomic():
                ImportJob.objects.select_for_update().get(pk=job.pk)
                holding.set()
                release.wait(10)
        finally:
            connection.close()

    thread = threading.Thread(target=first_run)
    thread.start()
    try:
        assert holding.wait(10)
        with pytest.raises(imports.ImportBusy):
            imports.import_run(import_id=job.pk)
    finally:
        release.set()
        thread.join(10)
    assert staging_rows(job.pk) == 0 and not StockLevel.objects.exists()
    assert imports.import_run(import_id=job.pk).status == "succeeded"
    assert imports.import_run(import_id=job.pk).attempts == 1  # neither the busy run nor this one counted


def test_a_stopped_import_applies_no_further_chunk(catalogue):
    job = new_job(catalogue)
    stage.stage_file(job.pk)
    run.claim_warehouses(job.pk)
    assert apply.apply_next_chunk(job.pk)
    imports.import_fail(import_id=job.pk, message="Stopped by staff.")

    assert not apply.apply_next_chunk(job.pk)
    job.refresh_from_db()
    assert (job.status, job.rows_done, job.chunks_applied) == ("failed", 9, 1)  # lines 2..10
    assert StockLevel.objects.count() == 9
    assert staging_rows(job.pk) == 0
    assert_ledger_invariants()

"""Stock imports on a real prefork worker in its own process: killed mid-import, and two at once."""

import os
import signal

import pytest

from inventory.imports import import_reference
from inventory.models import ImportJob, ImportWarehouse, Product, StockLevel, StockMovement
from project.celery import app
from tests.factories import WarehouseFactory
from tests.invariants import assert_ledger_invariants
from tests.inventory.import_support import csv_bytes, pool_children, post_import, wait_finished, worker_process
from tests.project.outbox.support import RelayThread
from tests.support import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def media(settings, tmp_path):
    """Uploads go to a folder of this test's own, which the worker process is pointed at too."""
    settings.MEDIA_ROOT = tmp_path / "media"
    app.control.purge()
    return settings.MEDIA_ROOT


def products(count: int) -> list[str]:
    skus = [f"P{n:05d}" for n in range(count)]
    Product.objects.bulk_create([Product(sku=sku, name=sku, price=1) for sku in skus])
    return skus


def test_a_worker_child_killed_mid_import_resumes_without_applying_a_chunk_twice(staff_client, media, tmp_path):
    WarehouseFactory(code="MAIN")
    skus = products(3000)
    rows = [f"{sku},MAIN,{n % 20 + 1}" for n, sku in enumerate(skus)]
    log = tmp_path / "worker.log"
    # Small chunks with a pause between them: the import is still running when the child is killed.
    with (
        RelayThread(),
        worker_process(media_root=media, log_path=log, IMPORT_CHUNK_ROWS="50", IMPORT_CHUNK_PAUSE_MS="40") as worker,
    ):
        import_id = post_import(staff_client, csv_bytes(rows))
        job = wait_for(
            lambda: ImportJob.objects.filter(pk=import_id, rows_done__gt=0).first(),
            timeout=60,
            what="the first chunks to be applied",
        )
        assert job.rows_done < 3000, "the import finished before the kill"
        (child,) = pool_children(worker.pid)
        os.kill(child, signal.SIGKILL)

        job = wait_finished(import_id, timeout=120)

    assert job.status == "succeeded", (job.errors, log.read_text()[-3000:])
    assert job.attempts >= 2  # it ran again after the kill
    assert (job.rows_total, job.rows_done, job.rows_ok, job.rows_failed) == (3000, 3000, 3000, 0)
    assert job.chunks_applied == job.chunks_total == 61  # lines 2..3001 in chunks of 50 lines
    moved = StockMovement.objects.filter(reference=import_reference(import_id))
    assert moved.count() == 3000  # one ledger row per level: no chunk applied twice
    assert sum(moved.values_list("delta_on_hand", flat=True)) == sum(n % 20 + 1 for n in range(3000))
    assert sum(StockLevel.objects.values_list("on_hand", flat=True)) == sum(n % 20 + 1 for n in range(3000))
    assert "exited with 'signal 9 (SIGKILL)'" in log.read_text()
    assert not ImportWarehouse.objects.filter(running=True).exists()
    assert_ledger_invariants()


def test_two_imports_of_one_warehouse_at_once_run_one_after_the_other(staff_client, media, tmp_path):
    WarehouseFactory(code="MAIN")
    WarehouseFactory(code="EAST")
    skus = products(400)
    log = tmp_path / "worker.log"
    with (
        RelayThread(),
        worker_process(
            media_root=media, log_path=log, concurrency=2, IMPORT_CHUNK_ROWS="20", IMPORT_CHUNK_PAUSE_MS="20"
        ),
    ):
        first = post_import(staff_client, csv_bytes(f"{sku},MAIN,10" for sku in skus))
        second = post_import(staff_client, csv_bytes([*(f"{sku},MAIN,20" for sku in skus), f"{skus[0]},EAST,5"]))
        jobs = [wait_finished(first, timeout=120), wait_finished(second, timeout=120)]

    assert [job.status for job in jobs] == ["succeeded", "succeeded"], log.read_text()[-3000:]
    assert "waits for MAIN (import " in log.read_text(), "the imports never overlapped"
    spans = {}
    for job in jobs:
        ids = StockMovement.objects.filter(reference=import_reference(job.pk)).values_list("id", flat=True)
        spans[job.pk] = (min(ids), max(ids))
    earlier, later = sorted(spans.values())
    assert earlier[1] < later[0], f"the imports' chunks interleaved: {spans}"
    # Whichever ran last set MAIN: every level holds its value, with exact ledger sums.
    last = first if spans[first] == later else second
    expected = 10 if last == first else 20
    assert set(StockLevel.objects.filter(warehouse__code="MAIN").values_list("on_hand", flat=True)) == {expected}
    assert not ImportWarehouse.objects.filter(running=True).exists()
    assert set(ImportWarehouse.objects.filter(job_id=second).values_list("warehouse__code", flat=True)) == {
        "MAIN",
        "EAST",
    }
    assert_ledger_invariants()

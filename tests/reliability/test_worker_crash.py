"""Workers killed mid-job: a pool child during a bulk fulfilment, and a whole worker during a stock
import with a short visibility timeout. Once the task runs again, nothing is lost or done twice.

Each job is stopped at a known point without any timing: the test holds a row lock on a stock level
a later chunk needs, waits until the worker's transaction is queued behind it (pg_stat_activity),
and kills then; the chunks before it are committed, the one waiting dies with its process. The
killed process's database session is ended too (PostgreSQL would notice the dead client only
once that session next writes to it), then the lock is released.

(A pool child killed mid-import is tests/inventory/test_import_crash.py.)
"""

import os
import re
import signal

import pytest
from django.conf import settings as django_settings
from django.core.files.uploadedfile import SimpleUploadedFile

from inventory import services as stock
from inventory.imports import import_create, import_reference
from inventory.models import ImportJob, ImportWarehouse, StockLevel, StockMovement
from orders import jobs
from orders import services as order_services
from orders.api import render_order
from orders.models import Allocation, BulkFulfilment, Order
from project.celery import app
from tests.factories import ProductFactory, UserFactory, WarehouseFactory
from tests.invariants import assert_stock_invariants
from tests.orders.conftest import ADDRESS
from tests.project.outbox.support import RelayThread
from tests.reliability.support import (
    celery_worker,
    kill_whole_worker,
    lock_waiters,
    pool_children,
    row_lock,
    terminate_backends,
)
from tests.support import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.timeout(180)]

WORKER = {
    "DJANGO_SETTINGS_MODULE": "tests.reliability.worker_settings",
    # The worker waits for the test's row lock instead of giving up after the web's 3 s.
    "DB_LOCK_TIMEOUT_MS": "60000",
}


@pytest.fixture(autouse=True)
def empty_queue():
    app.control.purge()  # this run's queue only (TEST_RUN_ID)


def level(sku: str) -> StockLevel:
    return StockLevel.objects.get(product__sku=sku, warehouse__code="MAIN")


def paid_orders(sku: str, count: int) -> list[int]:
    user = UserFactory()
    ids = []
    for n in range(count):
        placed = order_services.order_place(
            user=user,
            lines=[order_services.OrderLineRequest(sku, 1 + n % 2)],
            shipping_address=ADDRESS,
            render=render_order,
            idempotency_key=f"{sku}-{n}",
            fingerprint=f"{sku}-{n}",
        )
        order = Order.objects.get(number=placed.body["number"])
        order_services.order_pay(order_id=order.pk)
        ids.append(order.pk)
    return ids


def test_a_pool_child_killed_mid_bulk_fulfilment_fulfils_each_order_once_when_the_task_runs_again(tmp_path):
    WarehouseFactory(code="MAIN")
    for sku in ("EARLY", "LATE"):
        ProductFactory(sku=sku)
        stock.stock_receive(sku=sku, warehouse_code="MAIN", quantity=100)
    early = paid_orders("EARLY", 20)  # lower ids: the first four chunks of five
    late = paid_orders("LATE", 20)
    units = {
        sku: sum(a.quantity for a in Allocation.objects.filter(line__product__sku=sku)) for sku in ("EARLY", "LATE")
    }
    log = tmp_path / "worker.log"

    with RelayThread() as relay, celery_worker(log, BULK_FULFIL_CHUNK_SIZE="5", **WORKER) as worker:
        with row_lock("inventory_stocklevel", level("LATE").pk):
            run = jobs.bulk_fulfilment_request(order_ids=early + late)
            # The fifth chunk (LATE's orders) is queued behind the test's lock on LATE's level.
            wait_for(lock_waiters, timeout=60, what="the fifth chunk to wait for the level lock")
            waiting = lock_waiters()
            run.refresh_from_db()
            assert sorted(run.fulfilled) == early, "the chunks before the lock were not all committed"
            (child,) = pool_children(worker.pid)
            os.kill(child, signal.SIGKILL)
            terminate_backends(waiting)
        run = wait_for(
            lambda: BulkFulfilment.objects.filter(pk=run.pk, state=BulkFulfilment.State.DONE).first(),
            timeout=90,
            what="the bulk fulfilment to run again and finish",
        )
    assert relay.error is None

    text = log.read_text()
    assert "exited with 'signal 9 (SIGKILL)'" in text, text[-3000:]
    assert len(re.findall(r"Task orders\.bulk_fulfil\[[-0-9a-f]+\] received", text)) >= 2
    assert sorted(run.fulfilled) == sorted(early + late), run.fulfilled  # each id once: nothing twice
    assert (run.locked, run.not_paid, run.missing) == ([], [], [])
    assert Order.objects.filter(status=Order.Status.FULFILLED).count() == 40
    for sku in ("EARLY", "LATE"):
        movements = StockMovement.objects.filter(level=level(sku), reason=StockMovement.Reason.FULFILMENT)
        assert movements.count() == 20  # one ledger row per order: no order fulfilled twice
        assert -sum(movements.values_list("delta_on_hand", flat=True)) == units[sku]
        assert (level(sku).on_hand, level(sku).reserved) == (100 - units[sku], 0)
    assert_stock_invariants()


def test_a_whole_worker_killed_mid_import_is_delivered_again_after_the_visibility_timeout(
    tmp_path, staff_user, settings
):
    settings.MEDIA_ROOT = media = tmp_path / "media"
    WarehouseFactory(code="MAIN")
    skus = [f"P{n:03d}" for n in range(60)]
    for sku in skus:
        ProductFactory(sku=sku)
        stock.stock_receive(sku=sku, warehouse_code="MAIN", quantity=1)
    wanted = {sku: 10 + n for n, sku in enumerate(skus)}
    data = ("sku,warehouse,on_hand\n" + "".join(f"{sku},MAIN,{wanted[sku]}\n" for sku in skus)).encode()

    env = {
        **WORKER,
        "MEDIA_ROOT": str(media),
        "IMPORT_CHUNK_ROWS": "10",  # chunks by physical line (the header is line 1): 1-10, 11-20, ... 61
        "CELERY_VISIBILITY_TIMEOUT": "5",
    }
    log = tmp_path / "worker.log"
    with RelayThread() as relay:
        # The level of line 37 (the fourth chunk, lines 31-40) is held by the test while the first worker runs.
        with row_lock("inventory_stocklevel", level(skus[35]).pk), celery_worker(log, **env) as first:
            job = import_create(upload=SimpleUploadedFile("stock.csv", data), actor=staff_user)
            wait_for(lock_waiters, timeout=60, what="the fourth chunk to wait for the level lock")
            waiting = lock_waiters()
            job.refresh_from_db()
            assert (job.chunks_applied, job.rows_done) == (3, 29)
            kill_whole_worker(first)
            terminate_backends(waiting)
        assert ImportJob.objects.get(pk=job.pk).status == ImportJob.Status.RUNNING  # its message is unacked
        with celery_worker(log, **env):
            job = wait_for(
                lambda: ImportJob.objects.filter(pk=job.pk, status__in=ImportJob.FINISHED).first(),
                timeout=90,
                what="the import to be delivered again and finish",
            )
    assert relay.error is None

    assert job.status == ImportJob.Status.SUCCEEDED, (job.errors, log.read_text()[-3000:])
    # The same message, taken by the first worker and, once unacknowledged for 5 s, by the second.
    assert len(re.findall(r"Task inventory\.import_stock\[[-0-9a-f]+\] received", log.read_text())) >= 2
    assert job.attempts >= 2
    assert (job.rows_total, job.rows_done, job.rows_ok, job.rows_failed) == (60, 60, 60, 0)
    assert job.chunks_applied == job.chunks_total == 7
    moved = StockMovement.objects.filter(reference=import_reference(job.pk))
    assert moved.count() == 60  # one ledger row per level: no chunk applied twice
    assert sum(moved.values_list("delta_on_hand", flat=True)) == sum(wanted.values()) - 60
    assert {lv.product.sku: lv.on_hand for lv in StockLevel.objects.select_related("product")} == wanted
    assert not ImportWarehouse.objects.filter(running=True).exists()
    assert django_settings.CELERY_VISIBILITY_TIMEOUT > 5  # only the test's workers ran with 5 s
    assert_stock_invariants()

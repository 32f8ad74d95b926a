"""An import applying its chunks while shoppers reserve and release the same levels, on real
threads and real PostgreSQL: every chunk sees the levels as they are once it holds their locks."""

import random
import threading

import pytest
from django.core.files.base import ContentFile
from django.db import connection, transaction

from inventory import imports
from inventory import services as stock
from inventory.errors import InsufficientStock
from inventory.models import ImportJob, StockLevel
from project.errors import LockTimeout
from tests.factories import ProductFactory, WarehouseFactory
from tests.invariants import assert_ledger_invariants
from tests.inventory.import_support import csv_bytes

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

SKUS = ("R1", "R2", "R3")
IMPORTS = 30


def test_imports_racing_reservations_on_the_same_levels_never_write_below_what_is_reserved(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.IMPORT_CHUNK_ROWS = 1  # one level per chunk: as many chunk statements as possible
    WarehouseFactory(code="MAIN")
    products = [ProductFactory(sku=sku) for sku in SKUS]
    for sku in SKUS:
        stock.stock_receive(sku=sku, warehouse_code="MAIN", quantity=9)
    done = threading.Event()
    failures: list[BaseException] = []

    def shopper(seed: int) -> None:
        rng = random.Random(seed)
        try:
            while not done.is_set():
                product, units = rng.choice(products), rng.randint(1, 3)
                try:
                    with transaction.atomic():
                        taken = stock.reserve_stock(lines=[(product, units)], reference=f"race-{seed}")
                except (InsufficientStock, LockTimeout):
                    continue
                with transaction.atomic():
                    stock.release_stock(allocations=[(a.level_id, a.quantity) for a in taken], reference=f"race-{seed}")
        except BaseException as exc:  # the test reports every failure of a thread
            failures.append(exc)
        finally:
            connection.close()

    shoppers = [threading.Thread(target=shopper, args=(seed,)) for seed in range(8)]
    for thread in shoppers:
        thread.start()
    rng, finished = random.Random(1), []
    try:
        for _ in range(IMPORTS):
            job = ImportJob(original_name="stock.csv")
            rows = [f"{sku},MAIN,{rng.randint(2, 9)}" for sku in SKUS]
            job.file.save("stock.csv", ContentFile(csv_bytes(rows)), save=False)
            job.save()
            for _attempt in range(20):  # as the task does: busy or a lock timeout is tried again
                try:
                    finished.append(imports.import_run(import_id=job.pk))
                    break
                except (imports.ImportBusy, LockTimeout):
                    continue
    finally:
        done.set()
        for thread in shoppers:
            thread.join(timeout=30)

    assert not failures, failures
    assert len(finished) == IMPORTS and all(job.finished for job in finished)
    refused = sum(job.rows_failed for job in finished)
    assert refused < IMPORTS * len(SKUS), "every row refused: the race never let an import through"
    assert all(level.reserved == 0 and level.on_hand >= 2 for level in StockLevel.objects.all())
    assert_ledger_invariants()

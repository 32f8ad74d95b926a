"""Stock imports through the API and a real Celery worker (in this process, solo pool)."""

import random
import threading
import uuid
from decimal import Decimal

import pytest
from django.db import connection, transaction

from inventory import services as stock
from inventory.errors import InsufficientStock
from inventory.imports import import_reference
from inventory.models import ImportWarehouse, Product, StockLevel, StockMovement
from orders import services as order_services
from orders.api import render_order
from orders.models import Order
from project.errors import LockTimeout
from tests.factories import ProductFactory, UserFactory, WarehouseFactory
from tests.invariants import assert_ledger_invariants, assert_stock_invariants
from tests.inventory.import_support import csv_bytes, csv_upload, post_import, running_import_worker, wait_finished
from tests.orders.conftest import ADDRESS
from tests.support import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def media(settings, tmp_path):
    """Uploads go to a folder of this test's own."""
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def import_worker(transactional_db, media):
    with running_import_worker() as worker:
        yield worker


@pytest.fixture
def warehouses():
    return WarehouseFactory(code="MAIN", priority=1), WarehouseFactory(code="EAST", priority=2)


def level(sku: str, code: str) -> StockLevel:
    return StockLevel.objects.get(product__sku=sku, warehouse__code=code)


def import_movements(import_id: int):
    return StockMovement.objects.filter(reference=import_reference(import_id))


def test_a_good_file_sets_on_hand_with_the_real_deltas_in_the_ledger(import_worker, staff_client, warehouses):
    ProductFactory(sku="MUG")
    ProductFactory(sku="TEA")
    stock.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=10)
    stock.stock_receive(sku="TEA", warehouse_code="MAIN", quantity=4)
    versions = {sku: level(sku, "MAIN").version for sku in ("MUG", "TEA")}

    response = staff_client.post(
        "/api/v1/imports",
        {"file": csv_upload(csv_bytes(["MUG,MAIN,7", "MUG,EAST,3", "TEA,MAIN,4"]))},
        format="multipart",
    )
    assert response.status_code == 202
    body = response.json()
    assert body["status_url"].endswith(f"/api/v1/imports/{body['id']}")
    job = wait_finished(body["id"])

    status = staff_client.get(f"/api/v1/imports/{job.pk}").json()
    assert status["status"] == "succeeded"
    assert (status["rows_total"], status["rows_done"], status["rows_ok"], status["rows_failed"]) == (3, 3, 3, 0)
    assert status["errors"] == []
    assert (level("MUG", "MAIN").on_hand, level("MUG", "EAST").on_hand, level("TEA", "MAIN").on_hand) == (7, 3, 4)
    deltas = dict(
        import_movements(job.pk)
        .filter(level__product__sku="MUG")
        .values_list("level__warehouse__code", "delta_on_hand")
    )
    assert deltas == {"MAIN": -3, "EAST": 3}
    assert not import_movements(job.pk).filter(level__product__sku="TEA").exists()  # unchanged: no row
    assert level("TEA", "MAIN").version == versions["TEA"]  # on_hand unchanged: version kept
    assert level("MUG", "MAIN").version == versions["MUG"] + 1
    assert set(import_movements(job.pk).values_list("reason", flat=True)) == {"import"}
    assert set(import_movements(job.pk).values_list("actor__email", flat=True)) == {"staff@example.com"}
    assert not ImportWarehouse.objects.filter(running=True).exists()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM inventory_importrow WHERE import_id = %s", [job.pk])
        assert cursor.fetchone()[0] == 0  # staging dropped
    assert_ledger_invariants()


def test_malformed_rows_are_reported_by_line_and_the_good_rows_are_kept(import_worker, staff_client, warehouses):
    mug = ProductFactory(sku="MUG")
    ProductFactory(sku="TEA")
    stock.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=10)
    with transaction.atomic():
        stock.reserve_stock(lines=[(mug, 6)], reference="ORD-1")
    data = b"".join(
        [
            b"sku,warehouse,on_hand,name,price\n",  # 1
            b"MUG,MAIN,8,,\n",  # 2 good: 8 >= 6 reserved
            b"TEA,MAIN,abc,,\n",  # 3 bad number
            b"TEA,NOWHERE,1,,\n",  # 4 unknown warehouse
            b"TEA,EAST,5,,\n",  # 5 good
            b"MUG,MAIN,9,,\n",  # 6 duplicate of line 2
            b"T\xe9A,MAIN,1,,\n",  # 7 not UTF-8 (latin-1)
            b"LONG," + b"M" * 5000 + b",1,,\n",  # 8 over-long line
            b"NEW-1,MAIN,3,New thing,2.50\n",  # 9 good: creates the product
            b"NEW-2,MAIN,3,,\n",  # 10 unknown SKU without name and price
            b"MUG,EAST,2,,\n",  # 11 good
            b"TEA,MAIN,1,Ignored,1.00\n",  # 12 good: TEA exists, keeps its name
        ]
    )
    job = wait_finished(post_import(staff_client, data))

    assert job.status == "partial"
    assert (job.rows_total, job.rows_done, job.rows_ok, job.rows_failed) == (11, 11, 5, 6)
    by_line = {error["line"]: error["message"] for error in job.errors}
    assert sorted(by_line) == [3, 4, 6, 7, 8, 10]
    assert "on_hand 'abc'" in by_line[3]
    assert by_line[4] == "Unknown warehouse 'NOWHERE'."
    assert by_line[6] == "Duplicate of line 2 (same sku and warehouse)."
    assert "UTF-8" in by_line[7]
    assert "longer than" in by_line[8]
    assert "Unknown SKU NEW-2" in by_line[10]
    assert (level("MUG", "MAIN").on_hand, level("TEA", "EAST").on_hand, level("MUG", "EAST").on_hand) == (8, 5, 2)
    assert level("TEA", "MAIN").on_hand == 1
    created = Product.objects.get(sku="NEW-1")
    assert (created.name, created.price, level("NEW-1", "MAIN").on_hand) == ("New thing", Decimal("2.50"), 3)
    assert Product.objects.get(sku="TEA").name != "Ignored"
    assert not Product.objects.filter(sku="NEW-2").exists()
    assert_ledger_invariants()

    below = wait_finished(post_import(staff_client, csv_bytes(["TEA,EAST,1", "MUG,MAIN,5"])))
    assert below.status == "partial"
    assert below.errors == [{"line": 3, "message": "on_hand 5 would be below the 6 units reserved for orders."}]
    assert (level("MUG", "MAIN").on_hand, level("TEA", "EAST").on_hand) == (8, 1)
    assert_ledger_invariants()


def test_a_row_error_count_over_the_cap_keeps_the_first_thousand_messages(import_worker, staff_client, warehouses):
    rows = [f"SKU-{n},NOWHERE,1" for n in range(1500)]
    job = wait_finished(post_import(staff_client, csv_bytes(rows)))
    assert job.status == "failed"  # no row could be applied
    assert (job.rows_total, job.rows_failed, len(job.errors)) == (1500, 1500, 1000)
    assert [e["line"] for e in job.errors] == list(range(2, 1002))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "The file is empty."),
        (b"sku;warehouse;on_hand\nMUG;MAIN;1\n", "The header must name the columns"),
        (b"sku,warehouse,on_hand\n\n", "The file has a header but no rows."),
    ],
)
def test_an_empty_file_or_a_wrong_header_fails_the_import_with_nothing_applied(
    import_worker, staff_client, warehouses, data, message
):
    ProductFactory(sku="MUG")
    job = wait_finished(post_import(staff_client, data))
    assert job.status == "failed"
    assert len(job.errors) == 1 and message in job.errors[0]["message"]
    assert job.rows_done == 0
    assert not StockLevel.objects.exists()


def test_fifty_thousand_rows_in_chunks_with_progress_and_an_exact_ledger(
    import_worker, staff_client, warehouses, settings
):
    settings.IMPORT_CHUNK_ROWS = 5000
    Product.objects.bulk_create([Product(sku=f"P{n:05d}", name=f"Product {n}", price=1) for n in range(25_000)])
    # A first import gives half of MAIN's levels 10 units, so the second runs both paths:
    # levels it updates (delta = new - 10) and levels it creates (delta = new).
    first = wait_finished(post_import(staff_client, csv_bytes(f"P{n:05d},MAIN,10" for n in range(0, 25_000, 2))))
    assert first.status == "succeeded"

    def units(n: int, code: str) -> int:
        return (n * 7 + len(code)) % 50

    rows = [f"P{n:05d},{code},{units(n, code)}" for n in range(25_000) for code in ("MAIN", "EAST")]
    job = wait_finished(post_import(staff_client, csv_bytes(rows)), timeout=120)

    assert job.status == "succeeded"
    assert (job.rows_total, job.rows_done, job.rows_ok, job.rows_failed) == (50_000, 50_000, 50_000, 0)
    assert (job.chunks_applied, job.chunks_total) == (11, 11)  # lines 2..50001 in chunks of 5000 lines
    assert StockLevel.objects.count() == 50_000
    expected = sum(units(n, code) for n in range(25_000) for code in ("MAIN", "EAST"))
    assert sum(StockLevel.objects.values_list("on_hand", flat=True)) == expected
    before = {
        (n, code): (10 if code == "MAIN" and n % 2 == 0 else 0) for n in range(25_000) for code in ("MAIN", "EAST")
    }
    changed = sum(1 for (n, code), old in before.items() if units(n, code) != old)
    moved = import_movements(job.pk)
    assert moved.count() == changed  # one ledger row per changed level, none for the others
    assert sum(moved.values_list("delta_on_hand", flat=True)) == expected - 12_500 * 10
    assert_ledger_invariants()


def test_an_import_racing_with_reservations_never_breaks_an_invariant(
    import_worker, staff_client, warehouses, settings
):
    settings.IMPORT_CHUNK_ROWS = 4
    settings.IMPORT_CHUNK_PAUSE_MS = 30
    skus = [f"HOT-{n:02d}" for n in range(30)]
    for sku in skus:
        ProductFactory(sku=sku)
        stock.stock_receive(sku=sku, warehouse_code="MAIN", quantity=20)
        stock.stock_receive(sku=sku, warehouse_code="EAST", quantity=20)
    buyers = UserFactory.create_batch(4)
    stop = threading.Event()
    outcomes: list[str] = []

    def buy(i: int) -> None:
        rng = random.Random(i)
        try:
            while not stop.is_set():
                lines = [(sku, rng.randint(1, 4)) for sku in rng.sample(skus, 2)]
                try:
                    order_services.order_place(
                        user=buyers[i],
                        lines=[order_services.OrderLineRequest(sku, quantity) for sku, quantity in lines],
                        shipping_address=ADDRESS,
                        render=render_order,
                        idempotency_key=uuid.uuid4().hex,
                        fingerprint=str(lines),
                    )
                    outcomes.append("placed")
                except (InsufficientStock, LockTimeout) as refused:
                    outcomes.append(type(refused).__name__)
        finally:
            connection.close()

    threads = [threading.Thread(target=buy, args=(i,)) for i in range(len(buyers))]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: len(outcomes) >= 5, timeout=30, what="the buyers to get going")
        # Low counts for every other SKU, so some rows meet units reserved in the meantime.
        rows = [f"{sku},{code},{(n % 2) * 15 + n % 4}" for n, sku in enumerate(skus) for code in ("MAIN", "EAST")]
        job = wait_finished(post_import(staff_client, csv_bytes(rows)), timeout=120)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)

    assert job.status in ("succeeded", "partial")
    assert (job.rows_done, job.rows_ok + job.rows_failed) == (60, 60)
    assert all("reserved for orders" in error["message"] for error in job.errors)
    during = Order.objects.filter(created_at__gte=job.started_at, created_at__lte=job.finished_at).count()
    assert during > 0, "no order was placed while the import ran"
    assert_stock_invariants()

"""One writer of ledger rows: inventory_ledger_write (inventory/migrations/sql/0006_ledger_write.sql).
The Python writer (inventory.services._record, behind every stock service) and a direct call, as
the SQL paths make it, write the same rows for the same inputs."""

import pytest
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from inventory import services
from inventory.models import StockLevel, StockMovement
from tests.factories import ProductFactory, WarehouseFactory

pytestmark = pytest.mark.django_db

COLUMNS = ("level_id", "delta_on_hand", "delta_reserved", "reason", "reference", "note", "actor_id")


def ledger_write(levels, on_hand, reserved, reason, references, note, actor_id, at) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT inventory_ledger_write(%s::bigint[], %s::bigint[], %s::bigint[], %s, %s::text[], %s, %s, %s)",
            [levels, on_hand, reserved, reason, references, note, actor_id, at],
        )
        return cursor.fetchone()[0]


def rows_after(first_id: int) -> list[tuple]:
    return list(StockMovement.objects.filter(pk__gt=first_id).order_by("pk").values_list(*COLUMNS))


def last_id() -> int:
    return StockMovement.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


def test_the_python_and_the_sql_writer_write_the_same_rows(staff_user):
    ProductFactory(sku="MUG")
    WarehouseFactory(code="MAIN", priority=1)
    WarehouseFactory(code="EAST", priority=2)
    services.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=10)

    before = last_id()
    started = timezone.now()
    services.stock_transfer(sku="MUG", from_code="MAIN", to_code="EAST", quantity=3, actor=staff_user, note="shelf")
    through_python = rows_after(before)
    stamps = set(StockMovement.objects.filter(pk__gt=before).values_list("created_at", flat=True))

    main, east = (StockLevel.objects.get(warehouse__code=code).pk for code in ("MAIN", "EAST"))
    before = last_id()
    reference = "transfer:MAIN->EAST"
    written = ledger_write(
        [main, east], [-3, 3], [0, 0], "transfer", [reference, reference], "shelf", staff_user.pk, timezone.now()
    )
    through_sql = rows_after(before)

    assert written == 2
    assert (
        through_python
        == through_sql
        == [
            (main, -3, 0, "transfer", reference, "shelf", staff_user.pk),
            (east, 3, 0, "transfer", reference, "shelf", staff_user.pk),
        ]
    )
    assert len(stamps) == 1 and started <= stamps.pop() <= timezone.now()  # one call, this process's clock


def test_arrays_of_different_lengths_write_nothing():
    ProductFactory(sku="MUG")
    WarehouseFactory(code="MAIN")
    services.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=1)
    level_id = StockLevel.objects.get().pk
    before = last_id()

    with pytest.raises(DatabaseError, match="1 levels, 1 on_hand deltas, 0 reserved deltas"), transaction.atomic():
        ledger_write([level_id], [1], [], "adjustment", ["x"], "", None, timezone.now())
    assert ledger_write([], [], [], "adjustment", [], "", None, timezone.now()) == 0
    assert rows_after(before) == []

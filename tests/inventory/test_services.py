import pytest
from django.db import DatabaseError, connection, transaction

from inventory import services
from inventory.errors import InsufficientStock, InvalidInput, InvalidStock, VersionConflict, WarehouseBusy
from inventory.models import StockLevel, StockMovement, Warehouse
from inventory.reservation import STRATEGIES
from project.errors import NotFound
from tests.factories import ProductFactory, WarehouseFactory
from tests.invariants import assert_ledger_invariants

pytestmark = pytest.mark.django_db


@pytest.fixture
def product():
    return ProductFactory(sku="MUG")


@pytest.fixture
def main():
    return WarehouseFactory(code="MAIN", priority=1)


@pytest.fixture
def east():
    return WarehouseFactory(code="EAST", priority=2)


def level(product, warehouse) -> StockLevel:
    return StockLevel.objects.get(product=product, warehouse=warehouse)


def test_receipt_creates_the_level_and_its_ledger_row(product, main, staff_user):
    result = services.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=12, actor=staff_user, reference="PO-1")

    assert (result.on_hand, result.reserved, result.version) == (12, 0, 2)
    movement = StockMovement.objects.get()
    assert (movement.delta_on_hand, movement.reason, movement.reference, movement.actor) == (
        12,
        "receipt",
        "PO-1",
        staff_user,
    )
    assert_ledger_invariants()


def test_adjustment_below_reserved_is_refused_and_writes_nothing(product, main):
    services.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=5)
    with transaction.atomic():
        services.reserve_stock(lines=[(product, 3)], reference="ORD-1")

    with pytest.raises(InvalidStock):
        services.stock_adjust(sku="MUG", warehouse_code="MAIN", delta=-3)

    assert (level(product, main).on_hand, level(product, main).reserved) == (5, 3)
    assert StockMovement.objects.count() == 2
    assert_ledger_invariants()


def test_adjustment_with_a_stale_version_is_a_conflict(product, main):
    current = services.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=5)
    services.stock_adjust(sku="MUG", warehouse_code="MAIN", delta=1, expected_version=current.version)

    with pytest.raises(VersionConflict) as conflict:
        services.stock_adjust(sku="MUG", warehouse_code="MAIN", delta=1, expected_version=current.version)

    assert conflict.value.extra == {"current_version": current.version + 1}
    assert level(product, main).on_hand == 6


@pytest.mark.parametrize("delta", [0, True, 1.5, "3", 10**10])
def test_adjustment_refuses_non_integer_or_zero_deltas(product, main, delta):
    with pytest.raises(InvalidInput):
        services.stock_adjust(sku="MUG", warehouse_code="MAIN", delta=delta)
    assert not StockMovement.objects.exists()


def test_unknown_sku_and_warehouse_are_named(db):
    with pytest.raises(InvalidInput) as error:
        services.stock_adjust(sku="NOPE", warehouse_code="NOWHERE", delta=1)

    assert set(error.value.fields) == {"sku", "warehouse"}


def test_count_sets_on_hand_and_records_the_real_difference(product, main):
    current = services.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=10)

    counted = services.stock_count(sku="MUG", warehouse_code="MAIN", on_hand=7, expected_version=current.version)

    assert (counted.on_hand, counted.version) == (7, current.version + 1)
    assert StockMovement.objects.filter(reason="count").get().delta_on_hand == -3
    with pytest.raises(VersionConflict):
        services.stock_count(sku="MUG", warehouse_code="MAIN", on_hand=9, expected_version=current.version)
    assert_ledger_invariants()


def test_count_below_reserved_is_refused(product, main):
    services.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=10)
    with transaction.atomic():
        services.reserve_stock(lines=[(product, 4)], reference="ORD-1")

    with pytest.raises(InvalidStock):
        services.stock_count(sku="MUG", warehouse_code="MAIN", on_hand=3, expected_version=level(product, main).version)
    assert level(product, main).on_hand == 10


def test_transfer_moves_available_units_only(product, main, east):
    services.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=10)
    with transaction.atomic():
        services.reserve_stock(lines=[(product, 6)], reference="ORD-1")

    with pytest.raises(InsufficientStock):
        services.stock_transfer(sku="MUG", from_code="MAIN", to_code="EAST", quantity=5)
    source, target = services.stock_transfer(sku="MUG", from_code="MAIN", to_code="EAST", quantity=4)

    assert (source.on_hand, source.reserved, target.on_hand) == (6, 6, 4)
    assert_ledger_invariants()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_reservation_splits_by_warehouse_priority(product, main, east, strategy):
    services.stock_receive(sku="MUG", warehouse_code="EAST", quantity=10)
    services.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=3)

    with transaction.atomic():
        allocations = services.reserve_stock(lines=[(product, 5)], reference="ORD-1", strategy=strategy)

    assert sorted((a.warehouse_id, a.quantity) for a in allocations) == sorted([(main.pk, 3), (east.pk, 2)])
    assert (level(product, main).reserved, level(product, east).reserved) == (3, 2)
    assert_ledger_invariants()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_short_stock_reserves_nothing_and_lists_every_short_sku(main, strategy):
    mug, cup, plate = ProductFactory(sku="MUG"), ProductFactory(sku="CUP"), ProductFactory(sku="PLATE")
    for sku, units in (("MUG", 2), ("CUP", 10)):
        services.stock_receive(sku=sku, warehouse_code="MAIN", quantity=units)

    with pytest.raises(InsufficientStock) as short, transaction.atomic():
        services.reserve_stock(lines=[(mug, 3), (cup, 1), (plate, 1)], reference="ORD-1", strategy=strategy)

    assert short.value.items == [
        {"sku": "MUG", "requested": 3, "available": 2},
        {"sku": "PLATE", "requested": 1, "available": 0},
    ]
    assert not StockLevel.objects.filter(reserved__gt=0).exists()
    assert_ledger_invariants()


def test_inactive_warehouses_are_not_reserved_from(product, main, east):
    services.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=5)
    services.stock_receive(sku="MUG", warehouse_code="EAST", quantity=5)
    services.warehouse_deactivate(code="MAIN")

    with transaction.atomic():
        allocations = services.reserve_stock(lines=[(product, 5)], reference="ORD-1")

    assert [a.warehouse_id for a in allocations] == [east.pk]


@pytest.mark.django_db(transaction=True)
def test_primitives_refuse_to_run_outside_a_transaction(product, main):
    services.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=5)

    with pytest.raises(RuntimeError, match="inside a transaction"):
        services.reserve_stock(lines=[(product, 1)], reference="ORD-1")
    with pytest.raises(RuntimeError, match="inside a transaction"):
        services.release_stock(allocations=[(level(product, main).pk, 1)], reference="ORD-1")


def test_release_consume_and_return_keep_the_ledger_exact(product, main):
    services.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=10)
    with transaction.atomic():
        allocations = services.reserve_stock(lines=[(product, 4)], reference="ORD-1")
    pairs = [(a.level_id, a.quantity) for a in allocations]
    version = level(product, main).version

    with transaction.atomic():
        services.release_stock(allocations=[(pairs[0][0], 1)], reference="ORD-1")
        services.consume_stock(allocations=[(pairs[0][0], 3)], reference="ORD-1")
        services.receive_return(items=[(product.pk, main.pk, 2, 0)], reference="ORD-1")

    current = level(product, main)
    assert (current.on_hand, current.reserved) == (9, 0)
    assert current.version == version + 2  # fulfilment and return moved on_hand; the release did not
    assert list(StockMovement.objects.order_by("id").values_list("reason", flat=True)) == [
        "receipt", "reservation", "release", "fulfilment", "return",
    ]  # fmt: skip
    assert_ledger_invariants()


def test_warehouse_with_reserved_units_cannot_be_deactivated(product, main):
    services.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=5)
    with transaction.atomic():
        services.reserve_stock(lines=[(product, 1)], reference="ORD-1")

    with pytest.raises(WarehouseBusy):
        services.warehouse_deactivate(code="MAIN")

    assert Warehouse.objects.get(code="MAIN").active is True


def test_product_update_is_compare_and_set(product):
    services.product_update(sku="MUG", expected_version=1, changes={"name": "Big mug"})

    with pytest.raises(VersionConflict):
        services.product_update(sku="MUG", expected_version=1, changes={"name": "Lost update"})
    with pytest.raises(NotFound):
        services.product_update(sku="NOPE", expected_version=1, changes={"name": "x"})
    product.refresh_from_db()
    assert (product.name, product.version) == ("Big mug", 2)


def test_the_ledger_is_append_only(product, main):
    services.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=5)

    for statement in ("UPDATE inventory_stockmovement SET delta_on_hand = 50", "DELETE FROM inventory_stockmovement"):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(statement)
    assert StockMovement.objects.get().delta_on_hand == 5


def test_warehouse_update_sets_name_and_priority_and_leaves_a_deactivation_alone(main):
    loaded = Warehouse.objects.get(code="MAIN")  # an admin page loaded while the warehouse was active
    services.warehouse_deactivate(code="MAIN")

    updated = services.warehouse_update(code=loaded.code, name="Main hall", priority=7)

    main.refresh_from_db()
    assert (main.name, main.priority, main.active) == ("Main hall", 7, False)
    assert (updated.name, updated.priority, updated.active) == ("Main hall", 7, False)


def test_warehouse_update_of_an_unknown_code_is_not_found(db):
    with pytest.raises(NotFound):
        services.warehouse_update(code="NOPE", name="Nowhere", priority=1)

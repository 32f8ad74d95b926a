"""Hot mode (stock buckets): every writer of a level honours it, one test per writer.

A hot level keeps some of its free units in buckets, counted in its `reserved`. Each test puts
units in the buckets through the real path (the product switched on, then an order, whose slow
path creates the buckets and spreads the level's free units over them), then runs one writer and
checks what it did and DESIGN.md §3's invariants (tests/invariants checks the buckets too).
"""

import uuid

import pytest
from django.core.files.base import ContentFile
from django.db import connection

from inventory import imports
from inventory import services as stock
from inventory.errors import InsufficientStock, InvalidInput, InvalidStock, VersionConflict
from inventory.models import ImportJob, Product, StockBucket, StockLevel, StockMovement
from inventory.reservation import STRATEGIES
from orders import jobs, services
from orders.api import render_order
from orders.models import Order
from project.db.transactions import Retry
from project.errors import LockTimeout, NotFound
from tests.factories import ProductFactory, UserFactory, WarehouseFactory
from tests.invariants import assert_stock_invariants
from tests.inventory.import_support import csv_bytes
from tests.orders.conftest import ADDRESS

pytestmark = pytest.mark.django_db

PATHS = [("conditional", True), *((strategy, False) for strategy in STRATEGIES)]


def place(user, lines):
    return services.order_place(
        user=user,
        lines=[services.OrderLineRequest(sku, quantity) for sku, quantity in lines],
        shipping_address=ADDRESS,
        render=render_order,
        idempotency_key=uuid.uuid4().hex,
        fingerprint=str(lines),
    )


def bucketed(sku="HOT") -> int:
    return sum(StockBucket.objects.filter(level__product__sku=sku).values_list("units", flat=True))


def level(sku="HOT", code="MAIN") -> StockLevel:
    return StockLevel.objects.get(product__sku=sku, warehouse__code=code)


@pytest.fixture
def hot(db):
    """HOT: 10 units in MAIN, hot mode with 4 buckets, and one order of 3 that filled them."""
    WarehouseFactory(code="MAIN", priority=1)
    ProductFactory(sku="HOT")
    stock.stock_receive(sku="HOT", warehouse_code="MAIN", quantity=10)
    stock.product_set_buckets(sku="HOT", buckets=4)
    user = UserFactory()
    order = Order.objects.get(number=place(user, [("HOT", 3)]).body["number"])
    assert sorted(StockBucket.objects.values_list("units", flat=True)) == [1, 2, 2, 2]
    return user, order


@pytest.mark.parametrize(("strategy", "in_sql"), PATHS)
def test_every_placement_path_takes_from_the_buckets_and_sells_every_unit_exactly(strategy, in_sql, settings):
    settings.STOCK_RESERVATION_STRATEGY, settings.ORDER_PLACEMENT_IN_SQL = strategy, in_sql
    WarehouseFactory(code="MAIN", priority=1)
    ProductFactory(sku="HOT")
    stock.stock_receive(sku="HOT", warehouse_code="MAIN", quantity=10)
    stock.product_set_buckets(sku="HOT", buckets=4)
    user = UserFactory()

    place(user, [("HOT", 3)])  # the slow path: creates 4 buckets and spreads the 7 left over them
    assert StockBucket.objects.count() == 4 and bucketed() == 7
    assert level().reserved == 10  # 3 for the order, 7 held in buckets
    place(user, [("HOT", 2)])  # a bucket with 2 units: the fast path, the level's row untouched
    assert bucketed() == 5 and level().reserved == 10
    place(user, [("HOT", 5)])  # no bucket holds 5: the slow path takes the whole pool, exactly
    assert bucketed() == 0
    with pytest.raises(InsufficientStock) as refused:
        place(user, [("HOT", 1)])
    assert refused.value.items == [{"sku": "HOT", "requested": 1, "available": 0}]
    assert Order.objects.count() == 3
    reservations = StockMovement.objects.filter(reason="reservation").order_by("id")
    assert [(m.delta_reserved, m.delta_bucketed) for m in reservations] == [(3, -3), (2, -2), (5, -5)]
    assert_stock_invariants()


def test_an_order_is_refused_only_when_the_level_and_its_buckets_together_lack(hot):
    user, _ = hot
    with pytest.raises(InsufficientStock) as refused:
        place(user, [("HOT", 8)])
    assert refused.value.items == [{"sku": "HOT", "requested": 8, "available": 7}]
    place(user, [("HOT", 7)])  # no bucket holds 7, together they do
    assert bucketed() == 0 and level().reserved == level().on_hand == 10
    assert_stock_invariants()


def test_a_hot_order_mixed_with_an_ordinary_sku_in_one_order(hot):
    user, _ = hot
    ProductFactory(sku="COLD")
    stock.stock_receive(sku="COLD", warehouse_code="MAIN", quantity=5)
    place(user, [("COLD", 2), ("HOT", 2)])
    assert level("COLD").reserved == 2 and bucketed() == 5
    assert not StockBucket.objects.filter(level__product__sku="COLD").exists()
    assert_stock_invariants()


def test_switching_off_gives_every_bucket_unit_back_and_orders_go_on_from_the_level(hot):
    user, _ = hot
    stock.product_set_buckets(sku="HOT", buckets=0)
    assert not StockBucket.objects.exists()
    assert level().reserved == 3  # only the order's units
    assert StockMovement.objects.filter(reason="bucket").latest("id").delta_bucketed == -7
    place(user, [("HOT", 7)])
    assert level().reserved == 10 and not StockBucket.objects.exists()
    assert_stock_invariants()


def test_resizing_creates_the_new_number_of_buckets_at_the_next_order(hot):
    user, _ = hot
    stock.product_set_buckets(sku="HOT", buckets=2)
    assert not StockBucket.objects.exists()
    place(user, [("HOT", 1)])
    assert sorted(StockBucket.objects.values_list("units", flat=True)) == [3, 3]
    assert_stock_invariants()


def test_a_level_created_after_the_switch_gets_its_buckets_at_its_first_order(hot):
    user, _ = hot
    WarehouseFactory(code="EAST", priority=2)
    stock.stock_receive(sku="HOT", warehouse_code="EAST", quantity=4)
    place(user, [("HOT", 9)])  # 7 from MAIN's buckets, 2 from EAST, whose first take makes buckets
    assert StockBucket.objects.filter(level=level("HOT", "EAST")).count() == 4
    assert bucketed() == 2
    assert_stock_invariants()


def test_a_levels_buckets_are_slots_one_to_n_and_a_resize_renumbers_them(hot):
    user, _ = hot
    assert sorted(StockBucket.objects.values_list("slot", flat=True)) == [1, 2, 3, 4]
    stock.product_set_buckets(sku="HOT", buckets=2)
    place(user, [("HOT", 1)])
    assert sorted(StockBucket.objects.values_list("slot", flat=True)) == [1, 2]


def test_a_take_drawing_slots_that_do_not_exist_still_finds_the_units(hot):
    # A caller's stock_buckets may be stale (the product resized since it read it): the draws miss,
    # the wait path finds a bucket with the units.
    with connection.cursor() as cursor:
        cursor.execute("SELECT inventory_hot_take(%s, 2, 'T', NULL, now(), 64)", [level().pk])
        assert cursor.fetchone()[0] is True
    assert bucketed() == 5 and StockBucket.objects.count() == 4
    assert not StockMovement.objects.filter(reason="bucket").exclude(reference=hot[1].number).exists()


@pytest.mark.parametrize(("strategy", "in_sql"), PATHS)
def test_two_hot_skus_in_one_order_are_planned_exactly_and_refused_exactly(hot, strategy, in_sql, settings):
    # The SQL placement plans one hot level from "any bucket holds a unit" but never two in one
    # order: a take that succeeded cannot be undone by a retry within the call.
    settings.STOCK_RESERVATION_STRATEGY, settings.ORDER_PLACEMENT_IN_SQL = strategy, in_sql
    user, _ = hot
    ProductFactory(sku="HOT2")
    stock.stock_receive(sku="HOT2", warehouse_code="MAIN", quantity=3)
    stock.product_set_buckets(sku="HOT2", buckets=2)
    place(user, [("HOT2", 1)])  # HOT2's buckets: 1 and 1
    with pytest.raises(InsufficientStock) as refused:
        place(user, [("HOT", 2), ("HOT2", 3)])
    assert refused.value.items == [{"sku": "HOT2", "requested": 3, "available": 2}]
    assert bucketed() == 7 and bucketed("HOT2") == 2
    place(user, [("HOT", 7), ("HOT2", 2)])
    assert bucketed() == 0 and bucketed("HOT2") == 0
    assert_stock_invariants()


# inventory_hot_take's one answer that is neither true nor false: a bucket locked without a
# subtransaction that other orders drained between its read and its lock cannot be given back, so
# the take raises SQLSTATE SR503 and the whole transaction must run again. That interleaving lies
# between two statements of the function; to reach the callers' handling of it, the function is
# replaced for this test's transaction only (the DDL is rolled back with it).
ANSWERS_SR503 = """
CREATE OR REPLACE FUNCTION inventory_hot_take(
    p_level bigint, p_qty bigint, p_reference text, p_actor bigint, p_at timestamptz, p_buckets integer DEFAULT NULL
) RETURNS boolean LANGUAGE plpgsql AS $fn$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'SR503', MESSAGE = 'a hot bucket was drained while it was being locked';
END
$fn$
"""


@pytest.mark.parametrize(("strategy", "in_sql"), PATHS)
def test_a_take_that_must_run_again_is_a_retry_of_the_whole_placement_never_an_error(hot, strategy, in_sql, settings):
    settings.STOCK_RESERVATION_STRATEGY, settings.ORDER_PLACEMENT_IN_SQL = strategy, in_sql
    user, _ = hot
    with connection.cursor() as cursor:
        cursor.execute(ANSWERS_SR503)
    # Inside this test's transaction a service runs in a savepoint and leaves retrying to its
    # caller (project.db.transactions), so the ORM paths hand the Retry up; the SQL placement
    # retries its own call and gives up as a lock timeout (503 with Retry-After).
    with pytest.raises(LockTimeout if in_sql else Retry):
        place(user, [("HOT", 1)])
    assert Order.objects.count() == 1 and bucketed() == 7


def test_the_switch_validates_its_number():
    ProductFactory(sku="HOT")
    for wrong in (-1, 65, 2.5, "4", None):
        with pytest.raises(InvalidInput):
            stock.product_set_buckets(sku="HOT", buckets=wrong)
    with pytest.raises(NotFound):
        stock.product_set_buckets(sku="NOPE", buckets=4)


def test_product_update_switches_hot_mode_with_the_version_check(hot):
    assert Product.objects.get(sku="HOT").version == 2  # product_set_buckets moved it too
    with pytest.raises(VersionConflict):
        stock.product_update(sku="HOT", expected_version=1, changes={"stock_buckets": 0})
    product = stock.product_update(sku="HOT", expected_version=2, changes={"stock_buckets": 0})
    assert product.stock_buckets == 0 and product.version == 3
    assert not StockBucket.objects.exists()
    assert_stock_invariants()


# --- the writers that spend or set a level's free units take the bucket units back first ---------


def test_an_adjustment_down_may_spend_units_held_in_buckets(hot):
    stock.stock_adjust(sku="HOT", warehouse_code="MAIN", delta=-7)
    assert level().on_hand == 3 and level().reserved == 3 and bucketed() == 0
    with pytest.raises(InvalidStock):
        stock.stock_adjust(sku="HOT", warehouse_code="MAIN", delta=-1)
    assert_stock_invariants()


def test_an_adjustment_up_leaves_the_buckets_alone(hot):
    stock.stock_adjust(sku="HOT", warehouse_code="MAIN", delta=5)
    assert bucketed() == 7 and level().on_hand == 15
    assert_stock_invariants()


def test_a_count_below_the_bucket_units_is_accepted_down_to_what_orders_hold(hot):
    current = level()
    with pytest.raises(InvalidStock):
        stock.stock_count(sku="HOT", warehouse_code="MAIN", on_hand=2, expected_version=current.version)
    stock.stock_count(sku="HOT", warehouse_code="MAIN", on_hand=3, expected_version=current.version)
    assert level().on_hand == 3 and level().reserved == 3 and bucketed() == 0
    assert_stock_invariants()


def test_a_transfer_may_move_units_held_in_buckets(hot):
    WarehouseFactory(code="EAST", priority=2)
    stock.stock_transfer(sku="HOT", from_code="MAIN", to_code="EAST", quantity=7)
    assert level().on_hand == 3 and level("HOT", "EAST").on_hand == 7 and bucketed() == 0
    assert_stock_invariants()


def test_a_shipment_from_a_hot_warehouse_elsewhere_moves_its_reservation(db):
    WarehouseFactory(code="MAIN", priority=1)
    WarehouseFactory(code="EAST", priority=2)
    ProductFactory(sku="HOT")
    stock.stock_receive(sku="HOT", warehouse_code="MAIN", quantity=2)
    stock.stock_receive(sku="HOT", warehouse_code="EAST", quantity=6)
    user = UserFactory()
    order = Order.objects.get(number=place(user, [("HOT", 2)]).body["number"])
    stock.product_set_buckets(sku="HOT", buckets=4)
    place(user, [("HOT", 1)])  # EAST's first hot order: its 5 other units go into buckets
    assert bucketed() == 5
    services.order_pay(order_id=order.pk)
    line = order.lines.get()
    services.shipment_create(
        order_id=order.pk,
        warehouse="EAST",
        lines=[services.ShipmentLineRequest(line.pk, 2)],
        move_allocation=True,
        ship=True,
    )
    assert level("HOT", "EAST").on_hand == 4 and level("HOT", "MAIN").reserved == 0
    assert_stock_invariants()


def test_a_warehouse_with_only_bucket_units_reserved_can_be_deactivated(db):
    WarehouseFactory(code="MAIN", priority=1)
    ProductFactory(sku="HOT")
    stock.stock_receive(sku="HOT", warehouse_code="MAIN", quantity=10)
    stock.product_set_buckets(sku="HOT", buckets=4)
    order = Order.objects.get(number=place(UserFactory(), [("HOT", 3)]).body["number"])
    services.order_cancel(order_id=order.pk)
    assert level().reserved == 7 and bucketed() == 7  # the cancel gave its units to the level
    stock.warehouse_deactivate(code="MAIN")
    assert level().reserved == 0 and bucketed() == 0
    assert_stock_invariants()


def test_an_import_may_count_a_hot_level_down_to_what_orders_hold(hot, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    job = ImportJob(original_name="stock.csv")
    job.file.save("stock.csv", ContentFile(csv_bytes(["HOT,MAIN,4"])), save=False)
    job.save()
    finished = imports.import_run(import_id=job.pk)
    assert finished.rows_ok == 1, finished.errors
    assert level().on_hand == 4 and level().reserved == 3 and bucketed() == 0
    assert_stock_invariants()


# --- the writers that give units back or consume allocated units never touch the buckets --------


def test_cancel_and_expiry_give_units_back_to_the_level(hot):
    user, order = hot
    services.order_cancel(order_id=order.pk)
    assert level().reserved == 7 and bucketed() == 7
    second = Order.objects.get(number=place(user, [("HOT", 2)]).body["number"])
    Order.objects.filter(pk=second.pk).update(expires_at=second.created_at)
    assert jobs.expire_reservations() == 1
    assert level().on_hand - level().reserved + bucketed() == 10
    assert_stock_invariants()


def test_fulfilment_and_returns_on_a_hot_level(hot):
    _, order = hot
    services.order_pay(order_id=order.pk)
    services.order_fulfil(order_id=order.pk)
    assert level().on_hand == 7 and level().reserved == 7 and bucketed() == 7
    services.order_return(order_id=order.pk)
    assert level().on_hand == 10 and bucketed() == 7
    assert_stock_invariants()

"""Backorders and preorders, safety stock and limits per product, through the services and both
placement paths (one round trip in SQL, and the ORM's strategies)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from inventory import selectors
from inventory import services as stock
from inventory.errors import InsufficientStock, InvalidInput, SellingRulesConflict, WarehouseBusy
from inventory.models import Product, StockLevel, StockMovement, Warehouse
from orders import jobs
from orders import services as order_services
from orders.api import render_order
from orders.backorders import fill_waiting_backorders
from orders.errors import NotShippable
from orders.models import Allocation, Order
from orders.services import ShipmentLineRequest, shipment_create
from tests.factories import ProductFactory, UserFactory, WarehouseFactory
from tests.invariants import assert_stock_invariants
from tests.orders.conftest import ADDRESS

pytestmark = pytest.mark.django_db

PATHS = [
    pytest.param({"ORDER_PLACEMENT_IN_SQL": True}, id="sql"),
    pytest.param({"ORDER_PLACEMENT_IN_SQL": False, "STOCK_RESERVATION_STRATEGY": "conditional"}, id="orm-conditional"),
    pytest.param({"ORDER_PLACEMENT_IN_SQL": False, "STOCK_RESERVATION_STRATEGY": "row_lock"}, id="orm-row_lock"),
    pytest.param({"ORDER_PLACEMENT_IN_SQL": False, "STOCK_RESERVATION_STRATEGY": "optimistic"}, id="orm-optimistic"),
    pytest.param({"ORDER_PLACEMENT_IN_SQL": False, "STOCK_RESERVATION_STRATEGY": "global_lock"}, id="orm-global"),
]


@pytest.fixture(params=PATHS)
def path(request, settings):
    for name, value in request.param.items():
        setattr(settings, name, value)
    return request.param


@pytest.fixture
def shop(db):
    WarehouseFactory(code="MAIN", priority=1)
    WarehouseFactory(code="EAST", priority=2)
    ProductFactory(sku="MUG")
    ProductFactory(sku="TEA")
    stock.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=2)
    stock.stock_receive(sku="TEA", warehouse_code="MAIN", quantity=10)


def set_rules(sku: str, **changes):
    product = selectors.product_detail(sku=sku)
    return stock.product_update(sku=sku, expected_version=product.version, changes=changes)


def place(user, *lines: tuple[str, int]):
    return order_services.order_place(
        user=user,
        lines=[order_services.OrderLineRequest(sku, quantity) for sku, quantity in lines],
        shipping_address=ADDRESS,
        render=render_order,
    )


def level(sku: str, code: str = "MAIN") -> StockLevel:
    return StockLevel.objects.get(product__sku=sku, warehouse__code=code)


def test_a_backorder_takes_the_shelf_first_then_up_to_the_cap(shop, path):
    set_rules("MUG", backorder_policy="backorder", backorder_cap=5)
    placed = place(UserFactory(), ("MUG", 5))

    assert placed.body["lines"][0]["allocations"] == [{"warehouse": "MAIN", "quantity": 5, "backordered": 3}]
    mug = level("MUG")
    assert (mug.on_hand, mug.reserved, mug.backordered, mug.backorder_cap) == (2, 2, 3, 5)
    assert Allocation.objects.get(line__order__number=placed.body["number"]).backordered == 3
    row = StockMovement.objects.get(reference=placed.body["number"])
    assert (row.reason, row.delta_reserved, row.delta_backordered) == ("reservation", 2, 3)
    # The EAST level of MUG does not exist: only existing levels backorder. 2 more fit the cap.
    with pytest.raises(InsufficientStock) as refused:
        place(UserFactory(), ("MUG", 3))
    assert refused.value.items == [{"sku": "MUG", "requested": 3, "available": 2}]
    place(UserFactory(), ("MUG", 2))
    assert level("MUG").backordered == 5
    assert_stock_invariants()


def test_the_default_policy_still_refuses_beyond_the_shelf(shop, path):
    with pytest.raises(InsufficientStock) as refused:
        place(UserFactory(), ("MUG", 3))
    assert refused.value.items == [{"sku": "MUG", "requested": 3, "available": 2}]
    assert (level("MUG").reserved, level("MUG").backordered) == (0, 0)


def test_a_preorder_is_taken_until_its_date_only(shop, path):
    tomorrow = timezone.now().date() + timedelta(days=1)
    set_rules("TEA", backorder_policy="preorder", backorder_cap=4, preorder_until=tomorrow)
    placed = place(UserFactory(), ("TEA", 12))
    assert placed.body["lines"][0]["allocations"][0]["backordered"] == 2
    # Past the date the product sells from stock only (the date is moved back in the row: staff
    # cannot set a past date, as the next test shows).
    Product.objects.filter(sku="TEA").update(preorder_until=timezone.now().date() - timedelta(days=1))
    with pytest.raises(InsufficientStock):
        place(UserFactory(), ("TEA", 1))
    assert_stock_invariants()


def test_bad_selling_rules_are_refused_and_change_nothing(shop):
    yesterday = timezone.now().date() - timedelta(days=1)
    with pytest.raises(InvalidInput) as bad:
        set_rules("MUG", backorder_policy="preorder", backorder_cap=3, preorder_until=yesterday)
    assert "preorder_until" in bad.value.fields
    with pytest.raises(InvalidInput) as bad:
        set_rules("MUG", backorder_policy="preorder", backorder_cap=3)
    assert "preorder_until" in bad.value.fields
    with pytest.raises(InvalidInput):
        set_rules("MUG", backorder_policy="sometimes")
    with pytest.raises(InvalidInput):
        set_rules("MUG", backorder_cap=-1)
    with pytest.raises(InvalidInput):
        set_rules("MUG", max_per_order=0)
    with pytest.raises(InvalidInput):
        set_rules("MUG", customer_limit_days=0)
    assert selectors.product_detail(sku="MUG").backorder_policy == "deny"

    set_rules("MUG", backorder_policy="backorder", backorder_cap=5)
    place(UserFactory(), ("MUG", 6))  # 4 backordered
    with pytest.raises(InvalidInput) as bad:
        set_rules("MUG", backorder_cap=3)
    assert "backorder_cap" in bad.value.fields
    with pytest.raises(InvalidInput):
        stock.stock_level_configure(sku="MUG", warehouse_code="MAIN", changes={"backorder_cap": 3})
    assert level("MUG").backorder_cap == 5
    # Deny: no new backorders, and the ones taken stay valid (the cap stops at them).
    set_rules("MUG", backorder_policy="deny")
    assert level("MUG").backorder_cap == 4
    with pytest.raises(InsufficientStock):
        place(UserFactory(), ("MUG", 1))
    assert_stock_invariants()


def test_hot_mode_and_backorders_or_safety_stock_exclude_each_other(shop):
    set_rules("MUG", backorder_policy="backorder", backorder_cap=5)
    with pytest.raises(SellingRulesConflict):
        stock.product_set_buckets(sku="MUG", buckets=4)
    with pytest.raises(SellingRulesConflict):
        set_rules("MUG", stock_buckets=4)
    assert selectors.product_detail(sku="MUG").stock_buckets == 0
    stock.product_set_buckets(sku="TEA", buckets=4)
    with pytest.raises(SellingRulesConflict):
        stock.stock_level_configure(sku="TEA", warehouse_code="MAIN", changes={"safety_stock": 2})
    with pytest.raises(SellingRulesConflict):
        set_rules("TEA", backorder_policy="backorder", backorder_cap=1)


def test_stock_that_arrives_fills_the_oldest_backorder_first(shop, path):
    set_rules("MUG", backorder_policy="backorder", backorder_cap=10)
    older = place(UserFactory(), ("MUG", 5)).body["number"]  # 2 on the shelf, 3 backordered
    newer = place(UserFactory(), ("MUG", 2)).body["number"]  # 2 backordered
    version = Order.objects.get(number=older).version
    po = stock.purchase_order_create(warehouse_code="MAIN", lines=[("MUG", 4)])

    stock.purchase_order_receive(purchase_order_id=po.pk, key="D1", lines=[("MUG", 4)])

    waiting = dict(Allocation.objects.values_list("line__order__number", "backordered"))
    assert waiting == {older: 0, newer: 1}
    mug = level("MUG")
    assert (mug.on_hand, mug.reserved, mug.backordered) == (6, 6, 1)
    assert Order.objects.get(number=older).version == version + 1
    fills = StockMovement.objects.filter(reason="backorder").order_by("id")
    assert [(m.reference, m.delta_reserved, m.delta_backordered) for m in fills] == [(older, 3, -3), (newer, 1, -1)]
    # A return to stock, a transfer in and an adjustment up fill too: here an adjustment.
    stock.stock_adjust(sku="MUG", warehouse_code="MAIN", delta=5)
    assert Allocation.objects.get(line__order__number=newer).backordered == 0
    assert level("MUG").available == 4
    assert_stock_invariants()


def test_a_backordered_order_ships_only_once_filled(shop):
    set_rules("MUG", backorder_policy="backorder", backorder_cap=10)
    user = UserFactory()
    order = Order.objects.get(number=place(user, ("MUG", 3)).body["number"])
    order = order_services.order_pay(order_id=order.pk)
    with pytest.raises(NotShippable):
        order_services.order_fulfil(order_id=order.pk)
    stock.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=1)
    order = order_services.order_fulfil(order_id=order.pk)
    assert order.status == "fulfilled"
    mug = level("MUG")
    assert (mug.on_hand, mug.reserved, mug.backordered) == (0, 0, 0)
    assert_stock_invariants()


def test_cancel_and_expiry_give_backordered_units_back(shop, path):
    set_rules("MUG", backorder_policy="backorder", backorder_cap=10)
    cancelled = Order.objects.get(number=place(UserFactory(), ("MUG", 4)).body["number"])
    expiring = Order.objects.get(number=place(UserFactory(), ("MUG", 3)).body["number"])
    assert (level("MUG").reserved, level("MUG").backordered) == (2, 5)

    order_services.order_cancel(order_id=cancelled.pk)
    assert (level("MUG").reserved, level("MUG").backordered) == (0, 3)
    Order.objects.filter(pk=expiring.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    assert jobs.expire_reservations() == 1
    mug = level("MUG")
    assert (mug.reserved, mug.backordered) == (0, 0)
    expiry = StockMovement.objects.get(reference=expiring.number, reason="expiry")
    assert (expiry.delta_reserved, expiry.delta_backordered) == (0, -3)
    assert_stock_invariants()


def test_the_periodic_fill_takes_units_a_cancel_freed(shop):
    set_rules("MUG", backorder_policy="backorder", backorder_cap=10)
    first = Order.objects.get(number=place(UserFactory(), ("MUG", 2)).body["number"])  # the shelf
    waiting = place(UserFactory(), ("MUG", 2)).body["number"]  # backordered
    order_services.order_cancel(order_id=first.pk)  # frees 2 units: no arrival, nothing filled yet
    assert Allocation.objects.get(line__order__number=waiting).backordered == 2

    assert fill_waiting_backorders() == 2
    assert Allocation.objects.get(line__order__number=waiting).backordered == 0
    assert fill_waiting_backorders() == 0
    assert_stock_invariants()


def test_safety_stock_is_not_sold_online_but_staff_still_ship_it(shop, path):
    stock.stock_level_configure(sku="TEA", warehouse_code="MAIN", changes={"safety_stock": 3})
    assert level("TEA").available == 7
    assert selectors.product_detail(sku="TEA").available == 7
    with pytest.raises(InsufficientStock) as refused:
        place(UserFactory(), ("TEA", 8))
    assert refused.value.items == [{"sku": "TEA", "requested": 8, "available": 7}]
    order = Order.objects.get(number=place(UserFactory(), ("TEA", 7)).body["number"])
    assert level("TEA").available == 0
    # Staff take the held-back units (a count, a transfer out) as before.
    stock.stock_transfer(sku="TEA", from_code="MAIN", to_code="EAST", quantity=1)
    order_services.order_pay(order_id=order.pk)
    order_services.order_fulfil(order_id=order.pk)
    assert (level("TEA").on_hand, level("TEA").reserved) == (2, 0)
    assert_stock_invariants()


def test_a_line_above_the_products_limit_per_order_is_a_400_naming_it(shop, path):
    set_rules("TEA", max_per_order=3)
    with pytest.raises(InvalidInput) as bad:
        place(UserFactory(), ("MUG", 1), ("TEA", 4))
    assert bad.value.fields == {"lines": [{}, {"quantity": ["At most 3 of 'TEA' in one order."]}]}
    place(UserFactory(), ("TEA", 3))
    assert level("TEA").reserved == 3


def test_a_customer_limit_counts_live_orders_over_its_period(shop, path):
    set_rules("TEA", customer_limit=4, customer_limit_days=7)
    buyer, other = UserFactory(), UserFactory()
    first = Order.objects.get(number=place(buyer, ("TEA", 3)).body["number"])
    with pytest.raises(InvalidInput) as bad:
        place(buyer, ("TEA", 2))
    assert bad.value.fields == {
        "lines": [{"quantity": ["'TEA' is limited to 4 per customer every 7 days; 1 left for you."]}]
    }
    place(other, ("TEA", 4))  # another customer's count is their own
    place(buyer, ("TEA", 1))
    order_services.order_cancel(order_id=first.pk)  # a cancelled order gives its units back to the count
    place(buyer, ("TEA", 2))
    # Orders older than the period no longer count.
    Order.objects.filter(user=buyer).update(created_at=timezone.now() - timedelta(days=8))
    place(buyer, ("TEA", 1))
    assert_stock_invariants()


def test_units_arriving_in_another_warehouse_fill_the_backorder_and_move_it_there(shop, path):
    """MUG has a level in MAIN only: its backorder waits there. A delivery into EAST (a level
    created by the delivery) fills it, and the allocation moves to EAST, where the units are."""
    set_rules("MUG", backorder_policy="backorder", backorder_cap=10)
    user = UserFactory()
    order = Order.objects.get(number=place(user, ("MUG", 5)).body["number"])  # 2 reserved, 3 backordered in MAIN
    po = stock.purchase_order_create(warehouse_code="EAST", lines=[("MUG", 2)])

    stock.purchase_order_receive(purchase_order_id=po.pk, key="D1", lines=[("MUG", 2)])

    allocations = sorted(
        Allocation.objects.filter(line__order=order).values_list(
            "stock_level__warehouse__code", "quantity", "backordered"
        )
    )
    assert allocations == [("EAST", 2, 0), ("MAIN", 3, 1)]
    main, east = level("MUG"), level("MUG", "EAST")
    assert (main.reserved, main.backordered, east.on_hand, east.reserved, east.backorder_cap) == (2, 1, 2, 2, 10)
    rows = StockMovement.objects.filter(reason="backorder").values_list(
        "level__warehouse__code", "delta_reserved", "delta_backordered"
    )
    assert sorted(rows) == [("EAST", 2, 0), ("MAIN", 0, -2)]
    assert_stock_invariants()

    # The last unit arrives in EAST too; the order can ship from both warehouses.
    stock.stock_receive(sku="MUG", warehouse_code="EAST", quantity=1)
    allocations = sorted(
        Allocation.objects.filter(line__order=order).values_list(
            "stock_level__warehouse__code", "quantity", "backordered"
        )
    )
    assert allocations == [("EAST", 3, 0), ("MAIN", 2, 0)]
    order_services.order_pay(order_id=order.pk)
    assert order_services.order_fulfil(order_id=order.pk).status == "fulfilled"
    assert_stock_invariants()


def test_the_periodic_fill_takes_free_units_of_another_warehouse(shop):
    set_rules("MUG", backorder_policy="backorder", backorder_cap=10)
    waiting = place(UserFactory(), ("MUG", 4)).body["number"]  # 2 reserved, 2 backordered in MAIN
    # Units that reach EAST without an arrival (an import writes levels in SQL): the sweep fills.
    east = StockLevel.objects.create(
        product=Product.objects.get(sku="MUG"), warehouse=Warehouse.objects.get(code="EAST"), on_hand=0
    )
    stock.stock_count(sku="MUG", warehouse_code="EAST", on_hand=5, expected_version=east.version)
    assert Allocation.objects.filter(line__order__number=waiting, backordered__gt=0).exists()

    assert fill_waiting_backorders() == 2
    assert not Allocation.objects.filter(line__order__number=waiting, backordered__gt=0).exists()
    assert (level("MUG", "EAST").reserved, level("MUG").backordered) == (2, 0)
    assert_stock_invariants()


def test_a_warehouse_with_backorders_waiting_cannot_be_deactivated(shop):
    set_rules("MUG", backorder_policy="backorder", backorder_cap=10)
    order = Order.objects.get(number=place(UserFactory(), ("MUG", 4)).body["number"])
    order_services.order_pay(order_id=order.pk)
    # Ship what is on the shelf: the level keeps only its 2 backordered units.
    line_id = order.lines.get().pk
    shipment_create(order_id=order.pk, warehouse="MAIN", lines=[ShipmentLineRequest(line_id, 2)], ship=True)
    assert (level("MUG").reserved, level("MUG").backordered) == (0, 2)

    with pytest.raises(WarehouseBusy):
        stock.warehouse_deactivate(code="MAIN")
    assert_stock_invariants()

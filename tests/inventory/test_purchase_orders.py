"""Purchase orders through their services: recorded, received (in parts, idempotent by delivery
key), cancelled, and shown as the levels' `incoming`."""

from datetime import date

import pytest

from inventory import selectors
from inventory import services as stock
from inventory.errors import DeliveryKeyReused, InvalidInput, PurchaseOrderClosed
from inventory.models import (
    PurchaseOrder,
    PurchaseOrderLine,
    PurchaseOrderReceipt,
    StockBucket,
    StockLevel,
    StockMovement,
)
from orders import services as order_services
from orders.api import render_order
from project.errors import NotFound
from tests.factories import ProductFactory, UserFactory, WarehouseFactory
from tests.invariants import assert_stock_invariants
from tests.orders.conftest import ADDRESS

pytestmark = pytest.mark.django_db


@pytest.fixture
def shop(db):
    WarehouseFactory(code="MAIN", priority=1)
    WarehouseFactory(code="EAST", priority=2)
    for sku in ("MUG", "TEA", "PEN"):
        ProductFactory(sku=sku)
    stock.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=2)


def level(sku: str, code: str = "MAIN") -> StockLevel:
    return selectors.stock_levels(sku=sku, warehouse_code=code).get()


def order_of(lines=(("MUG", 10), ("TEA", 4)), **extra) -> PurchaseOrder:
    return stock.purchase_order_create(warehouse_code="MAIN", lines=list(lines), **extra)


def test_a_purchase_order_shows_as_incoming_and_moves_nothing_until_it_arrives(shop):
    staff = UserFactory(is_staff=True)
    po = order_of(supplier_reference="ACME-77", expected_on=date(2026, 12, 24), actor=staff)
    assert (po.status, po.supplier_reference, po.created_by, po.reference) == ("open", "ACME-77", staff, f"PO-{po.pk}")
    assert [(line.product.sku, line.ordered, line.received) for line in po.lines.order_by("id")] == [
        ("MUG", 10, 0),
        ("TEA", 4, 0),
    ]
    mug = level("MUG")
    assert (mug.on_hand, mug.incoming) == (2, 10)
    assert not StockLevel.objects.filter(product__sku="TEA").exists()  # created when it arrives
    assert level("MUG", "MAIN").available == 2  # incoming is not for sale


def test_receiving_in_parts_adds_on_hand_with_receipt_rows_and_closes_what_arrived(shop):
    staff = UserFactory(is_staff=True)
    po = order_of()
    po, added = stock.purchase_order_receive(purchase_order_id=po.pk, key="D1", lines=[("MUG", 6)], actor=staff)
    assert added and po.status == "open"
    assert (level("MUG").on_hand, level("MUG").incoming) == (8, 4)
    po, added = stock.purchase_order_receive(purchase_order_id=po.pk, key="D2", lines=[("MUG", 4), ("TEA", 4)])
    assert added and po.status == "received"
    assert (level("MUG").on_hand, level("MUG").incoming, level("TEA").on_hand, level("TEA").incoming) == (12, 0, 4, 0)
    rows = StockMovement.objects.filter(reference=po.reference).order_by("id")
    assert [(r.level.product.sku, r.delta_on_hand, r.reason, r.note) for r in rows] == [
        ("MUG", 6, "receipt", "delivery D1"),
        ("MUG", 4, "receipt", "delivery D2"),
        ("TEA", 4, "receipt", "delivery D2"),
    ]
    assert rows[0].actor == staff
    assert list(PurchaseOrderReceipt.objects.values_list("key", "units")) == [("D1", 6), ("D2", 8)]
    assert_stock_invariants()


def test_the_same_delivery_key_adds_once_and_with_other_lines_is_refused(shop):
    po = order_of()
    stock.purchase_order_receive(purchase_order_id=po.pk, key="D1", lines=[("MUG", 3)])
    po, added = stock.purchase_order_receive(purchase_order_id=po.pk, key="D1", lines=[("MUG", 3)])
    assert not added and level("MUG").on_hand == 5
    with pytest.raises(DeliveryKeyReused):
        stock.purchase_order_receive(purchase_order_id=po.pk, key="D1", lines=[("MUG", 4)])
    assert level("MUG").on_hand == 5 and PurchaseOrderReceipt.objects.count() == 1


def test_more_than_expected_is_refused_unless_staff_allow_it(shop):
    po = order_of()
    with pytest.raises(InvalidInput) as refused:
        stock.purchase_order_receive(purchase_order_id=po.pk, key="D1", lines=[("MUG", 11)])
    assert refused.value.fields == {"lines": ["MUG: 11 received, but only 10 still expected."]}
    assert level("MUG").on_hand == 2 and not PurchaseOrderReceipt.objects.exists()
    po, _ = stock.purchase_order_receive(
        purchase_order_id=po.pk, key="D1", lines=[("MUG", 11)], allow_over_receipt=True
    )
    assert level("MUG").on_hand == 13 and level("MUG").incoming == 0
    assert po.status == "open"  # TEA has not arrived


def test_a_closed_or_cancelled_order_receives_nothing_and_cancel_stops_incoming(shop):
    po = order_of(lines=[("MUG", 1)])
    po, _ = stock.purchase_order_receive(purchase_order_id=po.pk, key="D1", lines=[("MUG", 1)])
    with pytest.raises(PurchaseOrderClosed):
        stock.purchase_order_receive(purchase_order_id=po.pk, key="D2", lines=[("MUG", 1)])
    with pytest.raises(PurchaseOrderClosed):
        stock.purchase_order_cancel(purchase_order_id=po.pk)
    other = order_of(lines=[("PEN", 5)])
    stock.purchase_order_receive(purchase_order_id=other.pk, key="D1", lines=[("PEN", 2)])
    assert level("PEN").incoming == 3
    cancelled = stock.purchase_order_cancel(purchase_order_id=other.pk)
    assert cancelled.status == "cancelled" and level("PEN").incoming == 0 and level("PEN").on_hand == 2
    assert stock.purchase_order_cancel(purchase_order_id=other.pk).version == cancelled.version  # no-op
    with pytest.raises(PurchaseOrderClosed):
        stock.purchase_order_receive(purchase_order_id=other.pk, key="D2", lines=[("PEN", 1)])


def test_incoming_counts_open_orders_of_the_levels_warehouse_only(shop):
    order_of(lines=[("MUG", 3)])
    order_of(lines=[("MUG", 4)])
    stock.purchase_order_create(warehouse_code="EAST", lines=[("MUG", 100)])
    cancelled = order_of(lines=[("MUG", 50)])
    stock.purchase_order_cancel(purchase_order_id=cancelled.pk)
    assert level("MUG").incoming == 7
    figures = {(lv.warehouse.code, lv.incoming) for lv in selectors.stock_levels(sku="MUG")}
    assert figures == {("MAIN", 7)}  # EAST has no level yet: its receipt will create it


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([], "Give 1 to 500 lines of SKU and quantity."),
        ([("MUG", 0)], "Line 1: the quantity must be a whole number from 1 to 1000000000."),
        ([("MUG", 1), ("MUG", 2)], "Line 2: MUG is already on another line."),
        ([("no such sku!", 1)], "Line 1: not a SKU."),
        ([("MUG", "3")], "Line 1: the quantity must be a whole number from 1 to 1000000000."),
        ([("MUG", True)], "Line 1: the quantity must be a whole number from 1 to 1000000000."),
        ("MUG 3", "Give 1 to 500 lines of SKU and quantity."),
        ([("MUG", 1)] * 501, "Give 1 to 500 lines of SKU and quantity."),
    ],
)
def test_bad_lines_are_refused_naming_the_line_and_write_nothing(shop, lines, message):
    with pytest.raises(InvalidInput) as refused:
        stock.purchase_order_create(warehouse_code="MAIN", lines=lines)
    assert message in refused.value.fields["lines"]
    assert not PurchaseOrder.objects.exists() and not PurchaseOrderLine.objects.exists()


def test_unknown_skus_warehouse_and_long_fields_are_refused_together(shop):
    with pytest.raises(InvalidInput) as refused:
        stock.purchase_order_create(warehouse_code="NOPE", lines=[("GHOST", 1)], supplier_reference="x" * 65)
    assert set(refused.value.fields) == {"warehouse", "lines", "supplier_reference"}
    assert not PurchaseOrder.objects.exists()


def test_receiving_checks_its_key_lines_and_order(shop):
    po = order_of()
    for key in ("", "k" * 65, "new\nline", None):
        with pytest.raises(InvalidInput):
            stock.purchase_order_receive(purchase_order_id=po.pk, key=key, lines=[("MUG", 1)])
    with pytest.raises(InvalidInput) as refused:
        stock.purchase_order_receive(purchase_order_id=po.pk, key="D1", lines=[("PEN", 1), ("MUG", 1)])
    assert refused.value.fields == {"lines": ["PEN is not on this purchase order."]}
    for missing in (po.pk + 1000, 0, "1", None):
        with pytest.raises(NotFound):
            stock.purchase_order_receive(purchase_order_id=missing, key="D1", lines=[("MUG", 1)])
    assert level("MUG").on_hand == 2 and not PurchaseOrderReceipt.objects.exists()


def test_a_receipt_on_a_hot_level_leaves_its_buckets_as_they_are(shop):
    stock.stock_receive(sku="PEN", warehouse_code="MAIN", quantity=10)
    stock.product_set_buckets(sku="PEN", buckets=4)
    order_services.order_place(
        user=UserFactory(),
        lines=[order_services.OrderLineRequest("PEN", 3)],
        shipping_address=ADDRESS,
        render=render_order,
        idempotency_key="hot-1",
        fingerprint="hot-1",
    )  # the first order spreads the 7 units left over the 4 buckets
    held = sorted(StockBucket.objects.values_list("units", flat=True))
    assert sum(held) == 7
    po = order_of(lines=[("PEN", 5)])
    stock.purchase_order_receive(purchase_order_id=po.pk, key="D1", lines=[("PEN", 5)])
    assert sorted(StockBucket.objects.values_list("units", flat=True)) == held
    pen = level("PEN")
    assert (pen.on_hand, pen.reserved, pen.available) == (15, 10, 12)
    assert_stock_invariants()


def test_a_delivery_of_the_largest_quantities_is_counted_in_full(shop):
    po = stock.purchase_order_create(
        warehouse_code="MAIN", lines=[("MUG", 1_000_000_000), ("TEA", 1_000_000_000), ("PEN", 1_000_000_000)]
    )
    lines = [("MUG", 1_000_000_000), ("TEA", 1_000_000_000), ("PEN", 1_000_000_000)]
    po, added = stock.purchase_order_receive(purchase_order_id=po.pk, key="BIG", lines=lines)
    assert added and po.status == "received"
    assert PurchaseOrderReceipt.objects.get().units == 3_000_000_000
    assert level("MUG").on_hand == 1_000_000_002

"""Reorder points (inventory/reorder.py): the job drafts purchase orders for the levels below their
point, counting open and draft purchase orders; staff edit, confirm or discard the drafts."""

import pytest
from django.db import transaction

from inventory import reorder, selectors
from inventory import services as stock
from inventory.errors import InvalidInput, PurchaseOrderClosed, PurchaseOrderNotDraft, VersionConflict
from inventory.models import Product, PurchaseOrder, StockLevel, Warehouse
from inventory.tasks import draft_reorder_purchase_orders
from project.errors import NotFound
from project.schedules import SCHEDULES
from tests.concurrency.support import run_concurrently
from tests.factories import ProductFactory, UserFactory, WarehouseFactory
from tests.invariants import assert_stock_invariants

pytestmark = pytest.mark.django_db


@pytest.fixture
def shop(db):
    WarehouseFactory(code="MAIN", priority=1)
    WarehouseFactory(code="EAST", priority=2)
    for sku in ("MUG", "TEA", "PEN"):
        ProductFactory(sku=sku)
    stock.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=2)
    stock.stock_receive(sku="TEA", warehouse_code="MAIN", quantity=3)
    stock.stock_receive(sku="MUG", warehouse_code="EAST", quantity=5)
    stock.stock_receive(sku="PEN", warehouse_code="EAST", quantity=50)


def reorder_at(sku: str, code: str, point: int | None, quantity: int = 0) -> None:
    """Fixture setup: the level's reorder settings (their service is not this feature's)."""
    StockLevel.objects.filter(product__sku=sku, warehouse__code=code).update(
        reorder_point=point, reorder_quantity=quantity
    )


def lines_of(order: PurchaseOrder) -> list[tuple[str, int]]:
    return [(line.product.sku, line.ordered) for line in order.lines.select_related("product").order_by("id")]


def drafts_by_warehouse() -> dict[str, list[tuple[str, int]]]:
    drafts = PurchaseOrder.objects.filter(status=PurchaseOrder.Status.DRAFT).select_related("warehouse")
    return {draft.warehouse.code: lines_of(draft) for draft in drafts.order_by("id")}


def incoming(sku: str, code: str = "MAIN") -> int:
    levels = StockLevel.objects.filter(product__sku=sku, warehouse__code=code)
    return selectors.with_stock_figures(levels).get().incoming


def reserve(sku: str, units: int, code: str = "MAIN") -> None:
    with transaction.atomic():
        stock.reserve_stock(lines=[(Product.objects.get(sku=sku), units)], reference=f"ORD-{sku}-{units}")


# --- the job -------------------------------------------------------------------------------------


def test_the_job_drafts_one_purchase_order_per_warehouse_with_what_each_level_lacks(shop):
    staff = UserFactory(is_staff=True)
    reorder_at("MUG", "MAIN", 10, quantity=20)  # projected 2: max(20, 10 - 2) = 20
    reorder_at("TEA", "MAIN", 10)  # projected 3: 7
    reorder_at("MUG", "EAST", 4)  # 5 on hand, 3 reserved, 1 backordered: projected 1, so 3
    reserve("MUG", 5)  # MAIN's 2, then EAST's 3 (warehouse priority)
    StockLevel.objects.filter(product__sku="MUG", warehouse__code="EAST").update(backorder_cap=5, backordered=1)

    drafts = reorder.reorder_proposals_draft(actor=staff)

    assert len(drafts) == 2
    assert drafts_by_warehouse() == {"MAIN": [("MUG", 20), ("TEA", 7)], "EAST": [("MUG", 3)]}
    for draft in drafts:
        draft.refresh_from_db()
        assert (draft.status, draft.note, draft.created_by) == ("draft", "Proposed by the reorder job", staff)
    # A draft is a proposal, not stock on its way.
    assert (incoming("MUG"), incoming("TEA"), incoming("MUG", "EAST")) == (0, 0, 0)


def test_levels_at_or_above_the_point_without_a_point_or_not_selling_are_skipped(shop):
    ProductFactory(sku="CUP", active=False)
    stock.stock_receive(sku="CUP", warehouse_code="MAIN", quantity=1)
    reorder_at("CUP", "MAIN", 10)  # inactive product
    reorder_at("MUG", "MAIN", 2)  # projected 2: at the point, not below it
    reorder_at("PEN", "EAST", 60)  # below, but EAST no longer sells
    Warehouse.objects.filter(code="EAST").update(active=False)
    # TEA at MAIN and MUG at EAST have no reorder point (None: off), whatever their stock.

    assert reorder.reorder_proposals_draft() == []
    assert not PurchaseOrder.objects.exists()


def test_open_purchase_orders_and_drafts_count_so_a_second_run_proposes_nothing_twice(shop):
    reorder_at("MUG", "MAIN", 10)
    po = stock.purchase_order_create(warehouse_code="MAIN", lines=[("MUG", 4)])
    stock.purchase_order_receive(purchase_order_id=po.pk, key="D1", lines=[("MUG", 1)])  # 3 on hand, 3 incoming
    stock.purchase_order_create(warehouse_code="EAST", lines=[("MUG", 100)])  # another warehouse's
    cancelled = stock.purchase_order_create(warehouse_code="MAIN", lines=[("MUG", 100)])
    stock.purchase_order_cancel(purchase_order_id=cancelled.pk)

    (first,) = reorder.reorder_proposals_draft()
    assert lines_of(first) == [("MUG", 4)]  # 10 - (3 + 3)

    assert reorder.reorder_proposals_draft() == []

    reserve("MUG", 2)  # projected 3 - 2 + 3 + 4 = 8: only what fell since
    (second,) = reorder.reorder_proposals_draft()
    assert lines_of(second) == [("MUG", 2)]
    assert reorder.reorder_proposals_draft() == []


def test_a_huge_reorder_point_proposes_at_most_the_largest_quantity(shop):
    reorder_at("MUG", "MAIN", 5_000_000_000)

    (draft,) = reorder.reorder_proposals_draft()

    assert lines_of(draft) == [("MUG", 1_000_000_000)]


def test_the_task_runs_the_job_and_is_scheduled_hourly(shop):
    reorder_at("MUG", "MAIN", 10)

    assert draft_reorder_purchase_orders() == 1
    assert draft_reorder_purchase_orders() == 0
    assert SCHEDULES["reorder proposals"] == (
        "inventory.draft_reorder_purchase_orders",
        "crontab",
        {"minute": "25"},
        "{}",
    )


# --- confirm, edit, discard ----------------------------------------------------------------------


@pytest.fixture
def draft(shop) -> PurchaseOrder:
    reorder_at("MUG", "MAIN", 10)
    reorder_at("TEA", "MAIN", 10)
    (draft,) = reorder.reorder_proposals_draft()
    assert lines_of(draft) == [("MUG", 8), ("TEA", 7)]
    return draft


def test_confirming_a_draft_opens_it_and_makes_it_incoming(draft):
    confirmed = reorder.purchase_order_confirm(purchase_order_id=draft.pk, expected_version=draft.version)

    assert (confirmed.status, confirmed.version) == ("open", draft.version + 1)
    assert (incoming("MUG"), incoming("TEA")) == (8, 7)
    # Incoming now, and no longer drafted: the next run still proposes nothing.
    assert reorder.reorder_proposals_draft() == []


def test_confirming_twice_or_confirming_an_open_order_is_a_409(draft):
    reorder.purchase_order_confirm(purchase_order_id=draft.pk)

    with pytest.raises(PurchaseOrderNotDraft) as refused:
        reorder.purchase_order_confirm(purchase_order_id=draft.pk)
    assert refused.value.status_code == 409
    opened = stock.purchase_order_create(warehouse_code="MAIN", lines=[("PEN", 1)])
    with pytest.raises(PurchaseOrderNotDraft):
        reorder.purchase_order_confirm(purchase_order_id=opened.pk)
    with pytest.raises(NotFound):
        reorder.purchase_order_confirm(purchase_order_id=opened.pk + 1000)


def test_confirming_with_a_stale_version_is_a_conflict(draft):
    reorder.purchase_order_draft_update(purchase_order_id=draft.pk, lines=[("MUG", 9)])

    with pytest.raises(VersionConflict):
        reorder.purchase_order_confirm(purchase_order_id=draft.pk, expected_version=draft.version)
    draft.refresh_from_db()
    assert draft.status == "draft"


def test_a_draft_cannot_be_received(draft):
    with pytest.raises(PurchaseOrderClosed) as refused:
        stock.purchase_order_receive(purchase_order_id=draft.pk, key="D1", lines=[("MUG", 8)])

    assert refused.value.status_code == 409
    assert StockLevel.objects.get(product__sku="MUG", warehouse__code="MAIN").on_hand == 2
    assert not draft.receipts.exists()


def test_discarding_a_draft_cancels_it_and_the_next_run_proposes_again(draft):
    discarded = stock.purchase_order_cancel(purchase_order_id=draft.pk)

    assert discarded.status == "cancelled"
    (again,) = reorder.reorder_proposals_draft()
    assert lines_of(again) == [("MUG", 8), ("TEA", 7)]
    with pytest.raises(PurchaseOrderNotDraft):
        reorder.purchase_order_confirm(purchase_order_id=draft.pk)


def test_staff_set_a_drafts_quantities_remove_and_add_lines_before_confirming(draft):
    updated = reorder.purchase_order_draft_update(
        purchase_order_id=draft.pk, lines=[("MUG", 12), ("TEA", 0), ("PEN", 5)], expected_version=draft.version
    )

    assert updated.version == draft.version + 1
    assert lines_of(draft) == [("MUG", 12), ("PEN", 5)]
    reorder.purchase_order_confirm(purchase_order_id=draft.pk)
    assert incoming("MUG") == 12
    assert_stock_invariants()


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        ([], "Give 1 to 500 lines"),
        ([("MUG", -1)], "from 0 to"),
        ([("MUG", 1), ("MUG", 2)], "already on another line"),
        ([("not a sku!", 1)], "not a SKU"),
        ([("NOPE", 3)], "Unknown SKU 'NOPE'"),
        ([("MUG", 0), ("TEA", 0)], "at least one line"),
    ],
)
def test_a_bad_draft_update_is_refused_and_changes_nothing(draft, lines, problem):
    with pytest.raises(InvalidInput) as refused:
        reorder.purchase_order_draft_update(purchase_order_id=draft.pk, lines=lines)

    assert refused.value.status_code == 400
    assert problem in " ".join(refused.value.fields["lines"])
    assert lines_of(draft) == [("MUG", 8), ("TEA", 7)]
    draft.refresh_from_db()
    assert draft.version == 1


def test_only_a_draft_may_be_edited(draft):
    reorder.purchase_order_confirm(purchase_order_id=draft.pk)

    with pytest.raises(PurchaseOrderNotDraft):
        reorder.purchase_order_draft_update(purchase_order_id=draft.pk, lines=[("MUG", 1)])
    assert lines_of(draft) == [("MUG", 8), ("TEA", 7)]


# --- concurrency ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_runs_at_the_same_time_draft_one_set_of_purchase_orders():
    WarehouseFactory(code="MAIN")
    WarehouseFactory(code="EAST")
    ProductFactory(sku="MUG")
    for code in ("MAIN", "EAST"):
        stock.stock_receive(sku="MUG", warehouse_code=code, quantity=1)
        reorder_at("MUG", code, 10)

    results = run_concurrently(lambda i: reorder.reorder_proposals_draft(), 8)

    assert not [r for r in results if isinstance(r, Exception)], results
    assert sorted(len(r) for r in results) == [0] * 7 + [2]
    assert drafts_by_warehouse() == {"MAIN": [("MUG", 9)], "EAST": [("MUG", 9)]}

"""Reorder points: the hourly job drafts purchase orders, staff edit and confirm them.

A stock level with a `reorder_point` (None: off) is below it when its projected stock

    on_hand - reserved + bucketed + incoming + drafted - backordered

is less than the point: what is on the shelf and free (`available`, counting the units a hot
level's buckets hold, which sit in `reserved`), plus what open purchase orders still expect
(`incoming`, selectors.with_stock_figures), plus what draft purchase orders already propose, minus
the units sold beyond the shelf that the next arrivals must fill first. Counting drafts is what
lets the job run every hour without proposing the same units twice; a draft is still not
`incoming` (staff have not ordered it yet). Only active products in active warehouses reorder.

`reorder_proposals_draft` proposes `max(reorder_quantity, reorder_point - projected)` units per
level below its point: one draft purchase order per warehouse per run, a line per product.
Staff then edit a draft's quantities (`purchase_order_draft_update`), confirm it
(`purchase_order_confirm`: it becomes open, hence incoming) or discard it
(services.purchase_order_cancel). A draft cannot be received: purchase_order_receive takes open
orders only.

Each service opens its own transaction (with the bounded retries of `atomic_with_retry`) and locks
only purchase orders, in the app's lock order (the order's row, then its lines). The job locks no
stock row: it reads the levels once, and what it reads is advisory, as every projection is.
"""

from collections import defaultdict
from collections.abc import Sequence

from django.db.models import (
    BigIntegerField,
    F,
    IntegerField,
    OuterRef,
    QuerySet,
    Subquery,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce, Greatest, Least

from inventory import locks
from inventory.errors import InvalidInput, PurchaseOrderNotDraft, VersionConflict
from inventory.lines import MAX_LINES, sku_quantity_lines
from inventory.models import Product, PurchaseOrder, PurchaseOrderLine, StockLevel
from inventory.selectors import with_stock_figures
from inventory.serializers import MAX_QUANTITY
from project.db.transactions import atomic_with_retry, raise_statement_timeout, try_advisory_xact_lock
from project.errors import NotFound
from project.values import is_whole_number

__all__ = [
    "REORDER_NOTE",
    "purchase_order_confirm",
    "purchase_order_draft_update",
    "reorder_proposals_draft",
    "stock_levels_below_reorder_point",
    "with_on_hand_and_incoming",
]

REORDER_LOCK = "inventory:reorder_proposals"
REORDER_NOTE = "Proposed by the reorder job"
# One statement reads every level with a reorder point: more than a request's statement_timeout.
REORDER_STATEMENT_TIMEOUT_MS = 120_000
# Lines one draft update may name (as purchase_order_create takes at most).
MAX_DRAFT_UPDATE_LINES = MAX_LINES

Status = PurchaseOrder.Status


# --- selectors -----------------------------------------------------------------------------------


def _drafted_subquery() -> Coalesce:
    """Units the level's draft purchase orders propose (by product, then the level's warehouse)."""
    per_level = (
        PurchaseOrderLine.objects.filter(
            product=OuterRef("product"),
            purchase_order__warehouse=OuterRef("warehouse"),
            purchase_order__status=Status.DRAFT,
        )
        .order_by()
        .values("product")
        .annotate(units=Sum("ordered"))
    )
    return Coalesce(Subquery(per_level.values("units"), output_field=BigIntegerField()), Value(0))


def stock_levels_below_reorder_point(*, count_drafts: bool = True) -> QuerySet[StockLevel]:
    """Levels of active products in active warehouses whose projected stock (see the module) is below
    their reorder point, annotated with `bucketed`, `incoming`, `drafted`, `projected` and
    `proposed` (what the job orders: max(reorder_quantity, point - projected), at most
    MAX_QUANTITY). One query, correlated subqueries per level with a point.

    `count_drafts=False` leaves drafts out of the projection: the levels a draft is (or will be)
    proposed for, whether or not the job has run since they fell below."""
    levels = with_stock_figures(
        StockLevel.objects.filter(reorder_point__isnull=False, product__active=True, warehouse__active=True)
    ).annotate(drafted=_drafted_subquery() if count_drafts else Value(0, output_field=BigIntegerField()))
    return (
        levels.annotate(
            projected=F("on_hand") - F("reserved") + F("bucketed") + F("incoming") + F("drafted") - F("backordered")
        )
        .filter(projected__lt=F("reorder_point"))
        .annotate(
            proposed=Least(
                Greatest(F("reorder_quantity"), F("reorder_point") - F("projected")),
                Value(MAX_QUANTITY),
                output_field=BigIntegerField(),
            )
        )
    )


def with_on_hand_and_incoming(products: QuerySet[Product]) -> QuerySet[Product]:
    """These products with `on_hand` and `incoming` annotated, over their levels and purchase orders
    in active warehouses (where selectors.products_with_availability counts `available`):
    `incoming` is what open purchase orders still expect (drafts are not ordered yet). The
    low-stock alert compares available + incoming with the threshold (services.low_stock_alerts_queue)."""
    on_hand = (
        StockLevel.objects.filter(product=OuterRef("pk"), warehouse__active=True)
        .order_by()
        .values("product")
        .annotate(units=Sum("on_hand"))
        .values("units")
    )
    incoming = (
        PurchaseOrderLine.objects.filter(
            product=OuterRef("pk"),
            purchase_order__status=Status.OPEN,
            purchase_order__warehouse__active=True,
            received__lt=F("ordered"),
        )
        .order_by()
        .values("product")
        .annotate(units=Sum(F("ordered") - F("received")))
        .values("units")
    )
    return products.annotate(
        on_hand=Coalesce(Subquery(on_hand, output_field=IntegerField()), Value(0)),
        incoming=Coalesce(Subquery(incoming, output_field=IntegerField()), Value(0)),
    )


# --- the job -------------------------------------------------------------------------------------


@atomic_with_retry
def reorder_proposals_draft(*, actor=None) -> list[PurchaseOrder]:
    """Draft purchase orders for every level below its reorder point; returns the drafts created.

    One draft per warehouse (note REORDER_NOTE, created_by `actor`: None for the scheduled job), a
    line per product with `proposed` units (stock_levels_below_reorder_point). Idempotent in effect:
    drafts count in the projection, so a second run proposes only what fell further since.
    Singleton: a transaction-scoped advisory lock; a run while another holds it does nothing and
    returns []. One transaction; locks no stock row.
    """
    if not try_advisory_xact_lock(REORDER_LOCK):
        return []
    raise_statement_timeout(REORDER_STATEMENT_TIMEOUT_MS)
    proposals = (
        stock_levels_below_reorder_point()
        .order_by("warehouse_id", "product_id")
        .values_list("warehouse_id", "product_id", "proposed")
    )
    by_warehouse: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for warehouse_id, product_id, units in proposals:
        by_warehouse[warehouse_id].append((product_id, units))
    if not by_warehouse:
        return []
    drafts = PurchaseOrder.objects.bulk_create(
        [
            PurchaseOrder(warehouse_id=warehouse_id, status=Status.DRAFT, note=REORDER_NOTE, created_by=actor)
            for warehouse_id in by_warehouse
        ]
    )
    PurchaseOrderLine.objects.bulk_create(
        [
            PurchaseOrderLine(purchase_order=draft, product_id=product_id, ordered=units)
            for draft in drafts
            for product_id, units in by_warehouse[draft.warehouse_id]
        ]
    )
    return drafts


# --- staff: edit, confirm (discarding is services.purchase_order_cancel) -------------------------


def _locked_draft(purchase_order_id: object, expected_version: object) -> PurchaseOrder:
    """The draft, its row locked; NotFound, PurchaseOrderNotDraft or VersionConflict otherwise."""
    if expected_version is not None and not is_whole_number(expected_version, minimum=1):
        raise InvalidInput(fields={"expected_version": ["A whole number from 1, or none."]})
    if not is_whole_number(purchase_order_id, minimum=1):
        raise NotFound("No such purchase order.")
    order = locks.lock_purchase_order(purchase_order_id)
    if order is None:
        raise NotFound("No such purchase order.")
    # The status first: confirming twice says why, whatever version the second request carried.
    if order.status != Status.DRAFT:
        raise PurchaseOrderNotDraft()
    if expected_version is not None and order.version != expected_version:
        raise VersionConflict()
    return order


@atomic_with_retry
def purchase_order_confirm(*, purchase_order_id: int, actor=None, expected_version: int | None = None) -> PurchaseOrder:
    """Order a draft from its supplier: draft -> open, so its lines count as the levels' incoming.

    Locks the purchase order's row; compare-and-set on `version` when `expected_version` is given
    (VersionConflict). Anything but a draft is PurchaseOrderNotDraft (409): confirming twice is
    refused, not repeated. `actor` is the admin's or API caller's user (the admin logs it).
    """
    order = _locked_draft(purchase_order_id, expected_version)
    order.status = Status.OPEN
    order.version += 1
    order.save(update_fields=["status", "version", "updated_at"])
    return order


@atomic_with_retry
def purchase_order_draft_update(
    *,
    purchase_order_id: int,
    lines: Sequence[tuple[str, int]],
    actor=None,
    expected_version: int | None = None,
) -> PurchaseOrder:
    """Set the quantities of a draft's lines before it is confirmed: each (sku, ordered) sets that
    line (a SKU not on the draft is added), 0 removes it; lines not named stay as they are. At
    least one line must be left (discard the draft instead: services.purchase_order_cancel).

    Bad input is InvalidInput (400) naming each bad line, unknown SKUs included; anything but a
    draft is PurchaseOrderNotDraft (409); a stale `expected_version` VersionConflict. Locks the
    order's row, then its lines (the app's lock order); bumps `version`.
    """
    pairs = sku_quantity_lines(lines, minimum=0)  # 0 removes a line
    order = _locked_draft(purchase_order_id, expected_version)
    on_draft = {line.product.sku: line for line in locks.lock_purchase_order_lines(order)}
    products = {
        p.sku: p for p in Product.objects.filter(sku__in=[sku for sku, units in pairs if units and sku not in on_draft])
    }
    unknown = [sku for sku, units in pairs if units and sku not in on_draft and sku not in products]
    if unknown:
        raise InvalidInput(fields={"lines": [f"Unknown SKU {sku!r}." for sku in unknown]})
    removed = [on_draft[sku].pk for sku, units in pairs if not units and sku in on_draft]
    changed = []
    for sku, units in pairs:
        if units and sku in on_draft and on_draft[sku].ordered != units:
            on_draft[sku].ordered = units
            changed.append(on_draft[sku])
    added = [
        PurchaseOrderLine(purchase_order=order, product=products[sku], ordered=units)
        for sku, units in pairs
        if units and sku not in on_draft
    ]
    if len(on_draft) - len(removed) + len(added) < 1:
        raise InvalidInput(fields={"lines": ["A draft keeps at least one line; discard it instead."]})
    PurchaseOrderLine.objects.filter(pk__in=removed).delete()
    PurchaseOrderLine.objects.bulk_update(changed, ["ordered"])
    PurchaseOrderLine.objects.bulk_create(added)
    order.version += 1
    order.save(update_fields=["version", "updated_at"])
    return order

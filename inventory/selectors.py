"""Reads of the inventory app. `available` is summed over active warehouses in one query.

`catalogue_entry` is the public shape of one product, the read shared by the API's product
detail, the product page and the cart: its data cached (inventory.cache), its availability laid
over it (inventory.availability).
"""

import time
from collections.abc import Iterable
from datetime import date, datetime

from django.db.models import F, IntegerField, OuterRef, Prefetch, Q, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from inventory.availability import overlay, remember_payloads
from inventory.cache import cached_product
from inventory.models import (
    Product,
    PurchaseOrder,
    PurchaseOrderLine,
    StockBucket,
    StockLevel,
    StockMovement,
    beyond_the_shelf,
    is_sku,
)
from inventory.serializers import product_payload
from project.errors import NotFound


def _bucketed_subquery() -> Coalesce:
    """Units a level's stock buckets hold (hot mode), 0 without buckets: one probe of the
    stockbucket_level_slot (level, slot) index per level."""
    per_level = StockBucket.objects.filter(level=OuterRef("pk")).order_by().values("level").annotate(units=Sum("units"))
    return Coalesce(Subquery(per_level.values("units"), output_field=IntegerField()), Value(0))


def with_bucketed(levels: QuerySet[StockLevel]) -> QuerySet[StockLevel]:
    """These levels with `bucketed` annotated, so that `StockLevel.available` counts the free units
    held in their stock buckets (they are counted in `reserved`, see StockLevel)."""
    return levels.annotate(bucketed=_bucketed_subquery())


def _incoming_subquery() -> Coalesce:
    """Units a level's open purchase orders still expect (by product, then filtered to the level's
    warehouse and open orders): 0 without any."""
    per_level = (
        PurchaseOrderLine.objects.filter(
            product=OuterRef("product"),
            purchase_order__warehouse=OuterRef("warehouse"),
            purchase_order__status=PurchaseOrder.Status.OPEN,
            received__lt=F("ordered"),
        )
        .order_by()
        .values("product")
        .annotate(units=Sum(F("ordered") - F("received")))
    )
    return Coalesce(Subquery(per_level.values("units"), output_field=IntegerField()), Value(0))


def with_stock_figures(levels: QuerySet[StockLevel]) -> QuerySet[StockLevel]:
    """These levels as staff see them: `bucketed` annotated (see with_bucketed) and `incoming`, what
    their open purchase orders still expect."""
    return with_bucketed(levels).annotate(incoming=_incoming_subquery())


def attach_stock_figures(levels: Iterable[StockLevel]) -> None:
    """Set `bucketed` and `incoming` on level instances read without them (the levels a stock
    service returns), in one query. Read after the service's commit: advisory, as everywhere."""
    by_id = {level.pk: level for level in levels}
    figures = {
        row[0]: row[1:]
        for row in with_stock_figures(StockLevel.objects.filter(pk__in=by_id)).values_list("pk", "bucketed", "incoming")
    }
    for level_id, level in by_id.items():
        level.bucketed, level.incoming = figures.get(level_id, (0, 0))


def purchase_orders(*, status: str | None = None, warehouse_code: str | None = None) -> QuerySet[PurchaseOrder]:
    """Purchase orders, newest first, with their warehouse and lines (and each line's product)."""
    orders = PurchaseOrder.objects.select_related("warehouse").prefetch_related(
        Prefetch("lines", queryset=PurchaseOrderLine.objects.select_related("product").order_by("id"))
    )
    if status is not None:
        orders = orders.filter(status=status)
    if warehouse_code is not None:
        orders = orders.filter(warehouse__code=warehouse_code)
    return orders.order_by("-id")


def purchase_order(*, purchase_order_id: int) -> PurchaseOrder:
    """One purchase order with its lines; NotFound if there is none."""
    found = purchase_orders().filter(pk=purchase_order_id).first() if isinstance(purchase_order_id, int) else None
    if found is None:
        raise NotFound("No such purchase order.")
    return found


def available_units():
    """A level's units orders can take, on levels annotated with `bucketed` (with_bucketed):
    on_hand - reserved - safety stock (never below zero), plus what its buckets hold (units in
    buckets are counted in reserved; a hot level holds no safety stock)."""
    return Greatest(F("on_hand") - F("reserved") - F("safety_stock"), Value(0)) + F("bucketed")


def _available_subquery() -> Coalesce:
    # A product's availability: over its levels in active warehouses (available_units).
    per_product = (
        with_bucketed(StockLevel.objects.filter(product=OuterRef("pk"), warehouse__active=True))
        .order_by()
        .values("product")
        .annotate(units=Sum(available_units()))
        .values("units")
    )
    return Coalesce(Subquery(per_product, output_field=IntegerField()), Value(0))


def products_with_availability() -> QuerySet[Product]:
    return Product.objects.annotate(available=_available_subquery())


def catalogue_list(
    *, search: str = "", active: bool | None = True, updated_since: datetime | None = None
) -> QuerySet[Product]:
    """Products with `available`, filtered. Shoppers see active products; staff may ask for all."""
    products = products_with_availability()
    if search:
        products = products.filter(Q(sku__icontains=search) | Q(name__icontains=search))
    if active is not None:
        products = products.filter(active=active)
    if updated_since is not None:
        products = products.filter(updated_at__gte=updated_since)
    return products


def product_detail(*, sku: str, active_only: bool = False) -> Product | None:
    products = products_with_availability().filter(sku=sku)
    if active_only:
        products = products.filter(active=True)
    return products.first()


def catalogue_entry(sku: str) -> dict | None:
    """The public shape of one product, or None: its data from the cache (shared with the API's
    product detail), its availability current within CATALOGUE_AVAILABILITY_MAX_AGE_MS."""
    if not is_sku(sku):
        return None

    def build():
        read_at = time.monotonic()
        product = product_detail(sku=sku)
        if product is None:
            return None
        payload = product_payload(product)
        remember_payloads([payload], read_at)
        return payload

    entry = cached_product(sku, build)
    return None if entry is None else overlay([entry])[0]


def product_stock_buckets(*, sku: str) -> int | None:
    """The product's hot mode (stock buckets per level, 0: off), read now; None without the product."""
    return Product.objects.filter(sku=sku).values_list("stock_buckets", flat=True).first()


def beyond_shelf(entry: dict) -> str:
    """How a catalogue entry sells beyond its shelf today: "backorder", "preorder" or ""."""
    until = entry.get("preorder_until")
    return beyond_the_shelf(
        entry.get("backorder_policy", "deny"), date.fromisoformat(until) if until else None, timezone.now().date()
    )


def next_arrival(*, sku: str) -> date | None:
    """The earliest expected date of an open purchase order still bringing this product."""
    return (
        PurchaseOrderLine.objects.filter(
            product__sku=sku,
            purchase_order__status=PurchaseOrder.Status.OPEN,
            purchase_order__expected_on__isnull=False,
            received__lt=F("ordered"),
        )
        .order_by("purchase_order__expected_on")
        .values_list("purchase_order__expected_on", flat=True)
        .first()
    )


def sold(entry: dict | None) -> bool:
    """Whether a catalogue entry is a product shoppers may buy (it exists and is active)."""
    return entry is not None and bool(entry.get("active"))


def stock_levels(*, sku: str | None = None, warehouse_code: str | None = None) -> QuerySet[StockLevel]:
    """Levels with their product and warehouse, `available` counting their buckets' units."""
    levels = with_stock_figures(StockLevel.objects.select_related("product", "warehouse"))
    if sku:
        levels = levels.filter(product__sku=sku)
    if warehouse_code:
        levels = levels.filter(warehouse__code=warehouse_code)
    return levels


def level_ledger_totals() -> QuerySet:
    """Per level: the sums of its ledger deltas (invariant 2 compares them with the level)."""
    return (
        StockMovement.objects.order_by()
        .values("level_id")
        .annotate(on_hand=Sum("delta_on_hand"), reserved=Sum(F("delta_reserved") + F("delta_bucketed")))
    )


# Invariants 1, 2 and 7: the level's reserved moves by delta_reserved + delta_bucketed, the
# units its stock buckets hold are the sum of its delta_bucketed (each bucket >= 0 by its CHECK),
# and its backordered units (0 <= backordered <= backorder_cap) the sum of its delta_backordered.
LEDGER_BREACHES_SQL = """
SELECT s.id, p.sku, w.code, s.on_hand, s.reserved, COALESCE(b.units, 0) AS bucketed,
       s.backordered, s.backorder_cap,
       COALESCE(m.on_hand, 0) AS ledger_on_hand, COALESCE(m.reserved, 0) AS ledger_reserved,
       COALESCE(m.bucketed, 0) AS ledger_bucketed, COALESCE(m.backordered, 0) AS ledger_backordered
  FROM inventory_stocklevel s
  JOIN inventory_product p ON p.id = s.product_id
  JOIN inventory_warehouse w ON w.id = s.warehouse_id
  LEFT JOIN (
        SELECT level_id, SUM(delta_on_hand) AS on_hand, SUM(delta_reserved + delta_bucketed) AS reserved,
               SUM(delta_bucketed) AS bucketed, SUM(delta_backordered) AS backordered
          FROM inventory_stockmovement GROUP BY level_id
       ) m ON m.level_id = s.id
  LEFT JOIN (SELECT level_id, SUM(units) AS units FROM inventory_stockbucket GROUP BY level_id) b ON b.level_id = s.id
 WHERE s.reserved < 0 OR s.on_hand < s.reserved
    OR s.on_hand <> COALESCE(m.on_hand, 0) OR s.reserved <> COALESCE(m.reserved, 0)
    OR COALESCE(b.units, 0) <> COALESCE(m.bucketed, 0) OR COALESCE(b.units, 0) > s.reserved
    OR s.backordered < 0 OR s.backordered > s.backorder_cap OR s.backordered <> COALESCE(m.backordered, 0)
 ORDER BY s.id
"""


# Purchase order lines whose `received` is not what the ledger's receipt rows referencing their
# order added to their level, and received orders with a line short of what it ordered.
PURCHASE_ORDER_BREACHES_SQL = """
SELECT l.id AS line_id, po.id AS purchase_order_id, po.status, p.sku, w.code, l.ordered, l.received,
       COALESCE(m.units, 0) AS ledger_received
  FROM inventory_purchaseorderline l
  JOIN inventory_purchaseorder po ON po.id = l.purchase_order_id
  JOIN inventory_product p ON p.id = l.product_id
  JOIN inventory_warehouse w ON w.id = po.warehouse_id
  LEFT JOIN inventory_stocklevel s ON s.product_id = l.product_id AND s.warehouse_id = po.warehouse_id
  LEFT JOIN (
        SELECT level_id, reference, SUM(delta_on_hand) AS units
          FROM inventory_stockmovement WHERE reason = 'receipt' AND reference LIKE 'PO-%%'
         GROUP BY level_id, reference
       ) m ON m.level_id = s.id AND m.reference = 'PO-' || po.id
 WHERE l.received <> COALESCE(m.units, 0) OR (po.status = 'received' AND l.received < l.ordered)
 ORDER BY l.id
"""


def _rows(sql: str) -> list[dict]:
    """The rows of one check's query, each as a dict by column name."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(sql)
        columns = [col.name for col in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def purchase_order_breaches() -> list[dict]:
    """Purchase order lines the ledger does not explain (PURCHASE_ORDER_BREACHES_SQL)."""
    return _rows(PURCHASE_ORDER_BREACHES_SQL)


def stock_ledger_breaches() -> list[dict]:
    """Levels breaking invariant 1 (0 <= reserved <= on_hand) or 2 (ledger sums equal the level)."""
    return _rows(LEDGER_BREACHES_SQL)

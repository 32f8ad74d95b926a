"""Every locking queryset of the inventory app. Read this page to check the lock order.

System-wide order: order row, then its lines, then stock levels by primary key ascending.
Within inventory: a product or warehouse row (when needed) before its stock levels, a purchase
order before its lines and both before the levels a receipt adds to, and a level's
row before its stock buckets (hot mode), which are locked in pk order by the SQL functions of
inventory/migrations/sql/0008_stock_buckets.sql.

Stock levels are locked FOR NO KEY UPDATE: it excludes every other writer of the level just as
FOR UPDATE would, but not the FOR KEY SHARE locks that the foreign keys of new ledger and
allocation rows take on it. PostgreSQL grants those without queueing behind a waiting FOR UPDATE,
so on a hot level a stream of orders would starve a FOR UPDATE (a cancel, a count) for good.
Each query is `order_by("pk")` with `of=("self",)` and evaluated here, so the rows are
locked in pk order the moment the function returns.
"""

from collections.abc import Iterable

from inventory.models import Product, PurchaseOrder, PurchaseOrderLine, StockLevel, Warehouse


def lock_stock_levels(level_ids: Iterable[int]) -> dict[int, StockLevel]:
    """Lock these levels in pk order; returns them by id (missing ids are simply absent)."""
    ids = sorted(set(level_ids))
    if not ids:
        return {}
    rows = list(StockLevel.objects.select_for_update(of=("self",), no_key=True).filter(pk__in=ids).order_by("pk"))
    return {row.pk: row for row in rows}


def lock_stock_levels_of_products(product_ids: Iterable[int]) -> list[StockLevel]:
    """Lock every level of these products (all warehouses) in pk order, with their warehouse."""
    ids = sorted(set(product_ids))
    return list(
        StockLevel.objects.select_for_update(of=("self",), no_key=True)
        .select_related("warehouse")
        .filter(product_id__in=ids)
        .order_by("pk")
    )


def lock_stock_levels_of_warehouse(warehouse_id: int) -> list[StockLevel]:
    return list(
        StockLevel.objects.select_for_update(of=("self",), no_key=True).filter(warehouse_id=warehouse_id).order_by("pk")
    )


def lock_product(product_id: int) -> Product | None:
    return Product.objects.select_for_update(of=("self",)).filter(pk=product_id).order_by("pk").first()


def lock_warehouse(warehouse_id: int) -> Warehouse | None:
    return Warehouse.objects.select_for_update(of=("self",)).filter(pk=warehouse_id).order_by("pk").first()


def lock_warehouse_by_code(code: str) -> Warehouse | None:
    return Warehouse.objects.select_for_update(of=("self",)).filter(code=code).order_by("pk").first()


def lock_purchase_order(purchase_order_id: int) -> PurchaseOrder | None:
    """Lock one purchase order (its row only); None if there is none."""
    return PurchaseOrder.objects.select_for_update(of=("self",)).filter(pk=purchase_order_id).first()


def lock_purchase_order_lines(order: PurchaseOrder) -> list[PurchaseOrderLine]:
    """Lock a purchase order's lines in pk order, with their product (not locked: FOR UPDATE on a
    product would queue behind, and block, every order line and level that references it)."""
    return list(
        PurchaseOrderLine.objects.select_for_update(of=("self",))
        .select_related("product")
        .filter(purchase_order=order)
        .order_by("pk")
    )

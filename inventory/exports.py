"""CSV exports for staff (DESIGN.md §7): products and stock levels, streamed.

Rows come from a server-side cursor (`iterator()`) and go out in batches through a
StreamingHttpResponse, so an export of a million rows holds a few hundred rows in memory at a time.
Text cells that a spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`, a tab or a
carriage return) get a leading single quote; numbers and dates are written as they are.
The stock export's first columns are `sku,warehouse,on_hand`: edited, it can be imported again
(the importer ignores the columns it does not know).
"""

import csv
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from decimal import Decimal

from django.core.exceptions import PermissionDenied
from django.db.models import F, QuerySet
from django.http import HttpRequest, StreamingHttpResponse
from django.utils import timezone

from inventory.models import Product, StockLevel
from inventory.selectors import available_units, products_with_availability, with_stock_figures

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
ROWS_PER_CHUNK = 500
CURSOR_ROWS = 2000

PRODUCT_HEADER = ["sku", "name", "description", "price", "active", "low_stock_threshold", "available", "version"]
STOCK_HEADER = ["sku", "warehouse", "on_hand", "reserved", "available", "incoming", "version", "updated_at"]


def inert(value) -> object:
    """A cell a spreadsheet shows and never evaluates: the one formula guard of every CSV we write
    (these exports, the orders export, the daily sales report)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | Decimal):
        return value  # a number, never a formula
    if isinstance(value, datetime):
        return timezone.localtime(value).isoformat() if timezone.is_aware(value) else value.isoformat()
    text = str(value)
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


class _Echo:
    """csv.writer's file: hands each formatted line back instead of storing it."""

    def write(self, line: str) -> str:
        return line


def csv_lines(header: Sequence[str], rows: Iterable[Sequence]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    batch = [writer.writerow(header)]
    for row in rows:
        batch.append(writer.writerow([inert(value) for value in row]))
        if len(batch) >= ROWS_PER_CHUNK:
            yield "".join(batch)
            batch = []
    if batch:
        yield "".join(batch)


def csv_response(name: str, header: Sequence[str], rows: Iterable[Sequence]) -> StreamingHttpResponse:
    """A streamed CSV download called `<name>-<date>.csv`."""
    response = StreamingHttpResponse(csv_lines(header, rows), content_type="text/csv; charset=utf-8")
    filename = f"{name}-{timezone.localdate().isoformat()}.csv"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "no-store"
    return response


def product_rows(products: QuerySet[Product] | None = None) -> Iterator[tuple]:
    """Products (all, or these) by SKU, with their available units."""
    queryset = products_with_availability()
    if products is not None:
        queryset = queryset.filter(pk__in=products.values("pk"))
    return queryset.order_by("sku").values_list(*PRODUCT_HEADER).iterator(chunk_size=CURSOR_ROWS)


def stock_rows(levels: QuerySet[StockLevel] | None = None) -> Iterator[tuple]:
    """Stock levels (all, or these) by SKU and warehouse, `available` as shown everywhere and
    `incoming`, what open purchase orders still expect."""
    queryset = StockLevel.objects.all() if levels is None else StockLevel.objects.filter(pk__in=levels.values("pk"))
    # `available` counts the units a hot level's buckets hold (they are counted in `reserved`).
    return (
        with_stock_figures(queryset)
        .order_by("product__sku", "warehouse__code")
        .annotate(sku=F("product__sku"), code=F("warehouse__code"), free=available_units())
        .values_list("sku", "code", "on_hand", "reserved", "free", "incoming", "version", "updated_at")
        .iterator(chunk_size=CURSOR_ROWS)
    )


def products_csv(products: QuerySet[Product] | None = None) -> StreamingHttpResponse:
    return csv_response("products", PRODUCT_HEADER, product_rows(products))


def stock_csv(levels: QuerySet[StockLevel] | None = None) -> StreamingHttpResponse:
    return csv_response("stock", STOCK_HEADER, stock_rows(levels))


def require_view_permission(request: HttpRequest, model) -> None:
    """Exports are for staff who may view the model (the admin's view permission)."""
    opts = model._meta
    if not (request.user.is_active and request.user.is_staff):
        raise PermissionDenied
    if not request.user.has_perm(f"{opts.app_label}.view_{opts.model_name}"):
        raise PermissionDenied


def products_csv_view(request: HttpRequest) -> StreamingHttpResponse:
    """Every product as CSV (mounted in the admin, staff only)."""
    require_view_permission(request, Product)
    return products_csv()


def stock_csv_view(request: HttpRequest) -> StreamingHttpResponse:
    """Every stock level as CSV (mounted in the admin, staff only)."""
    require_view_permission(request, StockLevel)
    return stock_csv()

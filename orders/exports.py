"""CSV export of orders for staff (DESIGN.md §7), streamed like the inventory exports.

Mounted by orders.admin next to the product and stock exports (inventory.admin.mount_export, on
the imports page); formula-like text cells are made inert by inventory.exports.inert.
"""

from collections.abc import Iterator

from django.db.models import Count, F, QuerySet
from django.http import HttpRequest, StreamingHttpResponse

from inventory.exports import CURSOR_ROWS, csv_response, require_view_permission
from orders.models import Order

ORDER_HEADER = [
    "number",
    "status",
    "customer",
    "lines",
    "total",
    "currency",
    "paid_amount",
    "reference",
    "shipping_name",
    "shipping_city",
    "shipping_postal_code",
    "shipping_country",
    "created_at",
    "expires_at",
    "paid_at",
    "fulfilled_at",
    "returned_at",
    "cancelled_at",
    "expired_at",
]


def order_rows(orders: QuerySet[Order] | None = None) -> Iterator[tuple]:
    """Orders (all, or these), newest first, with the customer's email and their number of lines."""
    queryset = Order.objects.all() if orders is None else Order.objects.filter(pk__in=orders.values("pk"))
    return (
        queryset.order_by("-id")
        .annotate(customer=F("user__email"), line_count=Count("lines"))
        .values_list(*(name if name != "lines" else "line_count" for name in ORDER_HEADER))
        .iterator(chunk_size=CURSOR_ROWS)
    )


def orders_csv(orders: QuerySet[Order] | None = None) -> StreamingHttpResponse:
    return csv_response("orders", ORDER_HEADER, order_rows(orders))


def orders_csv_view(request: HttpRequest) -> StreamingHttpResponse:
    """Every order as CSV (mounted in the admin, staff only)."""
    require_view_permission(request, Order)
    return orders_csv()

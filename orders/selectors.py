from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db import connection
from django.db.models import Prefetch, QuerySet

from orders.models import Allocation, Order, OrderLine


def orders_visible_to(user, *, as_staff: bool = False) -> QuerySet[Order]:
    """With staff rights every order; otherwise only the user's own (another user's order is a 404).

    `as_staff` is the request's effective right (users.permissions.acts_as_staff: a staff session,
    or a staff user's key with the `staff` scope), never `user.is_staff` alone; it defaults to the
    narrower view so that a caller who forgets it shows too little, not too much."""
    orders = Order.objects.select_related("user")
    if not as_staff:
        orders = orders.filter(user=user)
    return orders


def with_lines(orders: QuerySet[Order]) -> QuerySet[Order]:
    lines = OrderLine.objects.select_related("product").prefetch_related(
        Prefetch("allocations", queryset=Allocation.objects.select_related("stock_level__warehouse"))
    )
    return orders.prefetch_related(Prefetch("lines", queryset=lines))


def order_list(
    *,
    user,
    as_staff: bool = False,
    status: str | None = None,
    updated_since: datetime | None = None,
    owner_email: str | None = None,
) -> QuerySet[Order]:
    """Orders `user` may see (see orders_visible_to); `owner_email` narrows staff's view to one
    customer and means nothing without staff rights (a customer always sees only their own)."""
    orders = orders_visible_to(user, as_staff=as_staff)
    if status:
        orders = orders.filter(status=status)
    if updated_since:
        orders = orders.filter(updated_at__gte=updated_since)
    if owner_email and as_staff:
        orders = orders.filter(user__email=owner_email.lower())
    return with_lines(orders)


def order_for(*, user, number: str, as_staff: bool = False) -> Order | None:
    return with_lines(orders_visible_to(user, as_staff=as_staff)).filter(number=number).first()


RESERVED_VS_ALLOCATIONS_SQL = """
SELECT s.id AS level_id, s.reserved, COALESCE(a.live, 0) AS live_allocations
  FROM inventory_stocklevel s
  LEFT JOIN (
        SELECT al.stock_level_id, SUM(al.quantity) AS live
          FROM orders_allocation al
          JOIN orders_orderline l ON l.id = al.line_id
          JOIN orders_order o ON o.id = l.order_id
         WHERE o.status IN ('reserved', 'paid')
         GROUP BY al.stock_level_id
       ) a ON a.stock_level_id = s.id
 WHERE s.reserved <> COALESCE(a.live, 0)
 ORDER BY s.id
"""

LINES_VS_ALLOCATIONS_SQL = """
SELECT l.id AS line_id, o.number, l.quantity, COALESCE(SUM(al.quantity), 0) AS allocated
  FROM orders_orderline l
  JOIN orders_order o ON o.id = l.order_id
  LEFT JOIN orders_allocation al ON al.line_id = l.id
 GROUP BY l.id, o.number
HAVING l.quantity <> COALESCE(SUM(al.quantity), 0)
 ORDER BY l.id
"""

KEYS_WITH_SEVERAL_ORDERS_SQL = """
SELECT k.user_id, k.key, COUNT(DISTINCT o.id) AS orders
  FROM orders_idempotencykey k
  JOIN orders_order o ON o.id = k.order_id
 GROUP BY k.user_id, k.key
HAVING COUNT(DISTINCT o.id) > 1
"""


def _rows(sql: str) -> list[dict]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(sql)
        columns = [col.name for col in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def order_stock_breaches() -> dict[str, list[dict]]:
    """Invariants 3 (reserved equals live allocations), 4 (allocations cover each line) and 5."""
    return {
        "reserved_vs_allocations": _rows(RESERVED_VS_ALLOCATIONS_SQL),
        "lines_vs_allocations": _rows(LINES_VS_ALLOCATIONS_SQL),
        "idempotency_key_orders": _rows(KEYS_WITH_SEVERAL_ORDERS_SQL),
    }


@dataclass(frozen=True)
class OrderEmailFacts:
    """What an order email says about its order (order_email_facts)."""

    number: str
    email: str
    shipping_name: str
    shipping_city: str
    shipping_country: str
    total: Decimal
    currency: str
    paid_amount: Decimal | None
    expires_at: datetime
    lines: list[tuple[int, str, str]]  # (quantity, product name, SKU), in line order


# One row per line (an order with no line, which placement never makes, still gives one row).
ORDER_EMAIL_FACTS_SQL = """
SELECT o.id, o.number, u.email, o.shipping_name, o.shipping_city, o.shipping_country, o.total, o.currency,
       o.paid_amount, o.expires_at, l.quantity, p.name, p.sku
  FROM orders_order o
  JOIN users_user u ON u.id = o.user_id
  LEFT JOIN orders_orderline l ON l.order_id = o.id
  LEFT JOIN inventory_product p ON p.id = l.product_id
 WHERE o.id = ANY(%s)
 ORDER BY o.id, l.id
"""


def order_email_facts(*, order_ids: list[int]) -> dict[int, OrderEmailFacts]:
    """The email facts of these orders by id (missing ids: orders that no longer exist). One
    query however many orders, read as plain rows: a batch of emails reads in one go, and its cost
    per email is a row, not a model instance or a compiled queryset."""
    facts: dict[int, OrderEmailFacts] = {}
    with connection.cursor() as cursor:
        cursor.execute(ORDER_EMAIL_FACTS_SQL, [list(order_ids)])
        for order_id, *order, quantity, name, sku in cursor.fetchall():
            if order_id not in facts:
                facts[order_id] = OrderEmailFacts(*order, lines=[])
            if quantity is not None:
                facts[order_id].lines.append((quantity, name, sku))
    return facts

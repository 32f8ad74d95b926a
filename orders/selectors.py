from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.db import connection
from django.db.models import Prefetch, QuerySet

from orders.models import Allocation, Order, OrderLine, OrderReturn, ReturnLine, Shipment, ShipmentLine


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


# Invariant 3: a level's reserved is its live allocations' units on the shelf plus what its stock
# buckets hold (hot mode); its backordered, the live allocations' units still waiting for stock.
RESERVED_VS_ALLOCATIONS_SQL = """
SELECT s.id AS level_id, s.reserved, COALESCE(a.live, 0) AS live_allocations, COALESCE(b.units, 0) AS bucketed,
       s.backordered, COALESCE(a.waiting, 0) AS waiting_allocations
  FROM inventory_stocklevel s
  LEFT JOIN (SELECT level_id, SUM(units) AS units FROM inventory_stockbucket GROUP BY level_id) b ON b.level_id = s.id
  LEFT JOIN (
        SELECT al.stock_level_id, SUM(al.quantity - al.shipped - al.backordered) AS live,
               SUM(al.backordered) AS waiting
          FROM orders_allocation al
          JOIN orders_orderline l ON l.id = al.line_id
          JOIN orders_order o ON o.id = l.order_id
         WHERE o.status IN ('reserved', 'paid', 'partially_fulfilled')
         GROUP BY al.stock_level_id
       ) a ON a.stock_level_id = s.id
 WHERE s.reserved <> COALESCE(a.live, 0) + COALESCE(b.units, 0) OR s.backordered <> COALESCE(a.waiting, 0)
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

# Invariant 6, per line: shipped (by its allocations, and by its shipped shipments: the two agree
# per warehouse) <= ordered; shipped + promised to pending shipments <= ordered; returned <= shipped.
SHIPMENTS_VS_LINES_SQL = """
WITH allocated AS (
    SELECT al.line_id, s.warehouse_id, SUM(al.shipped) AS shipped
      FROM orders_allocation al JOIN inventory_stocklevel s ON s.id = al.stock_level_id
     GROUP BY al.line_id, s.warehouse_id
), parcels AS (
    SELECT sl.line_id, sh.warehouse_id,
           COALESCE(SUM(sl.quantity) FILTER (WHERE sh.status = 'shipped'), 0) AS shipped,
           COALESCE(SUM(sl.quantity) FILTER (WHERE sh.status = 'pending'), 0) AS pending
      FROM orders_shipmentline sl JOIN orders_shipment sh ON sh.id = sl.shipment_id
     GROUP BY sl.line_id, sh.warehouse_id
), per_line AS (
    SELECT COALESCE(a.line_id, p.line_id) AS line_id, SUM(COALESCE(a.shipped, 0)) AS shipped,
           SUM(COALESCE(p.pending, 0)) AS pending,
           bool_or(COALESCE(a.shipped, 0) <> COALESCE(p.shipped, 0)) AS books_disagree
      FROM allocated a FULL JOIN parcels p ON p.line_id = a.line_id AND p.warehouse_id = a.warehouse_id
     GROUP BY 1
), returned AS (
    SELECT line_id, SUM(quantity) AS returned FROM orders_returnline GROUP BY line_id
)
SELECT l.id AS line_id, o.number, l.quantity AS ordered, COALESCE(p.shipped, 0) AS shipped,
       COALESCE(p.pending, 0) AS pending, COALESCE(r.returned, 0) AS returned,
       COALESCE(p.books_disagree, false) AS books_disagree
  FROM orders_orderline l
  JOIN orders_order o ON o.id = l.order_id
  LEFT JOIN per_line p ON p.line_id = l.id
  LEFT JOIN returned r ON r.line_id = l.id
 WHERE COALESCE(p.shipped, 0) + COALESCE(p.pending, 0) > l.quantity
    OR COALESCE(r.returned, 0) > COALESCE(p.shipped, 0)
    OR COALESCE(p.books_disagree, false)
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
    """Invariants 3 (reserved equals live allocations), 4 (allocations cover each line), 5, and 6
    (shipped and returned quantities per line)."""
    return {
        "reserved_vs_allocations": _rows(RESERVED_VS_ALLOCATIONS_SQL),
        "lines_vs_allocations": _rows(LINES_VS_ALLOCATIONS_SQL),
        "idempotency_key_orders": _rows(KEYS_WITH_SEVERAL_ORDERS_SQL),
        "shipments_vs_lines": _rows(SHIPMENTS_VS_LINES_SQL),
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


# --- shipping progress (orders.services: shipments and returns) ----------------------------------


@dataclass
class WarehouseProgress:
    """One allocation of a line: the units reserved for it in one warehouse and where they stand."""

    warehouse_id: int
    warehouse_code: str
    level_id: int
    allocation_id: int
    allocated: int
    shipped: int = 0
    pending: int = 0
    backordered: int = 0  # waiting for stock: cannot ship until filled

    @property
    def left(self) -> int:
        """Units of this allocation on the shelf that no shipment has taken or promised yet."""
        return self.allocated - self.backordered - self.shipped - self.pending


@dataclass
class LineProgress:
    """What became of one order line: ordered, shipped, promised to pending shipments, returned."""

    line_id: int
    product_id: int
    sku: str
    name: str
    unit_price: Decimal
    ordered: int
    returned: int = 0
    warehouses: list[WarehouseProgress] = field(default_factory=list)

    @property
    def shipped(self) -> int:
        return sum(w.shipped for w in self.warehouses)

    @property
    def pending(self) -> int:
        return sum(w.pending for w in self.warehouses)

    @property
    def left(self) -> int:
        """Units not yet shipped nor promised to a pending shipment."""
        return self.ordered - self.shipped - self.pending

    @property
    def returnable(self) -> int:
        return self.shipped - self.returned

    @property
    def backordered(self) -> int:
        return sum(w.backordered for w in self.warehouses)

    def at(self, warehouse_id: int) -> WarehouseProgress | None:
        return next((w for w in self.warehouses if w.warehouse_id == warehouse_id), None)


PROGRESS_ALLOCATIONS_SQL = """
SELECT l.id, l.product_id, p.sku, p.name, l.unit_price, l.quantity,
       a.id, a.stock_level_id, s.warehouse_id, w.code, a.quantity, a.shipped, a.backordered,
       COALESCE((SELECT SUM(sl.quantity) FROM orders_shipmentline sl
                   JOIN orders_shipment sh ON sh.id = sl.shipment_id
                  WHERE sl.line_id = l.id AND sh.status = 'pending' AND sh.warehouse_id = s.warehouse_id), 0),
       COALESCE((SELECT SUM(rl.quantity) FROM orders_returnline rl WHERE rl.line_id = l.id), 0)
  FROM orders_orderline l
  JOIN inventory_product p ON p.id = l.product_id
  LEFT JOIN orders_allocation a ON a.line_id = l.id
  LEFT JOIN inventory_stocklevel s ON s.id = a.stock_level_id
  LEFT JOIN inventory_warehouse w ON w.id = s.warehouse_id
 WHERE l.order_id = %s
 ORDER BY l.id, a.id
"""


def shipping_progress(*, order_id: int) -> dict[int, LineProgress]:
    """Each line of the order by id, with its allocations per warehouse: allocated, shipped and
    promised to pending shipments, and what came back. One query. The services read it under the
    order's row lock (every shipment and return of an order locks that row first), so what it
    says cannot change under them."""
    lines: dict[int, LineProgress] = {}
    with connection.cursor() as cursor:
        cursor.execute(PROGRESS_ALLOCATIONS_SQL, [order_id])
        for row in cursor.fetchall():
            line_id, product_id, sku, name, unit_price, ordered, allocation_id, level_id, *rest = row
            warehouse_id, code, allocated, shipped, backordered, pending, returned = rest
            line = lines.get(line_id)
            if line is None:
                line = lines[line_id] = LineProgress(line_id, product_id, sku, name, unit_price, ordered, returned)
            if allocation_id is not None:
                line.warehouses.append(
                    WarehouseProgress(
                        warehouse_id, code, level_id, allocation_id, allocated, shipped, pending, backordered
                    )
                )
    return lines


def order_shipments(*, order_id: int) -> QuerySet:
    """The order's shipments with their lines (and each line's product) and warehouse, oldest first."""
    lines = ShipmentLine.objects.select_related("line__product")
    return (
        Shipment.objects.filter(order_id=order_id)
        .select_related("warehouse")
        .prefetch_related(Prefetch("lines", queryset=lines))
        .order_by("id")
    )


def order_returns(*, order_id: int) -> QuerySet:
    lines = ReturnLine.objects.select_related("line__product", "warehouse")
    return OrderReturn.objects.filter(order_id=order_id).prefetch_related(Prefetch("lines", queryset=lines))

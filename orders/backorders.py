"""Backorders filled from stock that arrives, oldest order first.

Every arrival of units on a level (inventory.services.stock_arrival: a receipt, a purchase order's
delivery, a return to stock, a transfer in, an adjustment up) calls `lock_waiting_orders` first: it
locks the live orders whose allocations wait on those levels, in pk order, before the arrival locks
the levels (DESIGN §4: order rows, then levels), and hands back the fill that runs once the units
are on the levels. The fill gives each waiting allocation what the level's shelf holds (on hand -
reserved - safety stock), oldest order first (created_at, then id), moving those units from the
level's `backordered` to its `reserved` (inventory.services.fill_backorders, a `backorder` ledger
row per order) and from the allocation's `backordered`. An order whose units are all filled can
ship; its version moves on, so its ETag changes.

An order that starts waiting while an arrival runs (it read the level before the units came) is
not among the orders the arrival locked: `fill_waiting_backorders`, the periodic job, fills it, and
any backorder left waiting beside free units (after a cancel, an import, a count, a lowered safety
stock).
"""

from collections import defaultdict
from collections.abc import Callable

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from inventory import services as stock
from inventory.locks import lock_stock_levels
from orders import locks
from orders.models import Allocation, Order

Status = Order.Status
WAITING_STATUSES = (Status.RESERVED, Status.PAID, Status.PARTIALLY_FULFILLED)
SWEEP_LEVELS = 200

WAITING_SQL = """
SELECT a.id, a.stock_level_id, a.backordered, o.id, o.number
  FROM orders_allocation a
  JOIN orders_orderline l ON l.id = a.line_id
  JOIN orders_order o ON o.id = l.order_id
 WHERE a.stock_level_id = ANY(%s) AND a.backordered > 0 AND o.id = ANY(%s)
 ORDER BY o.created_at, o.id, a.id
"""


def _waiting_order_ids(level_ids: list[int]) -> list[int]:
    return list(
        Allocation.objects.filter(
            stock_level_id__in=level_ids, backordered__gt=0, line__order__status__in=WAITING_STATUSES
        )
        .values_list("line__order_id", flat=True)
        .distinct()
    )


def lock_waiting_orders(level_ids: list[int]) -> Callable[[], None]:
    """The arrival hook: lock the orders waiting on these levels (pk order), return their fill."""
    order_ids = _waiting_order_ids(level_ids)
    if not order_ids:
        return lambda: None
    waiting = [order.pk for order in locks.lock_orders(order_ids) if order.status in WAITING_STATUSES]
    return lambda: _fill(level_ids, waiting)


def _fill(level_ids: list[int], order_ids: list[int]) -> int:
    """Fill the allocations of these locked orders waiting on these levels (locked too), oldest
    order first, from what each level's shelf holds now. Returns the units filled."""
    if not order_ids:
        return 0
    free = stock.free_units(level_ids)
    fills, filled_allocations, filled_orders = [], defaultdict(int), set()
    with connection.cursor() as cursor:
        cursor.execute(WAITING_SQL, [level_ids, order_ids])
        for allocation_id, level_id, backordered, order_id, number in cursor.fetchall():
            units = min(backordered, free.get(level_id, 0))
            if units > 0:
                free[level_id] -= units
                fills.append((level_id, units, number))
                filled_allocations[allocation_id] += units
                filled_orders.add(order_id)
    if not fills:
        return 0
    stock.fill_backorders(fills=fills)
    ids = sorted(filled_allocations)
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE orders_allocation AS a SET backordered = a.backordered - v.n
              FROM unnest(%s::bigint[], %s::bigint[]) AS v(id, n)
             WHERE a.id = v.id
            """,
            [ids, [filled_allocations[i] for i in ids]],
        )
    Order.objects.filter(pk__in=filled_orders).update(version=F("version") + 1, updated_at=timezone.now())
    return sum(units for _, units, _ in fills)


FREE_BESIDE_BACKORDERS_SQL = """
SELECT s.id FROM inventory_stocklevel s
 WHERE s.backordered > 0 AND s.on_hand - s.reserved - s.safety_stock > 0
 ORDER BY s.id LIMIT %s
"""


def fill_waiting_backorders(*, limit: int = SWEEP_LEVELS) -> int:
    """The periodic job: fill backorders that wait beside free units, on up to `limit` levels, in
    one transaction (waiting orders locked first, then the levels). Returns the units filled."""
    with connection.cursor() as cursor:
        cursor.execute(FREE_BESIDE_BACKORDERS_SQL, [limit])
        level_ids = [row[0] for row in cursor.fetchall()]
    if not level_ids:
        return 0
    with transaction.atomic():
        waiting = [o.pk for o in locks.lock_orders(_waiting_order_ids(level_ids)) if o.status in WAITING_STATUSES]
        lock_stock_levels(level_ids)
        return _fill(level_ids, waiting)

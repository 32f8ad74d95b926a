"""Backorders filled from stock that arrives, oldest order first.

Every arrival of units on a level (inventory.services.stock_arrival: a receipt, a purchase order's
delivery, a return to stock, a transfer in, an adjustment up) calls `lock_waiting_orders` first: it
locks the live orders with backordered units of the arriving levels' products, in pk order, before
any level is locked (DESIGN §4: order rows, then levels), and names the levels those units wait on,
which the arrival then locks with its own, at once in pk order. Once the units are on the levels,
the fill gives each waiting allocation what the arriving levels' shelves hold (on hand - reserved -
safety stock), oldest order first (created_at, then id), its own level first: the units move from
the waited-on level's `backordered` to the arriving level's `reserved` (inventory.services.
fill_backorders, `backorder` ledger rows), and the allocation's backordered units with them (moved
to the arriving warehouse when it is another one). An order whose units are all filled can ship;
its version moves on, so its ETag changes.

An order that starts waiting while an arrival runs (it read the level before the units came) is
not among the orders the arrival locked: `fill_waiting_backorders`, the periodic job, fills it, and
any backorder left waiting beside free units (after a cancel, an expiry, an import, a count, a
lowered safety stock).
"""

from collections import defaultdict
from collections.abc import Callable, Iterable

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from inventory import services as stock
from inventory.locks import lock_stock_levels
from inventory.models import StockLevel
from orders import locks
from orders.models import Allocation, Order

Status = Order.Status
WAITING_STATUSES = (Status.RESERVED, Status.PAID, Status.PARTIALLY_FULFILLED)
SWEEP_LEVELS = 200

# The waiting allocations of these products in these (locked) orders, oldest order first.
WAITING_SQL = """
SELECT a.id, a.line_id, a.stock_level_id, a.quantity, a.backordered, s.product_id, o.number
  FROM orders_allocation a
  JOIN inventory_stocklevel s ON s.id = a.stock_level_id
  JOIN orders_orderline l ON l.id = a.line_id
  JOIN orders_order o ON o.id = l.order_id
 WHERE s.product_id = ANY(%s) AND a.backordered > 0 AND o.id = ANY(%s)
 ORDER BY o.created_at, o.id, a.id
"""


def _products_of(level_ids: Iterable[int]) -> dict[int, int]:
    return dict(StockLevel.objects.filter(pk__in=list(level_ids)).values_list("pk", "product_id"))


def _waiting(product_ids: Iterable[int]) -> list[tuple[int, int]]:
    """(order id, level id) of each live allocation with backordered units of these products."""
    return list(
        Allocation.objects.filter(
            stock_level__product_id__in=list(product_ids),
            backordered__gt=0,
            line__order__status__in=WAITING_STATUSES,
        ).values_list("line__order_id", "stock_level_id")
    )


def lock_waiting_orders(level_ids: list[int]) -> tuple[Callable[[], int], set[int]]:
    """The arrival hook: lock the orders waiting for these levels' products (pk order); return
    their fill (it returns the units filled) and the levels their units wait on."""
    waiting = _waiting(set(_products_of(level_ids).values()))
    if not waiting:
        return (lambda: 0), set()
    order_ids = [order.pk for order in locks.lock_orders({o for o, _ in waiting}) if order.status in WAITING_STATUSES]
    waited_on = {level for _, level in waiting}
    return (lambda: _fill(level_ids, order_ids, locked={*level_ids, *waited_on})), waited_on


def _fill(level_ids: list[int], order_ids: list[int], *, locked: set[int]) -> int:
    """Fill the waiting allocations of these locked orders from what the arriving levels' shelves
    hold, oldest order first, touching only levels in `locked` (held by this transaction). Returns
    the units filled."""
    if not order_ids:
        return 0
    free = stock.free_units(level_ids)
    arriving: dict[int, list[int]] = defaultdict(list)  # product -> its arriving levels, pk order
    for level_id, product_id in sorted(_products_of(level_ids).items()):
        arriving[product_id].append(level_id)
    fills, same, moved, filled_orders = [], defaultdict(int), [], set()
    with connection.cursor() as cursor:
        cursor.execute(WAITING_SQL, [list(arriving), order_ids])
        rows = cursor.fetchall()
    for allocation_id, line_id, level_id, quantity, backordered, product_id, number in rows:
        if level_id not in locked:  # moved since the hook read it: the next arrival or sweep fills it
            continue
        for source in sorted(arriving[product_id], key=lambda candidate: candidate != level_id):
            units = min(backordered, free[source])
            if units <= 0:
                continue
            free[source] -= units
            backordered -= units
            fills.append((level_id, source, units, number))
            filled_orders.add(number)
            if source == level_id:
                same[allocation_id] += units
            else:
                moved.append((allocation_id, line_id, source, units))
                quantity -= units
            if backordered == 0:
                break
    if not fills:
        return 0
    stock.fill_backorders(fills=fills)
    _update_allocations(same, moved)
    Order.objects.filter(number__in=filled_orders).update(version=F("version") + 1, updated_at=timezone.now())
    return sum(units for _, _, units, _ in fills)


def _update_allocations(same: dict[int, int], moved: list[tuple[int, int, int, int]]) -> None:
    """Filled where they wait: backordered -= n. Filled from another warehouse: the units leave
    the waiting allocation (removed once empty) for the line's allocation at that warehouse."""
    if same:
        ids = sorted(same)
        with connection.cursor() as cursor:
            cursor.execute(
                """
                UPDATE orders_allocation AS a SET backordered = a.backordered - v.n
                  FROM unnest(%s::bigint[], %s::bigint[]) AS v(id, n)
                 WHERE a.id = v.id
                """,
                [ids, [same[i] for i in ids]],
            )
    for allocation_id, line_id, target_level, units in moved:
        Allocation.objects.filter(pk=allocation_id).update(
            quantity=F("quantity") - units, backordered=F("backordered") - units
        )
        Allocation.objects.filter(pk=allocation_id, quantity=0).delete()
        grown = Allocation.objects.filter(line_id=line_id, stock_level_id=target_level).update(
            quantity=F("quantity") + units
        )
        if not grown:
            Allocation.objects.create(line_id=line_id, stock_level_id=target_level, quantity=units)


FREE_BESIDE_BACKORDERS_SQL = """
SELECT s.id FROM inventory_stocklevel s
 WHERE s.on_hand - s.reserved - s.safety_stock > 0
   AND EXISTS (SELECT 1 FROM inventory_stocklevel w WHERE w.product_id = s.product_id AND w.backordered > 0)
 ORDER BY s.id LIMIT %s
"""


def fill_waiting_backorders(*, limit: int = SWEEP_LEVELS) -> int:
    """The periodic job: fill backorders that wait while their product has free units, from up to
    `limit` levels, in one transaction (waiting orders locked first, then every level involved in
    pk order). Returns the units filled."""
    with connection.cursor() as cursor:
        cursor.execute(FREE_BESIDE_BACKORDERS_SQL, [limit])
        level_ids = [row[0] for row in cursor.fetchall()]
    if not level_ids:
        return 0
    with transaction.atomic():
        fill, waited_on = lock_waiting_orders(level_ids)
        lock_stock_levels({*level_ids, *waited_on})
        return fill()

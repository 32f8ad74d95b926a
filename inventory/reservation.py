"""How units are reserved: the four `STOCK_RESERVATION_STRATEGY` values.

Every strategy plans with the same rule (active warehouses by priority, then level id; a line may
split) and none lets an unlocked read decide:

- `conditional` (default): plan from a plain read, then one `UPDATE ... WHERE on_hand - reserved >= n`
  per level in pk order. PostgreSQL re-checks the condition on the newest row version after any
  lock wait, so a zero row count means the units are gone: roll back to a savepoint (only when
  the plan touches several levels) and plan again from a fresh read.
- `row_lock`: `SELECT ... ORDER BY id FOR NO KEY UPDATE` on every level of the products, plan under the
  locks, then one set-based UPDATE.
- `optimistic`: plan from a plain read, then compare-and-set each level on the values read
  (`WHERE on_hand = h AND reserved = r`); a lost race re-reads that level and tries again while
  it has the units, and only a level that lacks them rolls back to a savepoint and plans again.
- `global_lock`: the naive baseline: one advisory lock serialises every reservation.

Safety stock and backorders: a level sells `on_hand - reserved - safety_stock` (never below zero)
from its shelf; a line still short, of a product that takes backorders (Product.takes_backorders),
is backordered on its levels by warehouse priority while `backordered < backorder_cap`. An
allocation's backordered units are added to the level's `backordered`, never to its `reserved`, by
the same conditional UPDATE (`... AND backordered + b <= backorder_cap`), so concurrent orders cannot
pass the cap, which a CHECK on the level row enforces as the last line. Hot levels never backorder
and hold no safety stock (inventory.services refuses the combination).

A hot level (one with stock buckets, inventory.models.StockBucket) is taken from the same way by
every strategy: through the SQL function inventory_hot_take, which picks a bucket nobody holds and
falls back, under the level's and every bucket's lock, to the whole pool. Every plan counts the
buckets' units, read with the level in one statement. The row_lock strategy locks the levels, but
takes from their buckets go on meanwhile: a hot level short of its plan makes the service run
again (Retry), as a lost race does for the other strategies.

After the UPDATEs, the warehouses used are read again in a new statement: a warehouse deactivated
concurrently (see services.warehouse_deactivate) makes the reservation Retry.
"""

import random
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from inventory.errors import InsufficientStock, InvalidInput
from inventory.locks import lock_stock_levels_of_products
from inventory.models import Product, Warehouse
from project.db.transactions import Retry, advisory_xact_lock

STRATEGIES = ("conditional", "row_lock", "optimistic", "global_lock")
OPTIMISTIC_ATTEMPTS = 30
CONDITIONAL_ATTEMPTS = 20
GLOBAL_LOCK_NAME = "inventory:reservations"


@dataclass(frozen=True)
class Allocation:
    level_id: int
    product_id: int
    warehouse_id: int
    quantity: int
    warehouse_code: str = ""
    hot: bool = False  # taken from the level's stock buckets (its ledger row: reserved +n, bucketed -n)
    backordered: int = 0  # of `quantity`, units sold beyond the shelf: the level's backordered, not reserved

    @property
    def reserved(self) -> int:
        return self.quantity - self.backordered


@dataclass
class _Candidate:
    level_id: int
    product_id: int
    warehouse_id: int
    priority: int
    on_hand: int
    reserved: int
    warehouse_code: str
    bucketed: int = 0
    hot: bool = False
    safety_stock: int = 0
    room: int = 0  # backorder_cap - backordered

    @property
    def available(self) -> int:
        return max(self.on_hand - self.reserved - self.safety_stock, 0) + self.bucketed


# The levels of these products in active warehouses, each with its buckets' units and whether it is
# hot (the product in hot mode, or buckets left), in one statement: one snapshot of level and buckets.
CANDIDATES_SQL = """
SELECT s.id, s.product_id, s.warehouse_id, w.priority, s.on_hand, s.reserved, w.code, b.units,
       b.n > 0 OR p.stock_buckets > 0, s.safety_stock, s.backorder_cap - s.backordered
  FROM inventory_stocklevel s
  JOIN inventory_warehouse w ON w.id = s.warehouse_id
  JOIN inventory_product p ON p.id = s.product_id
 CROSS JOIN LATERAL (SELECT count(*) AS n, coalesce(sum(k.units), 0)::bigint AS units
                       FROM inventory_stockbucket k WHERE k.level_id = s.id) AS b
 WHERE s.product_id = ANY(%s) AND w.active
 ORDER BY s.id
"""


def _read_candidates(product_ids: list[int]) -> list[_Candidate]:
    with connection.cursor() as cursor:
        cursor.execute(CANDIDATES_SQL, [product_ids])
        return [_Candidate(*row) for row in cursor.fetchall()]


def _plan(lines: Sequence[tuple[Product, int]], candidates: list[_Candidate]) -> list[Allocation]:
    """Split each line over its product's levels by warehouse priority; InsufficientStock if short."""
    by_product: dict[int, list[_Candidate]] = defaultdict(list)
    for candidate in candidates:
        by_product[candidate.product_id].append(candidate)
    allocations, short = [], []
    today = timezone.now().date()
    for product, quantity in lines:
        levels = sorted(by_product[product.pk], key=lambda c: (c.priority, c.level_id))
        backorders = product.takes_backorders(today)
        remaining = quantity
        taken: dict[int, Allocation] = {}
        for level in levels:
            take = min(remaining, level.available)
            if take > 0:
                taken[level.level_id] = Allocation(
                    level.level_id, product.pk, level.warehouse_id, take, level.warehouse_code, level.hot
                )
                remaining -= take
            if remaining == 0:
                break
        for level in levels if remaining and backorders else ():  # the rest beyond the shelf, by priority
            owe = min(remaining, level.room) if not level.hot else 0
            if owe > 0:
                had = taken.get(level.level_id)
                quantity_before = had.quantity if had is not None else 0
                taken[level.level_id] = Allocation(
                    level.level_id, product.pk, level.warehouse_id, quantity_before + owe, level.warehouse_code,
                    backordered=owe,
                )  # fmt: skip
                remaining -= owe
        allocations.extend(taken.values())
        if remaining:
            available = sum(level.available + (level.room if backorders and not level.hot else 0) for level in levels)
            short.append({"sku": product.sku, "requested": quantity, "available": available})
    if short:
        raise InsufficientStock(short)
    return sorted(allocations, key=lambda a: a.level_id)


@dataclass(frozen=True)
class _For:
    """Whom units are reserved for: the reference and actor of a hot slow path's `bucket` row."""

    reference: str
    actor_id: int | None


def _hot_take(allocation: Allocation, who: _For) -> bool:
    """Take from a hot level's buckets (inventory_hot_take); False when the level and its buckets
    together hold fewer units. Its ledger row is reserve_stock's, like every other reservation.
    SQLSTATE SR503 (it locked a bucket that other orders drained meanwhile, which it cannot give
    back): the whole service runs again."""
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT inventory_hot_take(%s, %s, %s, %s, now())",
                [allocation.level_id, allocation.quantity, who.reference, who.actor_id],
            )
            return cursor.fetchone()[0]
    except DatabaseError as exc:
        if getattr(exc.__cause__, "sqlstate", None) == "SR503":
            raise _HotLoss("a hot bucket was drained while it was being locked") from exc
        raise


def _conditional_update(allocation: Allocation, who: _For) -> bool:
    if allocation.hot:
        return _hot_take(allocation, who)
    with connection.cursor() as cursor:
        cursor.execute(CONDITIONAL_UPDATE_SQL, [allocation.reserved, allocation.backordered, allocation.level_id])
        return cursor.rowcount == 1


# PostgreSQL re-checks the WHERE on the newest row version after any lock wait: units taken from the
# shelf leave the safety stock, units backordered stay within the cap.
CONDITIONAL_UPDATE_SQL = """
UPDATE inventory_stocklevel AS s
   SET reserved = s.reserved + v.r, backordered = s.backordered + v.b, updated_at = now()
  FROM (SELECT %s::bigint AS r, %s::bigint AS b) AS v
 WHERE s.id = %s AND greatest(s.on_hand - s.reserved - s.safety_stock, 0) >= v.r
   AND s.backordered + v.b <= s.backorder_cap
"""


def _set_based_update(allocations: list[Allocation], who: _For) -> None:
    """Add reservations to levels this transaction already holds locked; a hot level's are taken
    from its buckets, which other orders may have emptied since the plan (then Retry)."""
    for allocation in allocations:
        if allocation.hot and not _hot_take(allocation, who):
            raise Retry("a locked hot level lacked the units it was planned with")
    allocations = [a for a in allocations if not a.hot]
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE inventory_stocklevel AS s
               SET reserved = s.reserved + v.r, backordered = s.backordered + v.b, updated_at = now()
              FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[]) AS v(id, r, b)
             WHERE s.id = v.id
            """,
            [
                [a.level_id for a in allocations],
                [a.reserved for a in allocations],
                [a.backordered for a in allocations],
            ],
        )


class _HotLoss(Retry):
    """A lost race after a bucket was taken in this attempt. PostgreSQL keeps such a bucket waited
    for until the whole transaction ends, even once the savepoint that took it is rolled back, so
    going on in this transaction could deadlock with those waiters: the whole service runs again."""


def _attempt(allocations: list[Allocation], reserve) -> bool:
    """Reserve every allocation (pk order) under a savepoint; False, undone, when one loses."""
    took_hot = False
    try:
        with transaction.atomic():  # a savepoint: a lost race undoes (and unlocks) only this attempt
            for allocation in allocations:  # pk order: the system's lock order
                if not reserve(allocation):
                    raise _HotLoss("lost after a hot take") if took_hot else Retry("lost")
                took_hot = took_hot or allocation.hot
        return True
    except _HotLoss:
        raise
    except Retry:
        return False


def _reserve_conditional(lines, product_ids, who: _For) -> list[Allocation]:
    for attempt in range(CONDITIONAL_ATTEMPTS):
        allocations = _plan(lines, _read_candidates(product_ids))
        if len(allocations) == 1:  # the common case: nothing to undo if the update loses
            if _conditional_update(allocations[0], who):
                return allocations
            continue
        if _attempt(allocations, lambda allocation: _conditional_update(allocation, who)):
            return allocations
        time.sleep(random.uniform(0, 0.001 * (attempt + 1)))  # noqa: S311 - jitter, not security
    raise Retry("available units kept changing while reserving")


def _reserve_row_lock(lines, product_ids, who: _For) -> list[Allocation]:
    lock_stock_levels_of_products(product_ids)  # every level, active warehouse or not, in pk order
    allocations = _plan(lines, _read_candidates(product_ids))
    _set_based_update(allocations, who)
    return allocations


def _reserve_optimistic(lines, product_ids, who: _For) -> list[Allocation]:
    for attempt in range(OPTIMISTIC_ATTEMPTS):
        candidates = {c.level_id: c for c in _read_candidates(product_ids)}
        allocations = _plan(lines, list(candidates.values()))

        def compare_and_set(allocation: Allocation, candidates=candidates) -> bool:
            """Compare-and-set on the values read; a lost race re-reads this level and tries again
            while it still has the units, so only a level that lacks them undoes the attempt."""
            if allocation.hot:  # no compare-and-set on a row orders do not write
                return _hot_take(allocation, who)
            read = candidates[allocation.level_id]
            on_hand, reserved, safety = read.on_hand, read.reserved, read.safety_stock
            with connection.cursor() as cursor:
                for _ in range(OPTIMISTIC_ATTEMPTS):
                    if max(on_hand - reserved - safety, 0) < allocation.reserved:
                        return False
                    cursor.execute(
                        "UPDATE inventory_stocklevel SET reserved = reserved + %s, backordered = backordered + %s,"
                        " updated_at = now() WHERE id = %s AND on_hand = %s AND reserved = %s AND safety_stock = %s"
                        " AND backordered + %s <= backorder_cap",
                        [allocation.reserved, allocation.backordered, allocation.level_id, on_hand, reserved, safety,
                         allocation.backordered],
                    )  # fmt: skip
                    if cursor.rowcount == 1:
                        return True
                    cursor.execute(
                        "SELECT on_hand, reserved, safety_stock, backordered + %s <= backorder_cap"
                        " FROM inventory_stocklevel WHERE id = %s",
                        [allocation.backordered, allocation.level_id],
                    )
                    on_hand, reserved, safety, fits = cursor.fetchone()
                    if not fits:
                        return False
            return False

        if _attempt(allocations, compare_and_set):
            return allocations
        time.sleep(random.uniform(0, 0.002 * (attempt + 1)))  # noqa: S311 - jitter, not security
    raise Retry("optimistic reservation kept losing")


def _reserve_global_lock(lines, product_ids, who: _For) -> list[Allocation]:
    advisory_xact_lock(GLOBAL_LOCK_NAME)
    allocations = _plan(lines, _read_candidates(product_ids))
    for allocation in allocations:
        # Staff changes do not take the global lock, so the update still checks availability.
        if not _conditional_update(allocation, who):
            raise Retry("available units changed while reserving")
    return allocations


RESERVERS = {
    "conditional": _reserve_conditional,
    "row_lock": _reserve_row_lock,
    "optimistic": _reserve_optimistic,
    "global_lock": _reserve_global_lock,
}


def reserve_levels(
    lines: Sequence[tuple[Product, int]],
    *,
    strategy: str | None = None,
    reference: str = "",
    actor_id: int | None = None,
) -> list[Allocation]:
    strategy = strategy or settings.STOCK_RESERVATION_STRATEGY
    if strategy not in RESERVERS:
        raise ValueError(f"STOCK_RESERVATION_STRATEGY={strategy!r}; expected one of {', '.join(STRATEGIES)}")
    product_ids = sorted({product.pk for product, _ in lines})
    if len(product_ids) != len(lines):
        raise InvalidInput(fields={"lines": ["Each product may appear on one line only."]})
    allocations = RESERVERS[strategy](lines, product_ids, _For(reference, actor_id))
    # A new statement, so a new snapshot: sees a deactivation that committed while we waited.
    warehouse_ids = {a.warehouse_id for a in allocations}
    if Warehouse.objects.filter(pk__in=warehouse_ids, active=False).exists():
        raise Retry("a warehouse was deactivated while reserving from it")
    return allocations

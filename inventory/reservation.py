"""How units are reserved: the four `STOCK_RESERVATION_STRATEGY` values.

Every strategy plans with the same rule (active warehouses by priority, then level id; a line may
split) and none lets an unlocked read decide:

- `conditional` (default): plan from a plain read, then one `UPDATE ... WHERE on_hand - reserved >= n`
  per level in pk order. PostgreSQL re-checks the condition on the newest row version after any
  lock wait, so a zero row count means the units are gone: roll back to a savepoint (only when
  the plan touches several levels) and plan again from a fresh read.
- `row_lock`: `SELECT ... ORDER BY id FOR UPDATE` on every level of the products, plan under the
  locks, then one set-based UPDATE.
- `optimistic`: plan from a plain read, then compare-and-set each level on the values read
  (`WHERE on_hand = h AND reserved = r`); a lost race rolls back to a savepoint and re-reads.
- `global_lock`: the naive baseline: one advisory lock serialises every reservation.

After the UPDATEs, the warehouses used are read again in a new statement: a warehouse deactivated
concurrently (see services.warehouse_deactivate) makes the reservation Retry.
"""

import random
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction

from inventory.errors import InsufficientStock, InvalidInput
from inventory.locks import lock_stock_levels_of_products
from inventory.models import Product, StockLevel, Warehouse
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


@dataclass
class _Candidate:
    level_id: int
    product_id: int
    warehouse_id: int
    priority: int
    on_hand: int
    reserved: int
    warehouse_code: str

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved


def _read_candidates(product_ids: list[int]) -> list[_Candidate]:
    rows = (
        StockLevel.objects.filter(product_id__in=product_ids, warehouse__active=True)
        .values_list(
            "id", "product_id", "warehouse_id", "warehouse__priority", "on_hand", "reserved", "warehouse__code"
        )
        .order_by("id")
    )
    return [_Candidate(*row) for row in rows]


def _plan(lines: Sequence[tuple[Product, int]], candidates: list[_Candidate]) -> list[Allocation]:
    """Split each line over its product's levels by warehouse priority; InsufficientStock if short."""
    by_product: dict[int, list[_Candidate]] = defaultdict(list)
    for candidate in candidates:
        by_product[candidate.product_id].append(candidate)
    allocations, short = [], []
    for product, quantity in lines:
        levels = sorted(by_product[product.pk], key=lambda c: (c.priority, c.level_id))
        remaining = quantity
        for level in levels:
            take = min(remaining, level.available)
            if take > 0:
                allocations.append(
                    Allocation(level.level_id, product.pk, level.warehouse_id, take, level.warehouse_code)
                )
                remaining -= take
            if remaining == 0:
                break
        if remaining:
            available = sum(max(level.available, 0) for level in levels)
            short.append({"sku": product.sku, "requested": quantity, "available": available})
    if short:
        raise InsufficientStock(short)
    return sorted(allocations, key=lambda a: a.level_id)


def _conditional_update(allocation: Allocation) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE inventory_stocklevel SET reserved = reserved + %s, updated_at = now()"
            " WHERE id = %s AND on_hand - reserved >= %s",
            [allocation.quantity, allocation.level_id, allocation.quantity],
        )
        return cursor.rowcount == 1


def _set_based_update(allocations: list[Allocation]) -> None:
    """Add reservations to levels this transaction already holds locked."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE inventory_stocklevel AS s SET reserved = s.reserved + v.n, updated_at = now()
              FROM unnest(%s::bigint[], %s::bigint[]) AS v(id, n)
             WHERE s.id = v.id
            """,
            [[a.level_id for a in allocations], [a.quantity for a in allocations]],
        )


def _reserve_conditional(lines, product_ids) -> list[Allocation]:
    for attempt in range(CONDITIONAL_ATTEMPTS):
        allocations = _plan(lines, _read_candidates(product_ids))
        if len(allocations) == 1:  # the common case: nothing to undo if the update loses
            if _conditional_update(allocations[0]):
                return allocations
            continue
        try:
            with transaction.atomic():  # a savepoint: a lost race undoes (and unlocks) only this attempt
                for allocation in allocations:  # pk order: the system's lock order
                    if not _conditional_update(allocation):
                        raise Retry("available units changed while reserving")
            return allocations
        except Retry:
            time.sleep(random.uniform(0, 0.001 * (attempt + 1)))  # noqa: S311 - jitter, not security
    raise Retry("available units kept changing while reserving")


def _reserve_row_lock(lines, product_ids) -> list[Allocation]:
    locked = lock_stock_levels_of_products(product_ids)
    candidates = [
        _Candidate(
            lv.pk, lv.product_id, lv.warehouse_id, lv.warehouse.priority, lv.on_hand, lv.reserved, lv.warehouse.code
        )
        for lv in locked
        if lv.warehouse.active
    ]
    allocations = _plan(lines, candidates)
    _set_based_update(allocations)
    return allocations


def _reserve_optimistic(lines, product_ids) -> list[Allocation]:
    for attempt in range(OPTIMISTIC_ATTEMPTS):
        candidates = {c.level_id: c for c in _read_candidates(product_ids)}
        allocations = _plan(lines, list(candidates.values()))
        try:
            with transaction.atomic():  # a savepoint: a lost race undoes only this attempt
                for allocation in allocations:
                    seen = candidates[allocation.level_id]
                    with connection.cursor() as cursor:
                        cursor.execute(
                            "UPDATE inventory_stocklevel SET reserved = reserved + %s, updated_at = now()"
                            " WHERE id = %s AND on_hand = %s AND reserved = %s",
                            [allocation.quantity, allocation.level_id, seen.on_hand, seen.reserved],
                        )
                        if cursor.rowcount != 1:
                            raise Retry("compare-and-set lost")
            return allocations
        except Retry:
            time.sleep(random.uniform(0, 0.002 * (attempt + 1)))  # noqa: S311 - jitter, not security
    raise Retry("optimistic reservation kept losing")


def _reserve_global_lock(lines, product_ids) -> list[Allocation]:
    advisory_xact_lock(GLOBAL_LOCK_NAME)
    allocations = _plan(lines, _read_candidates(product_ids))
    for allocation in allocations:
        # Staff changes do not take the global lock, so the update still checks availability.
        if not _conditional_update(allocation):
            raise Retry("available units changed while reserving")
    return allocations


RESERVERS = {
    "conditional": _reserve_conditional,
    "row_lock": _reserve_row_lock,
    "optimistic": _reserve_optimistic,
    "global_lock": _reserve_global_lock,
}


def reserve_levels(lines: Sequence[tuple[Product, int]], *, strategy: str | None = None) -> list[Allocation]:
    strategy = strategy or settings.STOCK_RESERVATION_STRATEGY
    if strategy not in RESERVERS:
        raise ValueError(f"STOCK_RESERVATION_STRATEGY={strategy!r}; expected one of {', '.join(STRATEGIES)}")
    product_ids = sorted({product.pk for product, _ in lines})
    if len(product_ids) != len(lines):
        raise InvalidInput(fields={"lines": ["Each product may appear on one line only."]})
    allocations = RESERVERS[strategy](lines, product_ids)
    # A new statement, so a new snapshot: sees a deactivation that committed while we waited.
    warehouse_ids = {a.warehouse_id for a in allocations}
    if Warehouse.objects.filter(pk__in=warehouse_ids, active=False).exists():
        raise Retry("a warehouse was deactivated while reserving from it")
    return allocations

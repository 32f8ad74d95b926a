"""Every write of the inventory app.

Staff operations (receive, adjust, count, transfer, product and warehouse edits) are called from
an edge and open their own transaction with bounded retries (`atomic_with_retry`). The stock
primitives (reserve, release, consume, move reservations, receive returns) run inside the calling
service's transaction and refuse to run outside one. Every change of on_hand or reserved writes
its ledger row in the same transaction; a change of product data invalidates the catalogue cache
after commit (availability is never cached with it: inventory.availability).
"""

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from decimal import Decimal

from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from inventory import locks
from inventory.cache import catalogue_changed
from inventory.emails import low_stock_alert_enqueue
from inventory.errors import (
    DeliveryKeyReused,
    InsufficientStock,
    InvalidInput,
    InvalidStock,
    PurchaseOrderClosed,
    SellingRulesConflict,
    VersionConflict,
    WarehouseBusy,
)
from inventory.events import STOCK_LOW, stock_low_emit
from inventory.lines import MAX_LINES, sku_quantity_lines
from inventory.metrics import STOCK_CHANGES
from inventory.models import (
    MAX_STOCK_BUCKETS,
    BackorderPolicy,
    ImportJob,
    Product,
    PurchaseOrder,
    PurchaseOrderLine,
    PurchaseOrderReceipt,
    StockBucket,
    StockLevel,
    StockMovement,
    Warehouse,
)
from inventory.reorder import stock_levels_below_reorder_point, with_on_hand_and_incoming
from inventory.reservation import Allocation, reserve_levels
from inventory.selectors import products_with_availability
from project.db.transactions import atomic_with_retry, require_transaction, try_advisory_xact_lock
from project.errors import NotFound
from project.values import is_whole_number
from project.webhooks.services import webhook_wanted

Reason = StockMovement.Reason
MAX_QUANTITY = 1_000_000_000

__all__ = [
    "Allocation",
    "consume_stock",
    "fill_backorders",
    "free_units",
    "import_file_delete",
    "import_files_prune",
    "move_reservations",
    "on_stock_arrival",
    "product_create",
    "product_set_buckets",
    "product_update",
    "purchase_order_cancel",
    "purchase_order_create",
    "purchase_order_receive",
    "receive_return",
    "reclaim_buckets",
    "release_stock",
    "reserve_stock",
    "stock_adjust",
    "stock_arrival",
    "stock_count",
    "stock_level_configure",
    "stock_receive",
    "stock_transfer",
    "warehouse_activate",
    "warehouse_create",
    "warehouse_deactivate",
    "warehouse_update",
]


# --- helpers ----------------------------------------------------------------------------------


def _product_and_warehouse(sku: str, warehouse_code: str, *, warehouse_field: str = "warehouse"):
    product = Product.objects.filter(sku=sku).first()
    warehouse = Warehouse.objects.filter(code=warehouse_code).first()
    fields = {}
    if product is None:
        fields["sku"] = [f"Unknown SKU {sku!r}."]
    if warehouse is None:
        fields[warehouse_field] = [f"Unknown warehouse {warehouse_code!r}."]
    if fields:
        raise InvalidInput(fields=fields)
    return product, warehouse


def _ensure_levels(pairs: Iterable[tuple[int, int]]) -> dict[tuple[int, int], int]:
    """Level ids for (product_id, warehouse_id) pairs, creating empty levels that are missing, with
    their product's backorder cap.

    INSERT ... ON CONFLICT DO NOTHING, so two requests creating the same level both succeed.
    """
    wanted = sorted(set(pairs))
    caps = dict(
        Product.objects.filter(pk__in={p for p, _ in wanted})
        .exclude(backorder_policy=BackorderPolicy.DENY)
        .values_list("pk", "backorder_cap")
    )  # a new level takes its product's backorder policy (_apply_selling_rules gives it to the others)
    StockLevel.objects.bulk_create(
        [StockLevel(product_id=p, warehouse_id=w, backorder_cap=caps.get(p, 0)) for p, w in wanted],
        ignore_conflicts=True,
    )
    found = StockLevel.objects.filter(product_id__in={p for p, _ in wanted}, warehouse_id__in={w for _, w in wanted})
    ids = {(row.product_id, row.warehouse_id): row.pk for row in found.only("id", "product_id", "warehouse_id")}
    return {pair: ids[pair] for pair in wanted}


LEDGER_WRITE_SQL = (
    "SELECT inventory_ledger_write(%s::bigint[], %s::bigint[], %s::bigint[], %s, %s::text[], %s, %s, %s,"
    " %s::bigint[], %s::bigint[])"
)


def _record(movements: Sequence[StockMovement]) -> None:
    """Write ledger rows (same transaction as the change). The catalogue shows the new availability
    within its bound by itself (inventory.availability): nothing to invalidate.

    The one Python writer of ledger rows: the (unsaved) movements go to the SQL function
    inventory_ledger_write (inventory/migrations/sql/0006_ledger_write.sql), which every SQL path
    calls too, one call per reason, note and actor (a service's movements share them: one round
    trip), stamped with this process's clock as `auto_now_add` would.
    """
    now = timezone.now()
    calls: dict[tuple, list[StockMovement]] = defaultdict(list)
    for movement in movements:
        calls[(movement.reason, movement.note, movement.actor_id)].append(movement)
    with connection.cursor() as cursor:
        for (reason, note, actor_id), rows in calls.items():
            cursor.execute(
                LEDGER_WRITE_SQL,
                [
                    [row.level_id for row in rows],
                    [row.delta_on_hand for row in rows],
                    [row.delta_reserved for row in rows],
                    str(reason),
                    [row.reference for row in rows],
                    note,
                    actor_id,
                    now,
                    [row.delta_bucketed for row in rows],
                    [row.delta_backordered for row in rows],
                ],
            )
    for movement in movements:
        STOCK_CHANGES.labels(reason=movement.reason).inc()


RECLAIM_SQL = "SELECT inventory_buckets_reclaim(%s::bigint[], %s, %s, now())"


def reclaim_buckets(level_ids: Sequence[int], *, reference: str = "", actor_id: int | None = None) -> int:
    """Lock these levels and give the units of their stock buckets back to them (hot mode): level
    by level in pk order, each level's row and then its buckets (inventory_buckets_reclaim), so
    call it before locking several levels at once, never after. Returns the units moved; a level
    without buckets costs one index probe. The next order refills the buckets."""
    with connection.cursor() as cursor:
        cursor.execute(RECLAIM_SQL, [sorted(level_ids), reference, actor_id])
        return cursor.fetchone()[0]


def _lock_levels(level_ids: Iterable[int], *, reference: str = "", actor=None) -> dict[int, StockLevel]:
    """Lock these levels in pk order with every free unit on them: the writers that spend or set a
    level's free units (counts, adjustments, transfers, moved reservations) see `on_hand - reserved`
    as all there is, so a hot level's buckets come back first."""
    ids = sorted(set(level_ids))
    reclaim_buckets(ids, reference=reference, actor_id=actor.pk if actor is not None else None)
    return locks.lock_stock_levels(ids)  # held already: read them as they are now


def _check_quantity(name: str, value: int, *, minimum: int) -> None:
    if not is_whole_number(value, minimum=minimum, maximum=MAX_QUANTITY):
        raise InvalidInput(fields={name: [f"Must be a whole number from {minimum} to {MAX_QUANTITY}."]})


# --- staff stock operations -----------------------------------------------------------------


@atomic_with_retry
def stock_adjust(
    *,
    sku: str,
    warehouse_code: str,
    delta: int,
    actor=None,
    note: str = "",
    expected_version: int | None = None,
    reason: str = Reason.ADJUSTMENT,
    reference: str = "",
) -> StockLevel:
    """Add `delta` (may be negative) to on_hand. One conditional UPDATE; no read decides.

    Raises VersionConflict when `expected_version` is given and stale, InvalidStock when the
    result would fall below reserved (or zero), InvalidInput for unknown SKU or warehouse.
    """
    if delta == 0 or not is_whole_number(delta, minimum=-MAX_QUANTITY, maximum=MAX_QUANTITY):
        raise InvalidInput(fields={"delta": [f"Must be a non-zero whole number within ±{MAX_QUANTITY}."]})
    product, warehouse = _product_and_warehouse(sku, warehouse_code)
    level_id = _ensure_levels([(product.pk, warehouse.pk)])[(product.pk, warehouse.pk)]
    if delta < 0:  # spends free units: a hot level's must all be on the level
        _lock_levels([level_id], reference=reference, actor=actor)
    # Units added fill the level's backorders first (stock_arrival); none wait on a level that gives.
    with stock_arrival([level_id] if delta > 0 else []):
        guarded = StockLevel.objects.filter(pk=level_id, on_hand__gte=F("reserved") - delta)
        if expected_version is not None:
            guarded = guarded.filter(version=expected_version)
        if not guarded.update(on_hand=F("on_hand") + delta, version=F("version") + 1):
            current = StockLevel.objects.get(pk=level_id)
            if expected_version is not None and current.version != expected_version:
                raise VersionConflict(extra={"current_version": current.version})
            raise InvalidStock(
                f"on_hand {current.on_hand} {delta:+} would leave {current.on_hand + delta}, "
                f"below the {current.reserved} reserved units."
            )
        _record(
            [
                StockMovement(
                    level_id=level_id,
                    delta_on_hand=delta,
                    reason=reason,
                    note=note[:200],
                    actor=actor,
                    reference=reference,
                )
            ],
        )
    return StockLevel.objects.select_related("product", "warehouse").get(pk=level_id)


def stock_receive(
    *, sku: str, warehouse_code: str, quantity: int, actor=None, reference: str = "", note: str = ""
) -> StockLevel:
    """A goods receipt: on_hand += quantity (quantity >= 1)."""
    _check_quantity("quantity", quantity, minimum=1)
    return stock_adjust(
        sku=sku,
        warehouse_code=warehouse_code,
        delta=quantity,
        actor=actor,
        reason=Reason.RECEIPT,
        reference=reference,
        note=note,
    )


@atomic_with_retry
def stock_count(
    *, sku: str, warehouse_code: str, on_hand: int, expected_version: int, actor=None, note: str = ""
) -> StockLevel:
    """A cycle count: set on_hand to what was counted, if nobody changed it since it was read.

    Locks the level; VersionConflict if its version is not `expected_version`; InvalidStock if
    the count is below the reserved units. The ledger row carries the real difference.
    """
    _check_quantity("on_hand", on_hand, minimum=0)
    if not is_whole_number(expected_version):
        raise InvalidInput(fields={"expected_version": ["A cycle count needs the version it was counted against."]})
    product, warehouse = _product_and_warehouse(sku, warehouse_code)
    level_id = _ensure_levels([(product.pk, warehouse.pk)])[(product.pk, warehouse.pk)]
    level = _lock_levels([level_id], actor=actor)[level_id]
    if level.version != expected_version:
        raise VersionConflict(extra={"current_version": level.version})
    if on_hand < level.reserved:
        raise InvalidStock(f"Counted {on_hand}, but {level.reserved} units are reserved for orders.")
    delta = on_hand - level.on_hand
    if delta:
        level.on_hand = on_hand
        level.version += 1
        level.save(update_fields=["on_hand", "version", "updated_at"])
    _record(
        [StockMovement(level_id=level_id, delta_on_hand=delta, reason=Reason.COUNT, note=note[:200], actor=actor)],
    )
    level.product, level.warehouse = product, warehouse
    return level


@atomic_with_retry
def stock_transfer(
    *, sku: str, from_code: str, to_code: str, quantity: int, actor=None, note: str = ""
) -> tuple[StockLevel, StockLevel]:
    """Move available units between two warehouses: both levels locked in pk order.

    InsufficientStock if the source has fewer available units than `quantity`.
    """
    _check_quantity("quantity", quantity, minimum=1)
    if from_code == to_code:
        raise InvalidInput(fields={"to": ["Source and destination must differ."]})
    product, source = _product_and_warehouse(sku, from_code, warehouse_field="from")
    _, target = _product_and_warehouse(sku, to_code, warehouse_field="to")
    ids = _ensure_levels([(product.pk, source.pk), (product.pk, target.pk)])
    source_id, target_id = ids[(product.pk, source.pk)], ids[(product.pk, target.pk)]
    with stock_arrival([target_id], also=[source_id]):
        src, dst = _transfer_units(source_id, target_id, sku=sku, quantity=quantity, actor=actor)
        _record_transfer(source_id, target_id, f"transfer:{from_code}->{to_code}", quantity, note=note, actor=actor)
    for level, warehouse in ((src, source), (dst, target)):
        level.product, level.warehouse = product, warehouse
    return src, dst


def _transfer_units(source_id: int, target_id: int, *, sku: str, quantity: int, actor) -> tuple[StockLevel, StockLevel]:
    levels = _lock_levels([source_id, target_id], actor=actor)
    src, dst = levels[source_id], levels[target_id]
    if src.unreserved < quantity:  # staff may move the safety stock too
        raise InsufficientStock([{"sku": sku, "requested": quantity, "available": src.unreserved}])
    src.on_hand -= quantity
    dst.on_hand += quantity
    for level in (src, dst):
        level.version += 1
        level.save(update_fields=["on_hand", "version", "updated_at"])
    return src, dst


def _record_transfer(source_id: int, target_id: int, reference: str, quantity: int, *, note: str, actor) -> None:
    _record(
        [
            StockMovement(
                level_id=source_id,
                delta_on_hand=-quantity,
                reason=Reason.TRANSFER,
                reference=reference,
                note=note[:200],
                actor=actor,
            ),
            StockMovement(
                level_id=target_id,
                delta_on_hand=quantity,
                reason=Reason.TRANSFER,
                reference=reference,
                note=note[:200],
                actor=actor,
            ),
        ],
    )


# --- catalogue ---------------------------------------------------------------------------------

PRODUCT_EDITABLE = {
    "name",
    "description",
    "price",
    "active",
    "low_stock_threshold",
    "max_per_order",
    "customer_limit",
    "customer_limit_days",
    "backorder_policy",
    "backorder_cap",
    "preorder_until",
}
# Selling beyond the shelf: applied to each level of the product (its backorder_cap) on change.
BACKORDER_FIELDS = {"backorder_policy", "backorder_cap", "preorder_until"}
MAX_LIMIT_DAYS = 3650


def _check_selling_rules(changes: dict) -> None:
    """The product's backorder policy and limits, as sent (the levels are checked under lock)."""
    errors: dict[str, list[str]] = {}
    if "backorder_policy" in changes and changes["backorder_policy"] not in BackorderPolicy.values:
        errors["backorder_policy"] = [f"One of {', '.join(BackorderPolicy.values)}."]
    if "backorder_cap" in changes and not is_whole_number(changes["backorder_cap"], minimum=0, maximum=MAX_QUANTITY):
        errors["backorder_cap"] = [f"Must be a whole number from 0 to {MAX_QUANTITY}."]
    until = changes.get("preorder_until")
    if until is not None and (not isinstance(until, date) or isinstance(until, datetime)):
        errors["preorder_until"] = ["Must be a date (YYYY-MM-DD)."]
    elif until is not None and until < timezone.now().date():
        errors["preorder_until"] = ["The preorder date is in the past."]
    for name in ("max_per_order", "customer_limit"):
        if changes.get(name) is not None and not is_whole_number(changes[name], minimum=1, maximum=MAX_QUANTITY):
            errors[name] = [f"Must be a whole number from 1 to {MAX_QUANTITY}, or null for no limit."]
    if "customer_limit_days" in changes and not is_whole_number(
        changes["customer_limit_days"], minimum=1, maximum=MAX_LIMIT_DAYS
    ):
        errors["customer_limit_days"] = [f"Must be a whole number of days from 1 to {MAX_LIMIT_DAYS}."]
    if errors:
        raise InvalidInput(fields=errors)


def _apply_selling_rules(product: Product) -> None:
    """Apply the product's backorder policy to each of its levels (their backorder_cap: a CHECK
    sees one row only), with the levels locked in pk order after the product (updated, so locked,
    by the caller). `deny` takes no new backorders: each cap stops at what is backordered already,
    which arrivals fill as before. A cap below what a level has backordered is refused. Hot mode
    cannot be combined with backorders or safety stock (SellingRulesConflict)."""
    if product.backorder_policy == BackorderPolicy.PREORDER and product.preorder_until is None:
        raise InvalidInput(fields={"preorder_until": ["A preorder needs the date it is taken until."]})
    levels = locks.lock_stock_levels(StockLevel.objects.filter(product_id=product.pk).values_list("pk", flat=True))
    if product.stock_buckets and (
        product.backorder_policy != BackorderPolicy.DENY or any(level.safety_stock for level in levels.values())
    ):
        raise SellingRulesConflict()
    deny = product.backorder_policy == BackorderPolicy.DENY
    below = [level for level in levels.values() if not deny and level.backordered > product.backorder_cap]
    if below:
        raise InvalidInput(
            fields={
                "backorder_cap": [
                    f"Below what is already backordered: {level.backordered} at {level.warehouse_id}."
                    for level in below
                ]
            }
        )
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE inventory_stocklevel SET backorder_cap = CASE WHEN %s THEN backordered ELSE %s END,"
            " updated_at = now() WHERE id = ANY(%s)",
            [deny, product.backorder_cap, sorted(levels)],
        )


@atomic_with_retry
def product_create(
    *, sku: str, name: str, price: Decimal, description: str = "", active: bool = True, low_stock_threshold: int = 5
) -> Product:
    """Create a product; InvalidInput if the SKU exists."""
    product = Product(
        sku=sku, name=name, price=price, description=description, active=active, low_stock_threshold=low_stock_threshold
    )
    try:
        with transaction.atomic():
            product.save()
    except IntegrityError:
        raise InvalidInput(fields={"sku": [f"A product with SKU {sku!r} already exists."]}) from None
    catalogue_changed([sku])
    return product


@atomic_with_retry
def product_update(*, sku: str, expected_version: int, changes: dict, actor=None) -> Product:
    """Apply `changes` if the product is still at `expected_version`: compare-and-set, never overwrite.

    `stock_buckets` switches hot mode (see _switch_buckets) in the same transaction.
    Raises NotFound, VersionConflict (the API answers 412), InvalidInput for unknown fields.
    """
    unknown = set(changes) - PRODUCT_EDITABLE - {"stock_buckets"}
    if unknown:
        raise InvalidInput(fields={name: ["This field cannot be changed."] for name in sorted(unknown)})
    if "stock_buckets" in changes:
        _check_buckets(changes["stock_buckets"])
    _check_selling_rules(changes)
    updated = Product.objects.filter(sku=sku, version=expected_version).update(
        **changes, version=F("version") + 1, updated_at=timezone.now()
    )
    if not updated:
        current = Product.objects.filter(sku=sku).only("version").first()
        if current is None:
            raise NotFound(f"No product with SKU {sku!r}.")
        raise VersionConflict(extra={"current_version": current.version})
    product = Product.objects.get(sku=sku)
    if BACKORDER_FIELDS & changes.keys() or changes.get("stock_buckets"):
        _apply_selling_rules(product)
    if "stock_buckets" in changes:
        _switch_buckets(product, actor=actor)
    catalogue_changed([sku])
    return product


def _check_buckets(buckets: object) -> None:
    if not is_whole_number(buckets, minimum=0, maximum=MAX_STOCK_BUCKETS):
        raise InvalidInput(
            fields={"stock_buckets": [f"Must be a whole number from 0 (hot mode off) to {MAX_STOCK_BUCKETS}."]}
        )


def _switch_buckets(product: Product, *, actor=None) -> None:
    """Hot mode, on (the product's stock_buckets >= 1), off (0) or resized, while orders flow.

    The caller has updated (so locked) the product row. Its levels are locked in pk order, then
    their buckets (inventory_buckets_reclaim); every bucket's units go back to its level and the
    buckets are removed. The next order on each level creates the product's number of
    buckets and spreads the level's free units over them (inventory_hot_take). An order planned
    before the switch stays exact either way: a take that finds no bucket with its units falls
    back, under the level's lock, to the whole pool, and a cold take only ever spends the level's
    own free units.
    """
    ids = list(StockLevel.objects.filter(product_id=product.pk).values_list("pk", flat=True))
    reclaim_buckets(ids, reference=f"hot:{product.sku}", actor_id=actor.pk if actor is not None else None)
    StockBucket.objects.filter(level_id__in=ids).delete()


@atomic_with_retry
def product_set_buckets(*, sku: str, buckets: int, actor=None) -> Product:
    """Turn hot mode on with `buckets` stock buckets per level, or off with 0: the admin's actions,
    which act on a list of products and so carry no version. The version moves as with any edit,
    so a form or PATCH read before the switch is refused rather than undoing it."""
    _check_buckets(buckets)
    updated = Product.objects.filter(sku=sku).update(
        stock_buckets=buckets, version=F("version") + 1, updated_at=timezone.now()
    )
    if not updated:
        raise NotFound(f"No product with SKU {sku!r}.")
    product = Product.objects.get(sku=sku)
    if buckets:
        _apply_selling_rules(product)
    _switch_buckets(product, actor=actor)
    catalogue_changed([sku])
    return product


LEVEL_SETTINGS = {"safety_stock", "backorder_cap", "reorder_point", "reorder_quantity"}


@atomic_with_retry
def stock_level_configure(*, sku: str, warehouse_code: str, changes: dict, actor=None) -> StockLevel:
    """Set a level's safety stock, backorder cap (its own, over the product's), reorder point
    (None: off) and reorder quantity. The level is created if missing and locked; a backorder cap
    below what it has backordered, or safety stock on a product in hot mode, is refused."""
    unknown = set(changes) - LEVEL_SETTINGS
    errors = {name: ["This field cannot be changed here."] for name in sorted(unknown)}
    for name, value in changes.items():
        if name in LEVEL_SETTINGS and not (
            (name == "reorder_point" and value is None) or is_whole_number(value, minimum=0, maximum=MAX_QUANTITY)
        ):
            errors[name] = [f"Must be a whole number from 0 to {MAX_QUANTITY}."]
    if not changes:
        errors["settings"] = ["Send at least one setting to change."]
    if errors:
        raise InvalidInput(fields=errors)
    product, warehouse = _product_and_warehouse(sku, warehouse_code)
    level_id = _ensure_levels([(product.pk, warehouse.pk)])[(product.pk, warehouse.pk)]
    level = locks.lock_stock_levels([level_id])[level_id]
    if changes.get("safety_stock") and (product.stock_buckets or level.buckets.exists()):
        raise SellingRulesConflict()
    if changes.get("backorder_cap", level.backorder_cap) < level.backordered:
        raise InvalidInput(fields={"backorder_cap": [f"Below the {level.backordered} units already backordered here."]})
    StockLevel.objects.filter(pk=level_id).update(**changes, updated_at=timezone.now())
    if "safety_stock" in changes:
        catalogue_changed([sku])
    return StockLevel.objects.select_related("product", "warehouse").get(pk=level_id)


# --- warehouses --------------------------------------------------------------------------------


@atomic_with_retry
def warehouse_create(*, code: str, name: str, priority: int = 100) -> Warehouse:
    warehouse = Warehouse(code=code, name=name, priority=priority)
    try:
        with transaction.atomic():
            warehouse.save()
    except IntegrityError:
        raise InvalidInput(fields={"code": [f"A warehouse with code {code!r} already exists."]}) from None
    return warehouse


@atomic_with_retry
def warehouse_deactivate(*, code: str) -> Warehouse:
    """Stop allocating from a warehouse. Refused (WarehouseBusy) while any of its units are reserved
    or backordered (orders wait on its levels).

    Marks it inactive, then locks its levels in pk order and checks `reserved` and `backordered`. A reservation
    racing with this re-reads the warehouse after its own UPDATE (see reservation.py), so either
    it sees the warehouse inactive and backs off, or this sees its reserved units and refuses.
    """
    warehouse = locks.lock_warehouse_by_code(code)
    if warehouse is None:
        raise NotFound(f"No warehouse {code!r}.")
    Warehouse.objects.filter(pk=warehouse.pk).update(active=False)
    reclaim_buckets(
        list(StockLevel.objects.filter(warehouse_id=warehouse.pk).values_list("pk", flat=True)),
        reference=f"deactivate:{code}",
    )
    levels = locks.lock_stock_levels_of_warehouse(warehouse.pk)
    if any(level.reserved or level.backordered for level in levels):
        raise WarehouseBusy()
    warehouse.active = False
    return warehouse


@atomic_with_retry
def warehouse_activate(*, code: str) -> Warehouse:
    warehouse = locks.lock_warehouse_by_code(code)
    if warehouse is None:
        raise NotFound(f"No warehouse {code!r}.")
    if not warehouse.active:
        warehouse.active = True
        warehouse.save(update_fields=["active"])
    return warehouse


@atomic_with_retry
def warehouse_update(*, code: str, name: str, priority: int) -> Warehouse:
    """Set a warehouse's name and priority; NotFound for an unknown code.

    Only these two columns are written: `active` moves only through warehouse_activate and
    warehouse_deactivate, and an edit made meanwhile must not undo that. No invariant depends on
    name or priority (priority orders the warehouses an order draws from, read when it reserves),
    and the catalogue shows neither: no lock is taken and no cached read changes.
    """
    if not Warehouse.objects.filter(code=code).update(name=name, priority=priority):
        raise NotFound(f"No warehouse {code!r}.")
    return Warehouse.objects.get(code=code)


# --- stock arriving and backorders filled from it ------------------------------------------------
#
# Stock that arrives (a receipt, a purchase order's delivery, a return to stock, a transfer in, an
# adjustment up) fills the product's backordered allocations first, oldest order first, in the same
# transaction, wherever they wait: a backorder taken on one warehouse's level is filled by units
# arriving in another, and its allocation moves there. The waiting orders are locked before any
# level (DESIGN §4: order rows, then levels by pk), then every level involved at once in pk order,
# so an arrival cannot deadlock with a cancel, the expiry sweep or another arrival. Orders are
# another app's: it registers a hook (orders.backorders), so inventory imports nothing above it.

ArrivalHook = Callable[[list[int]], tuple[Callable[[], object], set[int]]]
_ARRIVAL_HOOKS: list[ArrivalHook] = []


def on_stock_arrival(hook: ArrivalHook) -> None:
    """Register `hook(level_ids) -> (fill, levels)`. The hook runs in an arrival's transaction before
    any level is locked (it locks what comes before levels in the lock order) and names the other
    levels its fill will change; `fill()` runs once the units are on the arrival's levels."""
    if hook not in _ARRIVAL_HOOKS:
        _ARRIVAL_HOOKS.append(hook)


@contextmanager
def stock_arrival(level_ids: Iterable[int], *, also: Iterable[int] = ()) -> Iterator[None]:
    """Wrap the statements that add units to these levels (and lock `also`, the other levels the
    caller changes): backorders waiting for their products are filled after the block, in the
    caller's transaction (nothing is filled if the block raises). When some wait, every level
    involved is locked first, at once in pk order."""
    ids = sorted(set(level_ids))
    hooked = [hook(ids) for hook in _ARRIVAL_HOOKS] if ids else []
    extra = set().union(*(levels for _, levels in hooked))
    if extra:
        locks.lock_stock_levels({*ids, *also, *extra})
    yield
    for fill, _ in hooked:
        fill()


def free_units(level_ids: Iterable[int]) -> dict[int, int]:
    """Units on these levels' own shelves that orders may take (StockLevel.available of the locked
    rows: a hot level's bucket units, counted in reserved, are not among them), read under their
    row locks, taken in pk order (held already when called by a fill)."""
    return {level.pk: level.available for level in locks.lock_stock_levels(level_ids).values()}


def fill_backorders(*, fills: Sequence[tuple[int, int, int, str]], actor=None) -> None:
    """Turn backordered units into reserved ones: (level waited on, level filled from, n, the order's
    number) per waiting allocation, on levels the caller holds locked. The first level's
    `backordered` goes down by n, the second's `reserved` up by n (the same level, or another
    warehouse's level of the product where the units arrived); it must have the free units
    (InvalidStock otherwise: the caller's transaction then changes nothing). `backorder` ledger rows:
    one per order and level."""
    require_transaction("fill_backorders")
    d_res: dict[int, int] = defaultdict(int)
    d_bo: dict[int, int] = defaultdict(int)
    rows: dict[tuple[int, str], list[int]] = defaultdict(lambda: [0, 0])
    for waiting_id, filled_id, units, reference in fills:
        if units <= 0:
            raise InvalidInput(f"Filled units must be positive, got {units} for level {filled_id}.")
        d_bo[waiting_id] -= units
        d_res[filled_id] += units
        rows[(waiting_id, reference)][1] -= units
        rows[(filled_id, reference)][0] += units
    ids = sorted(d_res.keys() | d_bo.keys())
    if not ids:
        return
    locks.lock_stock_levels(ids)
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE inventory_stocklevel AS s
               SET reserved = s.reserved + v.r, backordered = s.backordered + v.b, updated_at = now()
              FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[]) AS v(id, r, b)
             WHERE s.id = v.id AND s.backordered + v.b >= 0
               AND greatest(s.on_hand - s.reserved - s.safety_stock, 0) >= v.r
            """,
            [ids, [d_res[i] for i in ids], [d_bo[i] for i in ids]],
        )
        if cursor.rowcount != len(ids):
            raise InvalidStock("A level lacks the free units or the backorders these fills need.")
    _record(
        [
            StockMovement(
                level_id=level_id,
                delta_reserved=reserved,
                delta_backordered=backordered,
                reason=Reason.BACKORDER,
                reference=reference,
                actor=actor,
            )
            for (level_id, reference), (reserved, backordered) in rows.items()
        ]
    )


# --- stock primitives, inside the caller's transaction -------------------------------------------


def reserve_stock(
    *, lines: Sequence[tuple[Product, int]], reference: str, actor=None, strategy: str | None = None
) -> list[Allocation]:
    """Reserve `quantity` of each product across active warehouses by priority (a line may split).

    Runs inside the caller's transaction. Exact under any concurrency: no unlocked read decides
    a reservation (see reservation.py for each strategy). Raises InsufficientStock listing every
    short SKU (nothing is reserved then), or project.db.transactions.Retry when what it read changed under it.
    """
    require_transaction("reserve_stock")
    allocations = reserve_levels(
        lines, strategy=strategy, reference=reference, actor_id=actor.pk if actor is not None else None
    )
    _record(
        [
            StockMovement(
                level_id=a.level_id,
                delta_reserved=a.reserved,
                delta_bucketed=-a.quantity if a.hot else 0,
                delta_backordered=a.backordered,
                reason=Reason.RESERVATION,
                reference=reference,
                actor=actor,
            )
            for a in allocations
        ],
    )
    return allocations


def _apply_deltas(
    allocations: Sequence[tuple[int, int]],
    *,
    on_hand_sign: int,
    reserved_sign: int,
    reason: str,
    reference: str,
    actor,
    note: str = "",
    released_backorders: Sequence[tuple[int, int]] = (),
) -> None:
    """Lock the levels in pk order, then apply the deltas set-based, with one ledger row per level.
    `released_backorders`: (level id, n) backordered units given back (backordered -= n)."""
    per_level: dict[int, int] = defaultdict(int)
    per_level_bo: dict[int, int] = defaultdict(int)
    for pairs, into in ((allocations, per_level), (released_backorders, per_level_bo)):
        for level_id, quantity in pairs:
            if quantity <= 0:
                raise InvalidInput(f"Allocation quantities must be positive, got {quantity} for level {level_id}.")
            into[level_id] += quantity
    ids = sorted(per_level.keys() | per_level_bo.keys())
    if not ids:
        return
    locks.lock_stock_levels(ids)
    d_on = [on_hand_sign * per_level[i] for i in ids]
    d_res = [reserved_sign * per_level[i] for i in ids]
    d_bo = [-per_level_bo[i] for i in ids]
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE inventory_stocklevel AS s
               SET on_hand = s.on_hand + v.d_on,
                   reserved = s.reserved + v.d_res,
                   backordered = s.backordered + v.d_bo,
                   version = s.version + (v.d_on <> 0)::int,
                   updated_at = now()
              FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[]) AS v(id, d_on, d_res, d_bo)
             WHERE s.id = v.id
            """,
            [ids, d_on, d_res, d_bo],
        )
        if cursor.rowcount != len(ids):
            raise InvalidStock("Some stock levels of these allocations no longer exist.")
    _record(
        [
            StockMovement(
                level_id=i,
                delta_on_hand=on,
                delta_reserved=res,
                delta_backordered=bo,
                reason=reason,
                reference=reference,
                note=note,
                actor=actor,
            )
            for i, on, res, bo in zip(ids, d_on, d_res, d_bo, strict=True)
        ],
    )


def release_stock(
    *,
    allocations: Sequence[tuple[int, int]],
    reference: str,
    reason: str = Reason.RELEASE,
    actor=None,
    backordered: Sequence[tuple[int, int]] = (),
) -> None:
    """Give units back (cancel, expiry): reserved -= n per (level_id, n) of `allocations`, and
    backordered -= n per (level_id, n) of `backordered`."""
    require_transaction("release_stock")
    _apply_deltas(
        allocations,
        on_hand_sign=0,
        reserved_sign=-1,
        reason=reason,
        reference=reference,
        actor=actor,
        released_backorders=backordered,
    )


def consume_stock(*, allocations: Sequence[tuple[int, int]], reference: str, actor=None) -> None:
    """Ship reserved units (fulfilment): on_hand -= n and reserved -= n per (level_id, n)."""
    require_transaction("consume_stock")
    _apply_deltas(
        allocations,
        on_hand_sign=-1,
        reserved_sign=-1,
        reason=Reason.FULFILMENT,
        reference=reference,
        actor=actor,
    )


def move_reservations(
    *, moves: Sequence[tuple[int, int, int, int]], reference: str, actor=None
) -> dict[tuple[int, int], int]:
    """Move reserved units to another warehouse (a shipment taken from elsewhere): each move is
    (from level id, product id, to warehouse id, quantity). Returns the target level ids by
    (product id, warehouse id), creating empty levels that are missing.

    Every level involved is locked at once, in pk order. Each target must have the units available
    (InsufficientStock listing the short SKUs otherwise; the caller's transaction then changes
    nothing). Ledger: `release` -n on each source, `reservation` +n on each target.
    """
    require_transaction("move_reservations")
    for _, _, _, quantity in moves:
        _check_quantity("quantity", quantity, minimum=1)
    targets = _ensure_levels({(product_id, warehouse_id) for _, product_id, warehouse_id, _ in moves})
    deltas: dict[int, int] = defaultdict(int)
    for from_level_id, product_id, warehouse_id, quantity in moves:
        if targets[(product_id, warehouse_id)] == from_level_id:
            raise InvalidInput(fields={"warehouse": ["The units are already allocated there."]})
        deltas[from_level_id] -= quantity
        deltas[targets[(product_id, warehouse_id)]] += quantity
    levels = _lock_levels(deltas, reference=reference, actor=actor)
    short = [
        {"sku": level.product.sku, "requested": deltas[level.pk], "available": level.unreserved}
        for level in levels.values()
        if deltas[level.pk] > level.unreserved  # staff ship from the safety stock too
    ]
    if short:
        raise InsufficientStock(short)
    if any(-deltas[level.pk] > level.reserved for level in levels.values()):
        raise InvalidStock("A level holds fewer reserved units than the shipment moves away.")
    # Every level is locked already (above, all at once in pk order): these re-lock nothing.
    away = [(i, -d) for i, d in sorted(deltas.items()) if d < 0]
    here = [(i, d) for i, d in sorted(deltas.items()) if d > 0]
    _apply_deltas(away, on_hand_sign=0, reserved_sign=-1, reason=Reason.RELEASE, reference=reference, actor=actor)
    _apply_deltas(here, on_hand_sign=0, reserved_sign=1, reason=Reason.RESERVATION, reference=reference, actor=actor)
    return targets


def receive_return(*, items: Sequence[tuple[int, int, int, int]], reference: str, actor=None) -> None:
    """Take returned units into chosen warehouses: (product_id, warehouse_id, restocked, written_off).

    Restocked units go back on sale (`on_hand += n`, ledger `return` +n). Written-off units are
    received and written off in the same transaction (ledger `return` +n and `damaged` -n on that
    level, so the books show both and on hand ends unchanged). Levels are created when missing and
    locked in pk order.
    """
    require_transaction("receive_return")
    per_pair: dict[tuple[int, int], list[int]] = defaultdict(lambda: [0, 0])
    for product_id, warehouse_id, restocked, written_off in items:
        if restocked < 0 or written_off < 0 or restocked + written_off == 0:
            raise InvalidInput(f"Returned quantities must be positive, got {restocked} and {written_off}.")
        per_pair[(product_id, warehouse_id)][0] += restocked
        per_pair[(product_id, warehouse_id)][1] += written_off
    ids = _ensure_levels(per_pair)
    restocking = [ids[pair] for pair, (restocked, _) in per_pair.items() if restocked]
    with stock_arrival(
        restocking, also=ids.values()
    ):  # restocked units fill the backorders waiting on their levels first
        _receive_returned_units(ids, per_pair, reference=reference, actor=actor)


def _receive_returned_units(ids: dict, per_pair: dict, *, reference: str, actor) -> None:
    locks.lock_stock_levels(ids.values())
    movements = []
    for pair, (restocked, written_off) in sorted(per_pair.items(), key=lambda item: ids[item[0]]):
        level_id = ids[pair]
        if restocked:
            StockLevel.objects.filter(pk=level_id).update(
                on_hand=F("on_hand") + restocked, version=F("version") + 1, updated_at=timezone.now()
            )
        movements.append(
            StockMovement(
                level_id=level_id,
                delta_on_hand=restocked + written_off,
                reason=Reason.RETURN,
                reference=reference,
                actor=actor,
            )
        )
        if written_off:
            movements.append(
                StockMovement(
                    level_id=level_id,
                    delta_on_hand=-written_off,
                    reason=Reason.DAMAGED,
                    reference=reference,
                    actor=actor,
                )
            )
    _record(movements)


# --- alerts ------------------------------------------------------------------------------------

LOW_STOCK_LOCK = "inventory:low_stock_alerts"


def _low_stock_alert_lines(crossing: Sequence[Product]) -> list[str]:
    """One line per product of the staff alert: on hand, available and incoming, and the
    warehouses where a level is below its reorder point."""
    reordering = defaultdict(list)
    below_point = stock_levels_below_reorder_point(count_drafts=False).filter(product__in=[p.pk for p in crossing])
    for product_id, code in below_point.order_by("warehouse__code").values_list("product_id", "warehouse__code"):
        reordering[product_id].append(code)
    lines = []
    for p in crossing:
        line = (
            f"{p.sku}  {p.name}: {int(p.on_hand)} on hand, {max(int(p.available), 0)} available, "
            f"{int(p.incoming)} incoming (threshold {p.low_stock_threshold})"
        )
        if reordering[p.pk]:
            where = ", ".join(reordering[p.pk])
            line += f"; below the reorder point in {where}: a draft purchase order will be proposed"
        lines.append(line)
    return lines


def low_stock_alerts_queue(*, recipients: Sequence[str]) -> list[str]:
    """Alert staff once per product per crossing below its threshold; returns the SKUs alerted.

    A product is low when its available units are at or below its threshold and what its open
    purchase orders still expect does not lift it above: available + incoming <= threshold (over
    active warehouses, inventory.reorder.with_on_hand_and_incoming; drafts are not incoming). It is
    alerted once it turns low, and not again until it has been seen not low (stock arrived,
    or a purchase order now covers it); a purchase order cancelled later makes it low again, a
    new crossing. Each alert line shows on hand, available and incoming, and names the
    warehouses where a level is below its reorder point, for which the reorder job drafts a
    purchase order (inventory.reorder).

    One transaction flags the products, queues one alert email through the outbox
    (inventory.emails) and emits a `stock.low` webhook event per product (inventory.events); the
    email is sent after commit, by a task holding no transaction or lock. With neither staff
    recipients nor an endpoint wanting the event, nothing is flagged: the crossing waits for one.
    Singleton (a transaction-scoped advisory lock): a second run at the same time does nothing.
    No stock rows are locked.
    """
    with transaction.atomic():
        if not try_advisory_xact_lock(LOW_STOCK_LOCK):
            return []
        products = with_on_hand_and_incoming(products_with_availability().filter(active=True))
        products = products.alias(cover=F("available") + F("incoming"))
        products.filter(low_stock_alerted=True, cover__gt=F("low_stock_threshold")).update(low_stock_alerted=False)
        crossing = list(products.filter(low_stock_alerted=False, cover__lte=F("low_stock_threshold")).order_by("sku"))
        if not crossing:
            return []
        webhooks = webhook_wanted(STOCK_LOW)
        if not (recipients or webhooks):
            return []
        if webhooks:
            stock_low_emit(crossing)
        if recipients:
            low_stock_alert_enqueue(recipients=recipients, lines=_low_stock_alert_lines(crossing))
        Product.objects.filter(pk__in=[p.pk for p in crossing]).update(low_stock_alerted=True)
    return [p.sku for p in crossing]


# --- uploaded import files ---------------------------------------------------------------------

IMPORT_FILES_FOLDER = "imports"


def import_file_delete(*, import_id: int) -> bool:
    """Delete a finished import's uploaded file; True if the import is finished (the file is gone).

    Called after the finishing transaction commits. A file is needed until then: a run resumed
    after a crash may stage it again. A crash in between leaves the file to import_files_prune.
    """
    job = ImportJob.objects.filter(pk=import_id, status__in=ImportJob.FINISHED).first()
    if job is None:
        return False
    if job.file.name:
        job.file.storage.delete(job.file.name)  # a file already gone is no error
    return True


def import_files_prune(*, older_than_days: int) -> int:
    """Delete files under MEDIA_ROOT/imports/ last changed more than `older_than_days` ago, except
    those of unfinished imports; returns how many. Leftovers are files of imports that finished
    just before a crash, and uploads whose job was never saved (or was deleted)."""
    if not is_whole_number(older_than_days, minimum=1):
        raise InvalidInput(fields={"older_than_days": ["Must be a whole number of days, at least 1."]})
    storage = ImportJob._meta.get_field("file").storage
    try:
        _, names = storage.listdir(IMPORT_FILES_FOLDER)
    except FileNotFoundError:
        return 0
    cutoff = timezone.now() - timedelta(days=older_than_days)
    old = {f"{IMPORT_FILES_FOLDER}/{name}" for name in names}
    old = {name for name in old if _modified_before(storage, name, cutoff)}
    # Read after the ages: an import created meanwhile names a file younger than the cutoff.
    old -= set(ImportJob.objects.exclude(status__in=ImportJob.FINISHED).values_list("file", flat=True))
    for name in sorted(old):
        storage.delete(name)
    return len(old)


def _modified_before(storage, name: str, cutoff) -> bool:
    try:
        return storage.get_modified_time(name) < cutoff
    except FileNotFoundError:
        return False  # deleted meanwhile


# --- purchase orders --------------------------------------------------------------------------

MAX_PURCHASE_ORDER_LINES = MAX_LINES
DELIVERY_KEY_MAX_LENGTH = 64


@atomic_with_retry
def purchase_order_create(
    *,
    warehouse_code: str,
    lines: Sequence[tuple[str, int]],
    supplier_reference: str = "",
    expected_on: date | None = None,
    note: str = "",
    actor=None,
) -> PurchaseOrder:
    """Record stock a supplier is expected to deliver: one open purchase order, a line per SKU.
    Nothing moves on a level until it is received; its open lines show as the levels' incoming."""
    pairs = sku_quantity_lines(lines)
    fields = {}
    if not isinstance(supplier_reference, str) or len(supplier_reference) > 64:
        fields["supplier_reference"] = ["At most 64 characters."]
    if not isinstance(note, str) or len(note) > 200:
        fields["note"] = ["At most 200 characters."]
    if expected_on is not None and (not isinstance(expected_on, date) or isinstance(expected_on, datetime)):
        fields["expected_on"] = ["A date, or none."]
    warehouse = Warehouse.objects.filter(code=warehouse_code).first() if isinstance(warehouse_code, str) else None
    if warehouse is None:
        fields["warehouse"] = [f"Unknown warehouse {warehouse_code!r}."]
    products = {p.sku: p for p in Product.objects.filter(sku__in=[sku for sku, _ in pairs])}
    unknown = [sku for sku, _ in pairs if sku not in products]
    if unknown:
        fields["lines"] = [f"Unknown SKU {sku!r}." for sku in unknown]
    if fields:
        raise InvalidInput(fields=fields)
    order = PurchaseOrder.objects.create(
        warehouse=warehouse,
        supplier_reference=supplier_reference,
        expected_on=expected_on,
        note=note,
        created_by=actor,
    )
    PurchaseOrderLine.objects.bulk_create(
        [PurchaseOrderLine(purchase_order=order, product=products[sku], ordered=quantity) for sku, quantity in pairs]
    )
    return order


def _locked_purchase_order(purchase_order_id: object) -> PurchaseOrder:
    if not is_whole_number(purchase_order_id, minimum=1):
        raise NotFound("No such purchase order.")
    order = locks.lock_purchase_order(purchase_order_id)
    if order is None:
        raise NotFound("No such purchase order.")
    return order


@atomic_with_retry
def purchase_order_receive(
    *,
    purchase_order_id: int,
    key: str,
    lines: Sequence[tuple[str, int]],
    allow_over_receipt: bool = False,
    actor=None,
) -> tuple[PurchaseOrder, bool]:
    """Receive one delivery against an open purchase order: on_hand += quantity on each line's
    level (created if missing), one `receipt` ledger row per level referencing the order, and the
    lines' `received` moved on; the order is `received` once every line has arrived.

    Idempotent by `key`: the same key with the same lines adds nothing and answers (order, False);
    with other lines it is DeliveryKeyReused (`allow_over_receipt` is not part of what is compared).
    More than a line still expects is refused unless `allow_over_receipt`. A warehouse that is not
    active (not selling) may still receive. Locks the purchase order, then its lines, then the
    levels in pk order (_apply_deltas; no other path locks purchase orders, and levels come last as
    everywhere), with the orders waiting on those levels locked before them: their backorders are
    filled first (stock_arrival). A receipt only adds units, so a hot level's buckets stay as they are.
    """
    if not isinstance(key, str) or not 1 <= len(key) <= DELIVERY_KEY_MAX_LENGTH or not key.isprintable():
        raise InvalidInput(fields={"key": [f"A delivery key of 1 to {DELIVERY_KEY_MAX_LENGTH} printable characters."]})
    pairs = sku_quantity_lines(lines)
    fingerprint = hashlib.sha256(json.dumps(sorted(pairs)).encode()).hexdigest()
    order = _locked_purchase_order(purchase_order_id)
    done = order.receipts.filter(key=key).first()
    if done is not None:
        if done.fingerprint != fingerprint:
            raise DeliveryKeyReused()
        return order, False
    if order.status == PurchaseOrder.Status.DRAFT:
        raise PurchaseOrderClosed("This purchase order is a draft: confirm it before receiving against it.")
    if order.status != PurchaseOrder.Status.OPEN:
        raise PurchaseOrderClosed()
    on_order = {line.product.sku: line for line in locks.lock_purchase_order_lines(order)}
    problems = []
    for sku, quantity in pairs:
        line = on_order.get(sku)
        if line is None:
            problems.append(f"{sku} is not on this purchase order.")
        elif line.received + quantity > MAX_QUANTITY:
            problems.append(f"{sku}: at most {MAX_QUANTITY} units in all.")
        elif line.received + quantity > line.ordered and not allow_over_receipt:
            problems.append(f"{sku}: {quantity} received, but only {line.outstanding} still expected.")
    if problems:
        raise InvalidInput(fields={"lines": problems})
    level_ids = _ensure_levels([(on_order[sku].product_id, order.warehouse_id) for sku, _ in pairs])
    with stock_arrival(level_ids.values()):  # fills the backorders waiting on these levels first
        _apply_deltas(
            [(level_ids[(on_order[sku].product_id, order.warehouse_id)], quantity) for sku, quantity in pairs],
            on_hand_sign=1,
            reserved_sign=0,
            reason=Reason.RECEIPT,
            reference=order.reference,
            actor=actor,
            note=f"delivery {key}"[:200],
        )
    for sku, quantity in pairs:
        on_order[sku].received += quantity
    PurchaseOrderLine.objects.bulk_update([on_order[sku] for sku, _ in pairs], ["received"])
    PurchaseOrderReceipt.objects.create(
        purchase_order=order, key=key, fingerprint=fingerprint, units=sum(q for _, q in pairs), actor=actor
    )
    if all(line.received >= line.ordered for line in on_order.values()):
        order.status = PurchaseOrder.Status.RECEIVED
    order.version += 1
    order.save(update_fields=["status", "version", "updated_at"])
    return order, True


@atomic_with_retry
def purchase_order_cancel(*, purchase_order_id: int, actor=None, expected_version: int | None = None) -> PurchaseOrder:
    """Stop expecting what has not arrived: an open purchase order becomes `cancelled` (what it
    received stays on hand); a draft (inventory.reorder) is discarded the same way. Cancelling one
    already cancelled changes nothing; a received order is PurchaseOrderClosed. With
    `expected_version` (the admin's "Discard" of the draft it showed), an order changed since, a
    draft confirmed meanwhile included, is VersionConflict."""
    order = _locked_purchase_order(purchase_order_id)
    if order.status == PurchaseOrder.Status.CANCELLED:
        return order
    if order.status not in (PurchaseOrder.Status.OPEN, PurchaseOrder.Status.DRAFT):
        raise PurchaseOrderClosed()
    if expected_version is not None and order.version != expected_version:
        raise VersionConflict()
    order.status = PurchaseOrder.Status.CANCELLED
    order.version += 1
    order.save(update_fields=["status", "version", "updated_at"])
    return order

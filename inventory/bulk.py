"""Bulk stock set with compare-and-set: absolute on_hand for up to MAX_BULK_ROWS levels in one call
(POST /api/v1/stock/levels/bulk, inventory.api_bulk), idempotent by the caller's key.

Each row sets a level's on_hand to a counted number, as a cycle count does (services.stock_count),
and may carry the on_hand it was counted against (`expected_on_hand`): a level that moved since is
refused with its current on_hand (`stale_quantity`), never overwritten. A row is refused too when
its SKU or warehouse is unknown, or when the new on_hand would fall below the units reserved for
orders (`invalid_stock`: what stock_count and stock_adjust refuse). As with a count, a hot level's
bucket units come back to it first, so `reserved` counts only what orders hold; safety stock and
backorders do not refuse a count; units counted up are not an arrival (the periodic backorder
fill takes them), and the catalogue cache is left alone (availability is never cached with it).

One transaction per call, in this order (DESIGN §4):
1. the idempotency key row (BulkStockRequest), inserted first: a twin with the same key waits on
   the unique index until this one commits, then replays the stored answer; no stock lock is
   taken before it, so twins cannot deadlock over levels;
2. missing levels of known SKUs and warehouses created (as a count creates them), then every
   target level locked at once in pk order in one statement, a hot level's bucket units given
   back to it, and each row decided against the locked, current values;
3. the changed levels updated in one set-based UPDATE (version + 1, as every change of on_hand),
   and one ledger row per changed level through the one ledger writer (services._record), with
   the caller's reason (`count` or `adjustment`) and reference; a row that changes nothing writes
   nothing;
4. the answer stored on the key row.

`all_or_nothing` (the default): one refused row refuses the call (409 `rows_refused`, every
refused row listed by index); steps 2 and 3 run in a savepoint that is rolled back then, so not
even an empty level or a reclaimed bucket remains. `reject_failed_rows`: the good rows are
applied, the refused ones listed (200). Both answers are stored on the key and replayed.
"""

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from http import HTTPStatus

from django.db import connection, transaction
from django.utils import timezone

from inventory import locks
from inventory.errors import InvalidInput, InvalidStock
from inventory.models import BulkStockRequest, Product, StockLevel, StockMovement, Warehouse, is_sku
from inventory.services import MAX_QUANTITY, _ensure_levels, _record, reclaim_buckets
from project.db.transactions import atomic_with_retry
from project.errors import IdempotencyKeyReused, envelope
from project.values import is_whole_number

MAX_BULK_ROWS = 1_000
REFERENCE_MAX_LENGTH = 64
KEY_MAX_LENGTH = 255

ALL_OR_NOTHING = "all_or_nothing"
REJECT_FAILED_ROWS = "reject_failed_rows"
ERROR_POLICIES = (ALL_OR_NOTHING, REJECT_FAILED_ROWS)
REASONS = (StockMovement.Reason.COUNT.value, StockMovement.Reason.ADJUSTMENT.value)

# Row statuses and the codes of a refused row.
UPDATED, UNCHANGED, REFUSED = "updated", "unchanged", "refused"
UNKNOWN_SKU, UNKNOWN_WAREHOUSE, STALE_QUANTITY, INVALID_STOCK = (
    "unknown_sku",
    "unknown_warehouse",
    "stale_quantity",
    InvalidStock.code,
)
ROWS_REFUSED = "rows_refused"


class BulkKeyReused(IdempotencyKeyReused):
    default_detail = "This Idempotency-Key was used with another bulk stock request."


@dataclass(frozen=True)
class BulkRow:
    sku: str
    warehouse: str
    on_hand: int
    expected_on_hand: int | None = None


@dataclass(frozen=True)
class BulkResult:
    """The answer: its status (200, or 409 when all_or_nothing refused), its body, and whether it is
    the stored answer of an earlier call with the same key and body."""

    status: int
    body: dict
    replayed: bool = False


class _Refused(Exception):
    """all_or_nothing met a refused row: the savepoint rolls back, the body is stored."""

    def __init__(self, body: dict):
        self.body = body
        super().__init__(body["error"]["detail"])


def check_rows(rows: Sequence[BulkRow]) -> None:
    """The shape of a request's rows, whatever the caller (the API's serializer checks the same first):
    a bounded list of well-formed rows, each (sku, warehouse) at most once. InvalidInput otherwise."""
    if not isinstance(rows, Sequence) or not 1 <= len(rows) <= MAX_BULK_ROWS:
        raise InvalidInput(fields={"rows": [f"From 1 to {MAX_BULK_ROWS} rows."]})
    for row in rows:
        if not (
            isinstance(row, BulkRow)
            and is_sku(row.sku)
            and isinstance(row.warehouse, str)
            and 1 <= len(row.warehouse) <= 32
            and is_whole_number(row.on_hand, minimum=0, maximum=MAX_QUANTITY)
            and (row.expected_on_hand is None or is_whole_number(row.expected_on_hand, minimum=0, maximum=MAX_QUANTITY))
        ):
            raise InvalidInput(
                fields={"rows": [f"Each row needs a sku, a warehouse and on_hand from 0 to {MAX_QUANTITY}."]}
            )
    duplicates = duplicate_rows([(row.sku, row.warehouse) for row in rows])
    if duplicates:
        raise InvalidInput(fields={"rows": duplicates})


def duplicate_rows(pairs: Sequence[tuple[str, str]], *, most: int = 20) -> list[str]:
    """Messages for (sku, warehouse) pairs named more than once (the first `most` of them)."""
    seen: dict[tuple[str, str], int] = {}
    messages = []
    for index, pair in enumerate(pairs):
        if pair in seen:
            messages.append(f"Row {index} repeats row {seen[pair]} ({pair[0]} in {pair[1]}): one row per level.")
            if len(messages) >= most:
                break
        else:
            seen[pair] = index
    return messages


def stock_levels_set_bulk(
    *,
    user,
    key: str,
    fingerprint: str,
    rows: Sequence[BulkRow],
    error_policy: str = ALL_OR_NOTHING,
    reason: str = StockMovement.Reason.COUNT,
    reference: str = "",
) -> BulkResult:
    """Set on_hand of up to MAX_BULK_ROWS levels, each compare-and-set on `expected_on_hand` when
    given, at most once per (user, key): see the module's docstring for the order of work.

    The same key with the same `fingerprint` returns the stored answer (replayed); with another,
    BulkKeyReused (422). InvalidInput (400, stored nowhere: the same input gives it again) for a
    malformed request. Lock timeouts and deadlocks re-run the whole call (atomic_with_retry), then
    LockTimeout (503): nothing of the call is kept then, the key included.
    """
    if not isinstance(key, str) or not 1 <= len(key) <= KEY_MAX_LENGTH:
        raise InvalidInput(fields={"Idempotency-Key": [f"1 to {KEY_MAX_LENGTH} characters."]})
    if error_policy not in ERROR_POLICIES:
        raise InvalidInput(fields={"error_policy": [f"One of {', '.join(ERROR_POLICIES)}."]})
    if reason not in REASONS:
        raise InvalidInput(fields={"reason": [f"One of {', '.join(REASONS)}."]})
    if not isinstance(reference, str) or len(reference) > REFERENCE_MAX_LENGTH:
        raise InvalidInput(fields={"reference": [f"At most {REFERENCE_MAX_LENGTH} characters."]})
    check_rows(rows)
    return _set_once(
        user=user,
        key=key,
        fingerprint=fingerprint,
        rows=rows,
        error_policy=error_policy,
        reason=reason,
        reference=reference,
    )


@atomic_with_retry
def _set_once(*, user, key, fingerprint, rows, error_policy, reason, reference) -> BulkResult:
    claim_id, stored = _claim(user=user, key=key, fingerprint=fingerprint)
    if stored is not None:
        return BulkResult(stored.status_code, stored.response_body, replayed=True)
    try:
        with transaction.atomic():  # a savepoint: all_or_nothing's refusal undoes steps 2 and 3
            body = _set_rows(
                rows, all_or_nothing=error_policy == ALL_OR_NOTHING, reason=reason, reference=reference, actor=user,
                note=f"bulk:{key}"[:200],
            )  # fmt: skip
            status = HTTPStatus.OK
    except _Refused as refused:
        body, status = refused.body, HTTPStatus.CONFLICT
    BulkStockRequest.objects.filter(pk=claim_id).update(status_code=int(status), response_body=body)
    return BulkResult(int(status), body)


CLAIM_SQL = """
INSERT INTO inventory_bulkstockrequest (user_id, key, fingerprint, status_code, response_body, created_at)
VALUES (%s, %s, %s, 0, '{}', %s)
    ON CONFLICT (user_id, key) DO NOTHING
RETURNING id
"""


def _claim(*, user, key: str, fingerprint: str) -> tuple[int | None, BulkStockRequest | None]:
    """Insert the key row (claim id, None), or find the committed one (None, it). An INSERT that
    meets a twin's uncommitted row waits for it (the unique index): once the twin commits, the row
    and its answer are read here; had it rolled back, the INSERT would have gone in."""
    for _ in range(3):
        with connection.cursor() as cursor:
            cursor.execute(CLAIM_SQL, [user.pk, key, fingerprint, timezone.now()])
            claimed = cursor.fetchone()
        if claimed is not None:
            return claimed[0], None
        # READ COMMITTED: this statement sees what the twin committed while the INSERT waited.
        existing = BulkStockRequest.objects.filter(user=user, key=key).first()
        if existing is None:
            continue  # pruned between the two statements: claim again
        if existing.fingerprint != fingerprint:
            raise BulkKeyReused()
        return None, existing
    raise AssertionError("an idempotency key row came and went three times")


def _set_rows(rows: Sequence[BulkRow], *, all_or_nothing: bool, reason: str, reference: str, actor, note: str) -> dict:
    """Steps 2 and 3: decide every row under the levels' locks, then apply the changes set-based."""
    products = dict(Product.objects.filter(sku__in={row.sku for row in rows}).values_list("sku", "pk"))
    warehouses = dict(Warehouse.objects.filter(code__in={row.warehouse for row in rows}).values_list("code", "pk"))
    pairs = {
        index: (products[row.sku], warehouses[row.warehouse])
        for index, row in enumerate(rows)
        if row.sku in products and row.warehouse in warehouses
    }
    # A level that does not exist holds 0 units: it is created only for a row that puts units on it.
    creating = {pairs[i] for i, row in enumerate(rows) if i in pairs and row.on_hand and not row.expected_on_hand}
    level_ids = _level_ids(set(pairs.values()), creating=creating)
    levels = _lock_levels(level_ids.values(), reference=reference, actor=actor) if level_ids else {}
    results = []
    changes: dict[int, tuple[int, int]] = {}  # level id: (new on_hand, delta)
    for index, row in enumerate(rows):
        if index not in pairs:
            results.append(_unknown(index, row, known_sku=row.sku in products))
            continue
        level = levels[level_ids[pairs[index]]] if pairs[index] in level_ids else None
        result = _decide(index, row, level)
        if result["status"] == UPDATED:
            changes[level.pk] = (row.on_hand, row.on_hand - level.on_hand)
        results.append(result)
    refused = [result for result in results if result["status"] == REFUSED]
    if refused and all_or_nothing:
        raise _Refused(_refusal(refused, len(rows)))
    _apply(changes, reason=reason, reference=reference, actor=actor, note=note)
    counts = Counter(result["status"] for result in results)
    return {"results": results, **{status: counts[status] for status in (UPDATED, UNCHANGED, REFUSED)}}


def _level_ids(pairs: set[tuple[int, int]], *, creating: set[tuple[int, int]]) -> dict[tuple[int, int], int]:
    """Level ids by (product id, warehouse id). Missing levels of `creating` are created as a count
    creates them (services._ensure_levels, ON CONFLICT DO NOTHING); other missing ones stay absent
    (their rows are decided against 0 units: nothing is created for a row that is refused or sets
    0). Existing levels are only read: an INSERT of every pair would take a sequence number per row
    at every call."""
    if not pairs:
        return {}
    found = StockLevel.objects.filter(
        product_id__in={p for p, _ in pairs}, warehouse_id__in={w for _, w in pairs}
    ).values_list("product_id", "warehouse_id", "pk")
    ids = {(p, w): pk for p, w, pk in found if (p, w) in pairs}
    missing = (pairs - ids.keys()) & creating
    if missing:
        ids.update(_ensure_levels(missing))
    return ids


def _lock_levels(level_ids: Iterable[int], *, reference: str, actor) -> dict[int, StockLevel]:
    """Lock every target level at once, in pk order, in one statement (DESIGN §4); then give a hot
    level's bucket units back to it (each level's row before its buckets, as everywhere), so that
    `reserved` counts only the units orders hold, as for a count. With the levels held no order can
    put units into a bucket (a refill moves them off the level's row), so the levels are read again
    only when some came back."""
    ids = sorted(set(level_ids))
    levels = locks.lock_stock_levels(ids)
    if reclaim_buckets(ids, reference=reference, actor_id=actor.pk if actor is not None else None):
        levels = locks.lock_stock_levels(ids)  # held already: read as they are now
    return levels


def _decide(index: int, row: BulkRow, level: StockLevel | None) -> dict:
    """A row's outcome against its locked level, or against 0 units where there is no level (a
    level created since is not read: this call comes before it)."""
    result = {"index": index, "sku": row.sku, "warehouse": row.warehouse}
    if level is None:
        level = StockLevel(on_hand=0, reserved=0, version=None)
    current = {"on_hand": level.on_hand, "previous_on_hand": level.on_hand, "version": level.version}
    if row.expected_on_hand is not None and row.expected_on_hand != level.on_hand:
        error = {
            "code": STALE_QUANTITY,
            "detail": f"Counted against on_hand {row.expected_on_hand}, but it is {level.on_hand} now.",
            "current_on_hand": level.on_hand,
        }
        return {**result, "status": REFUSED, **current, "error": error}
    if row.on_hand < level.reserved:
        error = {
            "code": INVALID_STOCK,
            "detail": f"Counted {row.on_hand}, but {level.reserved} units are reserved for orders.",
            "current_on_hand": level.on_hand,
            "reserved": level.reserved,
        }
        return {**result, "status": REFUSED, **current, "error": error}
    if row.on_hand == level.on_hand:
        return {**result, "status": UNCHANGED, **current}
    return {
        **result,
        "status": UPDATED,
        "on_hand": row.on_hand,
        "previous_on_hand": level.on_hand,
        "version": level.version + 1,
    }


def _unknown(index: int, row: BulkRow, *, known_sku: bool) -> dict:
    """A row whose SKU or warehouse does not exist: refused, with nothing to show of a level."""
    if known_sku:
        error = {"code": UNKNOWN_WAREHOUSE, "detail": f"Unknown warehouse {row.warehouse!r}."}
    else:
        error = {"code": UNKNOWN_SKU, "detail": f"Unknown SKU {row.sku!r}."}
    return {
        "index": index,
        "sku": row.sku,
        "warehouse": row.warehouse,
        "status": REFUSED,
        "on_hand": None,
        "previous_on_hand": None,
        "version": None,
        "error": error,
    }


def _refusal(refused: list[dict], total: int) -> dict:
    rows = [
        {"index": r["index"], "sku": r["sku"], "warehouse": r["warehouse"], **r["error"]}
        for r in refused  # at most MAX_BULK_ROWS: the body stays bounded
    ]
    detail = f"{len(refused)} of {total} rows were refused; nothing was written."
    return envelope(ROWS_REFUSED, detail, {}, rows=rows)


APPLY_SQL = """
UPDATE inventory_stocklevel AS s
   SET on_hand = v.on_hand, version = s.version + 1, updated_at = now()
  FROM unnest(%s::bigint[], %s::bigint[]) AS v(id, on_hand)
 WHERE s.id = v.id AND v.on_hand >= s.reserved
"""


def _apply(changes: dict[int, tuple[int, int]], *, reason: str, reference: str, actor, note: str) -> None:
    """Set the changed levels (locked, in pk order) in one statement and write their ledger rows."""
    if not changes:
        return
    ids = sorted(changes)
    with connection.cursor() as cursor:
        cursor.execute(APPLY_SQL, [ids, [changes[i][0] for i in ids]])
        if cursor.rowcount != len(ids):  # decided under the same locks: only a bug gets here
            raise InvalidStock("A level changed under its lock.")
    _record(
        [
            StockMovement(
                level_id=level_id,
                delta_on_hand=changes[level_id][1],
                reason=reason,
                reference=reference,
                note=note,
                actor=actor,
            )
            for level_id in ids
        ]
    )


def bulk_stock_requests_prune(*, older_than_hours: int) -> int:
    """Forget bulk requests' keys (and stored answers) older than `older_than_hours`; returns how many.
    A retry after that runs again: its expected_on_hand refuses it if its rows were applied."""
    if not is_whole_number(older_than_hours, minimum=1):
        raise InvalidInput(fields={"older_than_hours": ["Must be a whole number of hours, at least 1."]})
    cutoff = timezone.now() - timedelta(hours=older_than_hours)
    deleted, _ = BulkStockRequest.objects.filter(created_at__lt=cutoff).delete()
    return deleted

"""Reads for integrations that follow the shop: warehouses, and the stock ledger as a feed.

The movements feed serves every committed ledger row exactly once, in a stable order, even while
rows are being written. Ordering by id alone would not: ids are taken at INSERT, rows become
visible at COMMIT, so a transaction that took id 10 and commits after one that took id 11 lands
behind a reader that already served 11, and is never served.

Instead each row carries `txid`, the id of the transaction that wrote it (a database default,
migration 0012; old rows have none and count as 0), and the feed is ordered by `(txid, id)`. A
page serves only rows whose `txid` is below the `xmin` of the query's own snapshot: every
transaction still in progress, and every one to come, has an id at or above it, so every row
that can still appear sorts after everything served. A row is held back while a transaction
that got its id before the row's own did is still open, then served in its place.

What this costs a reader: the feed lags behind the newest commits by as long as the oldest
transaction that holds a transaction id is open, on the whole PostgreSQL cluster (xids are
cluster-wide: another database's transactions count too). The per-connection timeouts
(statement, idle in transaction) and per-chunk commits of batch jobs bound that in practice; a
forgotten open transaction stalls the feed (never skips a row) until it ends.

The position in the feed is a pair `(txid, id)`: the last row served, or after a short page the
horizon `(xmin, 0)`, so that a filtered follower does not read the rows it skipped again.
`encode_cursor` and `decode_cursor` turn it into the opaque text the API hands out.
`movements_page` is the read the API serves and the one to follow the ledger with (a job that
turns ledger rows into events: keep the position it returns, call again with it later);
`movements_after` returns the rows alone.

Plans, measured with EXPLAIN ANALYZE on a ledger of 400,000 rows (100,000 without txid), 25 rows
a page: the tail, from the start, the middle or the end, is an index range scan of
movement_txid_id that stops at LIMIT (0.2-0.3 ms). A SKU or warehouse filter sends the levels'
ids as constants, so the planner can weigh them: a SKU with 40 rows is read through
movement_level_id and sorted (0.2 ms); a SKU with 30,000 rows (7.5%) walks the feed's index and
drops the other rows (0.2 ms from the middle; 11 ms from the very start, past 100,000 old rows of
other SKUs). A reference is one movement_reference probe (0.06 ms). `created_since` has no index
(another index on the ledger would cost every order): the first page walks the feed's index up to
the first rows at or after that time (35 ms when they are the last 2% of the ledger, about 0.1 us a
row skipped), or the whole ledger when none is (21 ms); its `next` then starts past what it read,
so later pages and polls do not pay it again. Using the correlation of created_at with id to skip
ahead would be sound only if no transaction outlived a known bound, which nothing here enforces:
it could skip a row, so the feed does not guess.
"""

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import datetime

from django.db import connection
from django.db.models import QuerySet

from inventory.models import StockLevel, StockMovement, Warehouse
from project.errors import InvalidInput

# (txid, id) of the last row served. START is before every row: old rows are (0, id >= 1).
FeedPosition = tuple[int, int]
START: FeedPosition = (0, 0)

MAX_TXID = 2**64 - 1  # xid8
MAX_ID = 2**63 - 1  # bigint
MAX_LIMIT = 1000  # rows per call of movements_after / movements_page
_CURSOR_TEXT = re.compile(r"([0-9]{1,20}):([0-9]{1,19})")


class InvalidCursor(InvalidInput):
    code = "invalid_cursor"
    default_detail = "This cursor is not one the feed gave out; start again without it."


@dataclass(frozen=True, slots=True)
class FeedMovement:
    """One ledger row as the feed serves it: the level's SKU and warehouse code, the actor's email."""

    id: int
    txid: int
    level_id: int
    sku: str
    warehouse: str
    delta_on_hand: int
    delta_reserved: int
    delta_bucketed: int
    delta_backordered: int
    reason: str
    reference: str
    note: str
    actor: str | None
    created_at: datetime

    @property
    def position(self) -> FeedPosition:
        return (self.txid, self.id)


def encode_cursor(position: FeedPosition) -> str:
    """The opaque text of a feed position (URL-safe base64 of "txid:id", no padding)."""
    txid, movement_id = position
    return base64.urlsafe_b64encode(f"{int(txid)}:{int(movement_id)}".encode()).decode().rstrip("=")


def decode_cursor(text: str) -> FeedPosition:
    """A position from `encode_cursor`'s text; InvalidCursor (400) for anything else."""
    if not isinstance(text, str) or not 0 < len(text) <= 64:
        raise InvalidCursor(fields={"cursor": ["Not a cursor of this feed."]})
    try:
        decoded = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidCursor(fields={"cursor": ["Not a cursor of this feed."]}) from None
    match = _CURSOR_TEXT.fullmatch(decoded)
    if match is None or int(match[1]) > MAX_TXID or int(match[2]) > MAX_ID:
        raise InvalidCursor(fields={"cursor": ["Not a cursor of this feed."]})
    return int(match[1]), int(match[2])


def warehouses(*, active: bool | None = None) -> QuerySet[Warehouse]:
    """Every warehouse (or the active or inactive ones), in id order: the list pages by id."""
    found = Warehouse.objects.order_by("id")
    return found if active is None else found.filter(active=active)


# One query per page. The row comparison and ORDER BY match the movement_txid_id index
# ((COALESCE(txid, 0), id)), so the feed's tail is an index range scan that stops at LIMIT. The
# horizon is the xmin of the statement's own snapshot (pg_current_snapshot() is the active
# snapshot), so "below the horizon" and "visible to this query" agree: every row below it whose
# transaction committed is seen, and nothing at or above it is served yet. The horizon comes back
# even when no row does (the LEFT JOIN LATERAL): a short page moves the position up to it.
_MOVEMENTS_SQL = """
SELECT h.horizon::text, m.*
  FROM (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS horizon) h
  LEFT JOIN LATERAL (
    SELECT m.id, COALESCE(m.txid, '0'::xid8)::text AS txid, m.level_id, p.sku, w.code,
           m.delta_on_hand, m.delta_reserved, m.delta_bucketed, m.delta_backordered,
           m.reason, m.reference, m.note, u.email, m.created_at
      FROM inventory_stockmovement m
      JOIN inventory_stocklevel s ON s.id = m.level_id
      JOIN inventory_product p ON p.id = s.product_id
      JOIN inventory_warehouse w ON w.id = s.warehouse_id
      LEFT JOIN users_user u ON u.id = m.actor_id
     WHERE (COALESCE(m.txid, '0'::xid8), m.id) > (%(txid)s::xid8, %(id)s)
       AND COALESCE(m.txid, '0'::xid8) < h.horizon
       {filters}
     ORDER BY COALESCE(m.txid, '0'::xid8), m.id
     LIMIT %(limit)s
  ) m ON true
 ORDER BY m.txid::xid8, m.id
"""

_FILTERS = {
    # The levels' ids are looked up first and sent as constants, so the planner weighs each
    # against the column's statistics: a SKU with few rows is read from movement_level_id and
    # sorted, a SKU with many by walking the feed's index (measured in the module's notes).
    "level_ids": "AND m.level_id = ANY(%(level_ids)s::bigint[])",
    "reason": "AND m.reason = %(reason)s",
    "reference": "AND m.reference = %(reference)s",
    "created_since": "AND m.created_at >= %(created_since)s",
}


def present_position() -> FeedPosition:
    """The position past every row that exists now, `(horizon, 0)`: a follower that starts or skips
    here reads only what is written from now on (and the rows of transactions still open)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")
        return int(cursor.fetchone()[0]), 0


def _level_ids(*, sku: str | None, warehouse: str | None) -> list[int]:
    levels = StockLevel.objects.order_by("id")
    if sku is not None:
        levels = levels.filter(product__sku=sku)
    if warehouse is not None:
        levels = levels.filter(warehouse__code=warehouse)
    return list(levels.values_list("id", flat=True))


def _read(
    after: FeedPosition | None,
    limit: int,
    *,
    sku: str | None,
    warehouse: str | None,
    reason: str | None,
    reference: str | None,
    created_since: datetime | None,
) -> tuple[list[FeedMovement], int]:
    """Up to `limit` rows after `after` in feed order, and the horizon the query served below."""
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be from 1 to {MAX_LIMIT}, not {limit}")
    txid, movement_id = START if after is None else after
    params = {
        "txid": str(txid),
        "id": movement_id,
        "limit": limit,
        "level_ids": None if sku is None and warehouse is None else _level_ids(sku=sku, warehouse=warehouse),
        "reason": reason,
        "reference": reference,
        "created_since": created_since,
    }
    filters = "\n       ".join(sql for name, sql in _FILTERS.items() if params[name] is not None)
    with connection.cursor() as cursor:
        cursor.execute(_MOVEMENTS_SQL.format(filters=filters), params)
        rows = cursor.fetchall()
    movements = [
        FeedMovement(
            id=row[1],
            txid=int(row[2]),
            level_id=row[3],
            sku=row[4],
            warehouse=row[5],
            delta_on_hand=row[6],
            delta_reserved=row[7],
            delta_bucketed=row[8],
            delta_backordered=row[9],
            reason=row[10],
            reference=row[11],
            note=row[12],
            actor=row[13],
            created_at=row[14],
        )
        for row in rows
        if row[1] is not None
    ]
    return movements, int(rows[0][0])


def movements_after(
    after: FeedPosition | None,
    limit: int,
    *,
    sku: str | None = None,
    warehouse: str | None = None,
    reason: str | None = None,
    reference: str | None = None,
    created_since: datetime | None = None,
) -> list[FeedMovement]:
    """Up to `limit` (at most MAX_LIMIT) committed ledger rows after `after` (None: from the
    start), in feed order, narrowed by the filters given (a warehouse by its code). Each row
    carries its `position` and `level_id`. No lock; reads the caller's connection (the primary),
    inside or outside a transaction (inside one, the caller's own uncommitted rows are not served).

    To follow the ledger, prefer `movements_page`: its next position also moves past rows that
    did not match the filters, so a filtered follower does not read them again at every call."""
    rows, _ = _read(
        after,
        limit,
        sku=sku,
        warehouse=warehouse,
        reason=reason,
        reference=reference,
        created_since=created_since,
    )
    return rows


def movements_page(
    *,
    after: FeedPosition | None,
    limit: int,
    sku: str | None = None,
    warehouse: str | None = None,
    reason: str | None = None,
    reference: str | None = None,
    created_since: datetime | None = None,
) -> tuple[list[FeedMovement], FeedPosition]:
    """A page of the feed (as `movements_after`) and the position to ask from next. There is
    always one: a follower keeps it and asks again, now or later.

    A full page (`limit` rows) may have more behind it: the next position is its last row's. A
    short page means the feed is read up to what is committed now (not that nothing more will
    come): the next position is then the horizon itself, `(horizon, 0)`, past every row that
    exists now, matched or not; rows that appear later all have a txid at or above it. The
    position never moves back. `reason` must be a StockMovement.Reason (else InvalidInput)."""
    if reason is not None and reason not in StockMovement.Reason.values:
        raise InvalidInput(fields={"reason": [f"Not a reason of the ledger: {str(reason)[:32]!r}."]})
    rows, horizon = _read(
        after,
        limit,
        sku=sku,
        warehouse=warehouse,
        reason=reason,
        reference=reference,
        created_since=created_since,
    )
    position = START if after is None else after
    if rows:
        position = max(position, rows[-1].position)
    if len(rows) < limit:
        position = max(position, (horizon, 0))
    return rows, position

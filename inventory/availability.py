"""Availability, the fast-changing part of the catalogue, kept apart from its cached entries.

The catalogue cache (inventory.cache) keeps what changes slowly (name, description, price,
active), and only a product edit, a new product or an import invalidates it. Availability changes
with every order, cancel, expiry, receipt, adjustment and transfer; a read lays the current
availability over the cached entry instead (`overlay`, `ListTemplate`), so an order throws no
cached page away and costs the cache nothing.

Current means at most CATALOGUE_AVAILABILITY_MAX_AGE_MS old: each process keeps the values it
read from PostgreSQL (one indexed statement for all the SKUs of a page) and reads a SKU again once
its value is that old, the age counted from before the statement started. So a change committed
at time t shows everywhere by t + the bound, a sold-out product included; 0 reads every time. The
client that made the change sees it at once: with a replica, values older than its last write are
not reused for it (project.db.own_writes).
Values come from the primary (never a replica, whose lag would add to the bound) and from
PostgreSQL only, so Redis being down changes nothing here. When PostgreSQL cannot be read, values
still fresh are used and the rest stay as the cached entry has them, the response marked
`X-Stale: true` (project.http.degraded). Stock decisions never read this: placement decides on
the locked rows.
"""

import threading
import time
import uuid
from collections.abc import Sequence

import orjson
from django.conf import settings
from django.db import OperationalError, connection

from project.db import own_writes, replica
from project.db.transactions import is_lock_error
from project.http.degraded import mark_stale

# Per process: past this many SKUs the values are dropped and read again (a full catalogue fits).
MAX_KNOWN = 100_000

# A hot level's free units are partly in its stock buckets, which are counted in its reserved
# (inventory.models.StockBucket): each level adds what its buckets hold, one probe of the
# stockbucket_level_slot (level, slot) index that finds nothing for a product out of hot mode.
AVAILABILITY_SQL = """
SELECT p.sku, COALESCE(SUM(greatest(s.on_hand - s.reserved - s.safety_stock, 0) + b.units) FILTER (WHERE w.active), 0)
  FROM inventory_product p
  LEFT JOIN inventory_stocklevel s ON s.product_id = p.id
  LEFT JOIN inventory_warehouse w ON w.id = s.warehouse_id
  LEFT JOIN LATERAL (SELECT COALESCE(SUM(k.units), 0) AS units
                       FROM inventory_stockbucket k WHERE k.level_id = s.id) b ON true
 WHERE p.sku = ANY(%s)
 GROUP BY p.sku
"""

_lock = threading.Lock()
_known: dict[str, tuple[int, float]] = {}  # SKU -> (units available, monotonic time read from)


def _read(skus: list[str]) -> dict[str, int]:
    with connection.cursor() as cursor:
        cursor.execute(AVAILABILITY_SQL, [skus])
        return {sku: max(int(units), 0) for sku, units in cursor.fetchall()}


def availability(skus: Sequence[str]) -> dict[str, int]:
    """Units available of these SKUs, each at most CATALOGUE_AVAILABILITY_MAX_AGE_MS old (a SKU
    with no product is left out). One statement for those not known fresh; locks nothing. When
    PostgreSQL cannot answer, only the fresh ones, and the response is marked stale."""
    max_age = settings.CATALOGUE_AVAILABILITY_MAX_AGE_MS / 1000
    now = time.monotonic()
    found: dict[str, int] = {}
    wanted: list[str] = []
    own_write_looked_up = False
    for sku in skus:
        known = _known.get(sku)
        if known is not None and now - known[1] < max_age and not own_write_looked_up:
            # A client reads its own writes: it reuses only values read since its last write (kept with
            # a replica, project.db.own_writes: one Redis round trip, and only when a value would be reused).
            max_age = min(max_age, own_writes.since())
            own_write_looked_up = True
        if known is not None and now - known[1] < max_age:
            found[sku] = known[0]
        else:
            wanted.append(sku)
    if not wanted:
        return found
    started = time.monotonic()
    try:
        read = _read(wanted)
    except OperationalError as exc:
        if is_lock_error(exc):
            raise
        mark_stale()
        return found
    remember(read, started)
    found.update(read)
    return found


def remember(units: dict[str, int], read_at: float) -> None:
    """Keep values read from PostgreSQL by a statement that started at `read_at` (time.monotonic()):
    a catalogue entry just built carries its products' availability, so its first read needs no
    second statement. Not when the request read from a replica: its lag is not in `read_at`."""
    if replica.served_by_replica():
        return
    with _lock:
        if len(_known) + len(units) > MAX_KNOWN:
            _known.clear()
        for sku, value in units.items():
            _known[sku] = (value, read_at)


def remember_payloads(payloads: list[dict], read_at: float) -> dict[str, int]:
    """`remember` the availability of product payloads just built (product_payload's shape) by a
    read that started at `read_at`; returns it by SKU."""
    units = {payload["sku"]: payload["available"] for payload in payloads}
    remember(units, read_at)
    return units


def forget() -> None:
    """Drop this process's values (tests, and a setting changed)."""
    with _lock:
        _known.clear()


def overlay(payloads: list[dict]) -> list[dict]:
    """Copies of these product payloads (product_payload's shape) with current availability."""
    units = availability([payload["sku"] for payload in payloads])
    return [
        {**payload, "available": units[payload["sku"]]} if payload["sku"] in units else payload for payload in payloads
    ]


class ListTemplate:
    """A rendered JSON page of products with a gap where each product's `available` goes: built
    once into the cache, filled with current availability at every read (bytes joined, nothing
    decoded or encoded again)."""

    def __init__(self, skus: list[str], parts: list[bytes], built: dict[str, int]):
        self.skus, self.parts, self.built = skus, parts, built

    @classmethod
    def render(cls, render, payloads: list[dict], read_at: float) -> "ListTemplate":
        """`render(payloads)` (bytes of a JSON document holding them) with gaps for availability.
        `read_at`: when the statement that read the payloads started (their availability is kept)."""
        marker = f"available:{uuid.uuid4().hex}"
        built = remember_payloads(payloads, read_at)
        body = render([{**payload, "available": marker} for payload in payloads])
        parts = body.split(orjson.dumps(marker))
        skus = [payload["sku"] for payload in payloads]
        if len(parts) != len(skus) + 1:  # the marker showed up elsewhere: keep the page as built
            return cls([], [render(payloads)], {})
        return cls(skus, parts, built)

    def fill(self) -> bytes:
        if not self.skus:
            return self.parts[0]
        units = availability(self.skus)
        out = [self.parts[0]]
        for sku, part in zip(self.skus, self.parts[1:], strict=True):
            out.append(str(units.get(sku, self.built[sku])).encode())
            out.append(part)
        return b"".join(out)

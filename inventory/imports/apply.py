"""Step 3 of an import: the staged rows applied to stock, one chunk of lines per transaction.

Each chunk (IMPORT_CHUNK_ROWS lines) creates the products that are missing when the row gives name
and price; creates missing levels with their new on_hand; locks the chunk's levels in pk order;
refuses, as row errors, unknown SKUs and rows whose new on_hand would fall below `reserved`; sets
the rest set-based, bumping `version` only where on_hand changes; writes one ledger row per
changed level with the real delta (reason `import`, reference `import:<id>`); and records the
job's progress in the same transaction, so a resumed run skips exactly the chunks applied.
"""

import json

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from inventory.cache import catalogue_changed
from inventory.imports.jobs import MAX_ERRORS, lock_job, raise_timeouts
from inventory.metrics import IMPORT_ROWS, STOCK_CHANGES
from inventory.models import ImportJob, Product, StockMovement
from inventory.services import reclaim_buckets
from project.db.transactions import Retry, atomic_with_retry

DEFAULT_LOW_STOCK_THRESHOLD = Product._meta.get_field("low_stock_threshold").default


# Every statement reads its chunk by line range off the staging primary key:
#   r.import_id = %(job)s AND r.line BETWEEN %(lo)s AND %(hi)s

CREATE_PRODUCTS = """
INSERT INTO inventory_product (sku, name, description, price, active, low_stock_threshold,
                               low_stock_alerted, version, created_at, updated_at)
SELECT DISTINCT ON (r.sku) r.sku, r.name, '', r.price, true, %(threshold)s, false, 1, now(), now()
  FROM inventory_importrow r
 WHERE r.import_id = %(job)s AND r.line BETWEEN %(lo)s AND %(hi)s AND r.error IS NULL
   AND r.name IS NOT NULL AND r.price IS NOT NULL
   AND NOT EXISTS (SELECT 1 FROM inventory_product p WHERE p.sku = r.sku)
 ORDER BY r.sku, r.line
    ON CONFLICT (sku) DO NOTHING
RETURNING sku
"""

# The chunk's existing levels are locked first, in their own statement, in primary key order
# (DESIGN §4). A statement reads one snapshot: when the locks were taken inside the statement that
# also applies the rows, a level a shopper's reservation changed while the chunk waited for its lock
# could be refused or written against the values the snapshot held, not the ones it locked (found
# by tests/inventory/imports/test_races.py: the guard below passed on a stale `reserved` and the
# `on_hand >= reserved` CHECK stopped the update). Locked beforehand, every level the apply
# statement reads is the committed, current one, and nobody can move it until commit.
CHUNK_LEVELS = """
SELECT s.id
  FROM inventory_importrow r
  JOIN inventory_product p ON p.sku = r.sku
  JOIN inventory_stocklevel s ON s.product_id = p.id AND s.warehouse_id = r.warehouse_id
 WHERE r.import_id = %(job)s AND r.line BETWEEN %(lo)s AND %(hi)s AND r.error IS NULL
 ORDER BY s.id
"""
LOCKED = "   FOR NO KEY UPDATE OF s"

# Then one statement applies the rest of a chunk, so each row's product and level are looked up once:
# - `src`: the chunk's good rows with their product (none: unknown SKU, a row error);
# - `locked`: their existing levels, already ours, with the current `on_hand` and `reserved` (a
#   level created by someone else since the lock above would be locked only here: the chunk is
#   run again then, so that every level it writes was locked before its snapshot);
# - `created`: missing levels, inserted with their imported on_hand (reserved 0, nothing to
#   refuse) in (product, warehouse) order, the order in which the stock services create levels;
# - `updated`: levels whose on_hand changes and stays >= reserved (version bumped only there);
# - `moved`: one ledger row per changed level with the real delta (new - old).
# A level created by someone else since the statement's snapshot is neither in `locked` nor in
# `created` (ON CONFLICT DO NOTHING): `found` < `known` then, and the chunk is run again.
APPLY_CHUNK = """
WITH src AS MATERIALIZED (
    SELECT r.line, r.sku, r.warehouse_id, r.on_hand AS new_on_hand, p.id AS product_id
      FROM inventory_importrow r
      LEFT JOIN inventory_product p ON p.sku = r.sku
     WHERE r.import_id = %(job)s AND r.line BETWEEN %(lo)s AND %(hi)s AND r.error IS NULL
), locked AS MATERIALIZED (
    SELECT s.id, s.on_hand AS old_on_hand, s.reserved, src.line, src.sku, src.new_on_hand
      FROM src
      JOIN inventory_stocklevel s ON s.product_id = src.product_id AND s.warehouse_id = src.warehouse_id
     ORDER BY s.id
       FOR NO KEY UPDATE OF s
), missing AS MATERIALIZED (
    SELECT src.product_id, src.warehouse_id, src.new_on_hand, src.sku
      FROM src
     WHERE src.product_id IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM inventory_stocklevel s
                        WHERE s.product_id = src.product_id AND s.warehouse_id = src.warehouse_id)
), created AS (
    INSERT INTO inventory_stocklevel (product_id, warehouse_id, on_hand, reserved, version, updated_at, backorder_cap)
    SELECT product_id, warehouse_id, new_on_hand, 0, 1, now(),  -- the product's backorder cap, as _ensure_levels
           (SELECT CASE WHEN p.backorder_policy = 'deny' THEN 0 ELSE p.backorder_cap END
              FROM inventory_product p WHERE p.id = missing.product_id)
      FROM missing
     ORDER BY product_id, warehouse_id
        ON CONFLICT (product_id, warehouse_id) DO NOTHING
    RETURNING id, on_hand
), updated AS (
    UPDATE inventory_stocklevel s
       SET on_hand = l.new_on_hand, version = s.version + 1, updated_at = now()
      FROM locked l
     WHERE s.id = l.id AND l.new_on_hand <> l.old_on_hand AND l.new_on_hand >= l.reserved
    RETURNING s.id, l.sku, l.new_on_hand - l.old_on_hand AS delta
), moved AS MATERIALIZED (
    SELECT inventory_ledger_write(coalesce(array_agg(c.id ORDER BY c.part, c.id), '{}'),
                                  coalesce(array_agg(c.delta ORDER BY c.part, c.id), '{}'),
                                  array_fill(0::bigint, ARRAY[count(*)::integer]), %(reason)s,
                                  array_fill(%(reference)s::text, ARRAY[count(*)::integer]), '',
                                  %(actor)s::bigint, now()) AS rows
      FROM (SELECT id, on_hand AS delta, 1 AS part FROM created WHERE on_hand <> 0
             UNION ALL
            SELECT id, delta, 2 FROM updated) c
)
SELECT (SELECT count(*) FROM inventory_importrow r
         WHERE r.import_id = %(job)s AND r.line BETWEEN %(lo)s AND %(hi)s) AS rows,
       (SELECT count(*) FROM src WHERE product_id IS NOT NULL) AS known,
       (SELECT count(*) FROM created) + (SELECT count(*) FROM locked) AS found,
       (SELECT count(*) FROM locked) AS locked,
       (SELECT count(*) FROM locked WHERE new_on_hand < reserved) AS refused,
       (SELECT rows FROM moved) AS moved,
       (SELECT coalesce(array_agg(sku), '{}')
          FROM (SELECT sku FROM missing WHERE new_on_hand <> 0
                 UNION ALL
                SELECT sku FROM updated) changed) AS skus,
       (SELECT coalesce(json_agg(json_build_array(line, message) ORDER BY line), '[]')
          FROM (SELECT r.line, r.error AS message
                  FROM inventory_importrow r
                 WHERE r.import_id = %(job)s AND r.line BETWEEN %(lo)s AND %(hi)s AND r.error IS NOT NULL
                 UNION ALL
                SELECT line, format('Unknown SKU %%s: give name and price to create the product.', sku)
                  FROM src WHERE product_id IS NULL
                 UNION ALL
                SELECT line, format('on_hand %%s would be below the %%s units reserved for orders.',
                                    new_on_hand, reserved)
                  FROM locked WHERE new_on_hand < reserved
                 ORDER BY 1
                 LIMIT %(room)s) errors) AS errors
"""


def import_reference(import_id: int) -> str:
    return f"import:{import_id}"


@atomic_with_retry
def apply_next_chunk(import_id: int) -> bool:
    """Apply the next chunk and record it, in one transaction; False when none is left.

    Retried as a whole on a lock timeout or deadlock, or when a level appeared under it
    (then LockTimeout after bounded attempts: the task is tried again later).
    """
    job = lock_job(import_id)
    if job.finished or job.chunks_applied >= job.chunks_total:
        return False  # done, or stopped by staff (import_fail released its warehouses)
    raise_timeouts()
    index = job.chunks_applied
    params = {
        "job": import_id,
        "lo": index * job.chunk_rows + 1,
        "hi": (index + 1) * job.chunk_rows,
        "threshold": DEFAULT_LOW_STOCK_THRESHOLD,
        "reason": StockMovement.Reason.IMPORT,
        "reference": import_reference(import_id),
        "actor": job.created_by_id,
        "room": max(0, MAX_ERRORS - len(job.errors)),
    }
    with connection.cursor() as cursor:
        cursor.execute(CREATE_PRODUCTS, params)
        created_products = [sku for (sku,) in cursor.fetchall()]
        # A count replaces on_hand: a hot level's bucket units come back first (locking each level,
        # then its buckets, level by level), so the refusal on_hand < reserved below counts only
        # units that orders hold. The chunk's levels are then locked all at once (held already).
        cursor.execute(CHUNK_LEVELS, params)
        reclaim_buckets(
            [level_id for (level_id,) in cursor.fetchall()], reference=params["reference"], actor_id=params["actor"]
        )
        cursor.execute(CHUNK_LEVELS + LOCKED, params)
        prelocked = cursor.rowcount
        cursor.execute(APPLY_CHUNK, params)
        rows, known, found, locked, refused, moved, skus, errors = cursor.fetchone()
    if found != known or locked != prelocked:
        raise Retry(f"import {import_id}: a stock level was created by someone else during chunk {index}")
    if isinstance(errors, str):
        errors = json.loads(errors)
    ok = known - refused
    failed = rows - ok
    ImportJob.objects.filter(pk=import_id).update(
        rows_done=F("rows_done") + rows,
        rows_ok=F("rows_ok") + ok,
        rows_failed=F("rows_failed") + failed,
        chunks_applied=F("chunks_applied") + 1,
        errors=job.errors + [{"line": line, "message": message} for line, message in errors],
        updated_at=timezone.now(),
    )
    if skus or created_products:
        catalogue_changed([*created_products, *skus])  # after commit

    def count():
        IMPORT_ROWS.labels(result="ok").inc(ok)
        IMPORT_ROWS.labels(result="failed").inc(failed)
        STOCK_CHANGES.labels(reason=StockMovement.Reason.IMPORT).inc(moved)

    transaction.on_commit(count)
    return True

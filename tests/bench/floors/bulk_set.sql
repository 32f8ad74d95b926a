-- The floor of the bulk stock set (POST /api/v1/stock/levels/bulk, DESIGN.md §12): 1,000 levels
-- set to an absolute on_hand in one set-based transaction straight through psql: no HTTP, no
-- JSON, no Python, no idempotency key row.
--
--   psql -v actor=NULL -v batch=0 -v products=10000 -f tests/bench/floors/bulk_set.sql
--
-- Same effects as inventory.bulk for the bench's batches (tests/bench/bulk_set.py): batch b sets
-- the MAIN level of 1,000 consecutive bench SKUs (from b * 1000, wrapping) to 10,000,001 + b; the
-- levels locked in pk order first, on_hand set and version bumped where it changes and stays
-- above reserved, one `count` ledger row per changed level through inventory_ledger_write.
\set ON_ERROR_STOP on

BEGIN;
WITH wanted AS (
    SELECT s.id, 10000001 + :batch AS on_hand
      FROM generate_series(0, 999) g
      JOIN inventory_product p ON p.sku = 'SKU-' || lpad(((:batch * 1000 + g) % :products + 1)::text, 5, '0')
      JOIN inventory_warehouse w ON w.code = 'MAIN'
      JOIN inventory_stocklevel s ON s.product_id = p.id AND s.warehouse_id = w.id
), locked AS MATERIALIZED (
    SELECT s.id, s.on_hand AS old_on_hand, wanted.on_hand
      FROM inventory_stocklevel s JOIN wanted ON wanted.id = s.id
     ORDER BY s.id
       FOR NO KEY UPDATE OF s
), updated AS (
    UPDATE inventory_stocklevel s
       SET on_hand = l.on_hand, version = s.version + 1, updated_at = now()
      FROM locked l
     WHERE s.id = l.id AND l.on_hand <> l.old_on_hand AND l.on_hand >= s.reserved
    RETURNING s.id, l.on_hand - l.old_on_hand AS delta
)
SELECT inventory_ledger_write(coalesce(array_agg(id ORDER BY id), '{}'), coalesce(array_agg(delta ORDER BY id), '{}'),
                              array_fill(0::bigint, ARRAY[count(*)::integer]), 'count',
                              array_fill('bench-bulk'::text, ARRAY[count(*)::integer]), '', :actor, now())
  FROM updated;
COMMIT;

-- The floor of a stock import (DESIGN.md §12): the same COPY and set-based upsert that
-- inventory.imports runs, straight through psql: no Python parse, no Celery, no HTTP, no chunks.
--
--   psql -v actor=NULL -f tests/bench/floors/import.sql < stock.csv
--
-- The file is `sku,warehouse,on_hand` (header line first), every SKU known, no duplicates.
-- Missing levels are created with their on_hand, existing ones are locked in id order and set;
-- every changed level gets one ledger row with its real delta (new - old), reason `import`.
\set ON_ERROR_STOP on
\timing on

DROP TABLE IF EXISTS bench_import_floor;
CREATE UNLOGGED TABLE bench_import_floor (
    line bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sku varchar(64) NOT NULL,
    warehouse varchar(32) NOT NULL,
    on_hand bigint NOT NULL
);
\copy bench_import_floor (sku, warehouse, on_hand) FROM pstdin WITH (FORMAT csv, HEADER true)

BEGIN;

WITH created AS (
    INSERT INTO inventory_stocklevel (product_id, warehouse_id, on_hand, reserved, version, updated_at)
    SELECT p.id, w.id, f.on_hand, 0, 1, now()
      FROM bench_import_floor f
      JOIN inventory_product p ON p.sku = f.sku
      JOIN inventory_warehouse w ON w.code = f.warehouse
     WHERE NOT EXISTS (SELECT 1 FROM inventory_stocklevel s WHERE s.product_id = p.id AND s.warehouse_id = w.id)
     ORDER BY p.id, w.id
        ON CONFLICT (product_id, warehouse_id) DO NOTHING
    RETURNING id, on_hand
)
INSERT INTO inventory_stockmovement (level_id, delta_on_hand, delta_reserved, reason, reference, note, actor_id, created_at)
SELECT id, on_hand, 0, 'import', 'import:floor', '', :actor, now() FROM created WHERE on_hand <> 0;

SELECT count(*) AS locked FROM (
    SELECT s.id
      FROM bench_import_floor f
      JOIN inventory_product p ON p.sku = f.sku
      JOIN inventory_warehouse w ON w.code = f.warehouse
      JOIN inventory_stocklevel s ON s.product_id = p.id AND s.warehouse_id = w.id
     ORDER BY s.id
       FOR UPDATE OF s
) locked;

WITH target AS (
    SELECT s.id, s.on_hand AS old_on_hand, f.on_hand AS new_on_hand
      FROM bench_import_floor f
      JOIN inventory_product p ON p.sku = f.sku
      JOIN inventory_warehouse w ON w.code = f.warehouse
      JOIN inventory_stocklevel s ON s.product_id = p.id AND s.warehouse_id = w.id
     WHERE s.on_hand <> f.on_hand AND f.on_hand >= s.reserved
), updated AS (
    UPDATE inventory_stocklevel s
       SET on_hand = t.new_on_hand, version = s.version + 1, updated_at = now()
      FROM target t
     WHERE s.id = t.id
    RETURNING s.id, t.new_on_hand - t.old_on_hand AS delta
)
INSERT INTO inventory_stockmovement (level_id, delta_on_hand, delta_reserved, reason, reference, note, actor_id, created_at)
SELECT id, delta, 0, 'import', 'import:floor', '', :actor, now() FROM updated;

COMMIT;

DROP TABLE bench_import_floor;

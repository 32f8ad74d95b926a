-- Hot mode (a flash sale): a level's free units split into buckets that orders take from without
-- queueing on the level's row. Units in buckets are counted in the level's `reserved`, so every
-- writer that ignores buckets sees only `on_hand - reserved` and cannot spend them; availability
-- is `on_hand - reserved + sum(bucket units)`.
--
-- Locks (DESIGN.md §4: stock levels by id; within a level, its row before its buckets by id):
-- - an order's take from a bucket does not lock the level's row (its ledger and allocation rows'
--   foreign keys take FOR KEY SHARE on it, which no writer of a level conflicts with);
-- - every writer of a level locks it FOR NO KEY UPDATE (inventory.locks, the import's chunk lock,
--   the expiry sweep, the slow path below): FOR UPDATE would conflict with those KEY SHARE locks,
--   which PostgreSQL grants without queueing behind it, so a stream of orders would starve it;
-- - the slow path and inventory_buckets_reclaim then lock every bucket of the level in id order,
--   and a take never waits for a level's row or bucket while holding a bucket it did not keep.
--
-- The ledger: delta_bucketed is the units moved into (+) or out of (-) the level's buckets, and the
-- level's reserved moves by delta_reserved + delta_bucketed. An order served by a bucket writes
-- one row, reserved +n bucketed -n (its caller writes it); a slow path that refills the buckets
-- writes one `bucket` row.

DROP FUNCTION IF EXISTS inventory_ledger_write(bigint[], bigint[], bigint[], text, text[], text, bigint, timestamptz);

-- inventory_ledger_write: the one writer of ledger rows (inventory_stockmovement), for SQL and
-- Python alike. Set-based: one row per element of p_levels, in array order; p_on_hand,
-- p_reserved, p_references (and p_bucketed, when given) have the same length. The reason, note,
-- actor (NULL: the system) and time are shared by the rows of a call. Arrays of different lengths
-- raise: a ledger row is never half-filled. Rows are only ever inserted (migration 0002's trigger).
CREATE FUNCTION inventory_ledger_write(
    p_levels bigint[],
    p_on_hand bigint[],
    p_reserved bigint[],
    p_reason text,
    p_references text[],
    p_note text,
    p_actor bigint,
    p_at timestamptz,
    p_bucketed bigint[] DEFAULT NULL
) RETURNS integer
LANGUAGE plpgsql AS $fn$
DECLARE
    v_rows integer;
BEGIN
    v_rows := coalesce(cardinality(p_levels), 0);
    IF coalesce(cardinality(p_on_hand), 0) <> v_rows OR coalesce(cardinality(p_reserved), 0) <> v_rows
       OR coalesce(cardinality(p_references), 0) <> v_rows
       OR (p_bucketed IS NOT NULL AND cardinality(p_bucketed) <> v_rows) THEN
        RAISE EXCEPTION 'inventory_ledger_write: % levels, % on_hand deltas, % reserved deltas, % references, % bucketed',
            v_rows, coalesce(cardinality(p_on_hand), 0), coalesce(cardinality(p_reserved), 0),
            coalesce(cardinality(p_references), 0), cardinality(p_bucketed);
    END IF;
    INSERT INTO inventory_stockmovement (level_id, delta_on_hand, delta_reserved, delta_bucketed, reason, reference,
                                         note, actor_id, created_at)
    SELECT m.level_id, m.on_hand, m.reserved, coalesce(p_bucketed[m.ord], 0), p_reason, m.reference, p_note,
           p_actor, p_at
      FROM unnest(p_levels, p_on_hand, p_reserved, p_references) WITH ORDINALITY
           AS m(level_id, on_hand, reserved, reference, ord)
     ORDER BY m.ord;
    RETURN v_rows;
END
$fn$;

-- inventory_hot_take: take p_qty units of a hot level for an order; false when the level and its
-- buckets together hold fewer (decided with the level and every bucket locked). The caller writes
-- the order's ledger row, reserved +p_qty bucketed -p_qty, and its allocation.
--
-- 1. A bucket with the units that nobody holds: one picked at random among those the snapshot
--    shows with enough units, locked by id with SKIP LOCKED (a recheck on `units` could leave a
--    row locked that the query then passes over; a lock by id cannot). If it no longer has the
--    units, its subtransaction is rolled back, which gives the lock back, and another is tried.
-- 2. Else wait for one that has them (another order holds it for one short transaction), given
--    back the same way if it lacks once ours.
-- 3. Else the slow path: the level and all of its buckets locked (missing ones created, up to the
--    product's stock_buckets), the order takes from the pool (the level's free units and every
--    bucket's), and what is left is spread evenly over the buckets (ledger `bucket` row). With no
--    bucket (hot mode turned off meanwhile) the units come from the level's free units, as a cold
--    order's would.
-- So a transaction never waits for a level's row or its buckets while it holds one of them that it
-- did not keep: the slow path and inventory_buckets_reclaim, which lock every bucket in id order,
-- cannot deadlock with the picks.
CREATE OR REPLACE FUNCTION inventory_hot_take(
    p_level bigint, p_qty bigint, p_reference text, p_actor bigint, p_at timestamptz
) RETURNS boolean
LANGUAGE plpgsql AS $fn$
DECLARE
    v_id bigint;
    v_units bigint;
    v_tried bigint[] := '{}';
    v_on_hand bigint;
    v_reserved bigint;
    v_ids bigint[];
    v_held bigint;
    v_n integer;
    v_pool bigint;
    v_left bigint;
    v_want integer;
BEGIN
    FOR v_try IN 1 .. 3 LOOP
        v_id := NULL;
        BEGIN
            -- Locked by id: the candidates are fixed before any lock, so no row is locked and then
            -- passed over; with SKIP LOCKED the first one nobody holds, in random order.
            SELECT b.id, b.units INTO v_id, v_units
              FROM inventory_stockbucket b
             WHERE b.id = ANY (ARRAY(SELECT k.id FROM inventory_stockbucket k
                                      WHERE k.level_id = p_level AND k.units >= p_qty AND k.id <> ALL (v_tried)))
             ORDER BY random()
             LIMIT 1
               FOR UPDATE SKIP LOCKED;
            IF v_id IS NOT NULL AND v_units >= p_qty THEN
                UPDATE inventory_stockbucket SET units = units - p_qty WHERE id = v_id;
                RETURN true;
            END IF;
            RAISE EXCEPTION USING ERRCODE = 'SR101';  -- short since the snapshot: give it back
        EXCEPTION WHEN SQLSTATE 'SR101' THEN
            NULL;
        END;
        EXIT WHEN v_id IS NULL;  -- every bucket with the units is held by someone
        v_tried := v_tried || v_id;
    END LOOP;

    SELECT k.id INTO v_id FROM inventory_stockbucket k
     WHERE k.level_id = p_level AND k.units >= p_qty ORDER BY random() LIMIT 1;
    IF FOUND THEN
        BEGIN
            SELECT units INTO v_units FROM inventory_stockbucket WHERE id = v_id FOR UPDATE;
            IF v_units >= p_qty THEN
                UPDATE inventory_stockbucket SET units = units - p_qty WHERE id = v_id;
                RETURN true;
            END IF;
            RAISE EXCEPTION USING ERRCODE = 'SR101';
        EXCEPTION WHEN SQLSTATE 'SR101' THEN
            NULL;
        END;
    END IF;

    SELECT on_hand, reserved INTO v_on_hand, v_reserved FROM inventory_stocklevel WHERE id = p_level FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    SELECT coalesce(array_agg(b.id ORDER BY b.id), '{}'), coalesce(sum(b.units), 0), count(*)
      INTO v_ids, v_held, v_n
      FROM (SELECT id, units FROM inventory_stockbucket WHERE level_id = p_level ORDER BY id FOR UPDATE) AS b;
    -- Read after the level's lock: a switch of the product (which locks the level) has committed
    -- or waits for this transaction. Missing buckets are created here, by the first order after
    -- the switch or on a level created since.
    SELECT p.stock_buckets INTO v_want
      FROM inventory_stocklevel s JOIN inventory_product p ON p.id = s.product_id WHERE s.id = p_level;
    IF v_n < v_want THEN
        WITH added AS (
            INSERT INTO inventory_stockbucket (level_id, units)
            SELECT p_level, 0 FROM generate_series(1, v_want - v_n)
            RETURNING id
        )
        SELECT v_ids || array_agg(id ORDER BY id) INTO v_ids FROM added;
        v_n := v_want;
    END IF;
    v_pool := v_on_hand - v_reserved + v_held;
    IF v_pool < p_qty THEN
        RETURN false;
    END IF;
    IF v_n = 0 THEN
        v_left := 0;
        UPDATE inventory_stocklevel SET reserved = reserved + p_qty, updated_at = p_at WHERE id = p_level;
    ELSE
        v_left := v_pool - p_qty;
        UPDATE inventory_stockbucket AS b
           SET units = v_left / v_n + CASE WHEN x.ord <= v_left % v_n THEN 1 ELSE 0 END
          FROM unnest(v_ids) WITH ORDINALITY AS x(id, ord)
         WHERE b.id = x.id;
        -- Everything free is now in the buckets or this order's: reserved covers all on hand.
        UPDATE inventory_stocklevel SET reserved = on_hand, updated_at = p_at WHERE id = p_level;
    END IF;
    PERFORM inventory_ledger_write(ARRAY[p_level], ARRAY[0::bigint], ARRAY[0::bigint], 'bucket', ARRAY[p_reference],
                                   '', p_actor, p_at, ARRAY[v_left - v_held + p_qty]);
    RETURN true;
END
$fn$;

-- inventory_buckets_reclaim: lock these levels and move every unit of their buckets back to them
-- (reserved -= units, one `bucket` row per level that had some); returns the units moved. Locks
-- level by level in id order, each level's row (FOR NO KEY UPDATE, as every writer of a level) and
-- then its buckets by id, waiting for the orders that hold one to commit: the lock order of a take
-- that holds a bucket of one level and goes on to the next. So a caller calls this before it locks
-- several levels' rows at once (inventory.locks), never after.
-- Writers that need a level's free units (counts, adjustments, transfers, imports, moved
-- reservations, deactivation) call it right after locking; the next order refills the buckets.
CREATE OR REPLACE FUNCTION inventory_buckets_reclaim(
    p_levels bigint[], p_reference text, p_actor bigint, p_at timestamptz
) RETURNS bigint
LANGUAGE plpgsql AS $fn$
DECLARE
    v_level bigint;
    v_ids bigint[];
    v_units bigint[];
BEGIN
    FOR v_level IN SELECT DISTINCT l FROM unnest(p_levels) AS l ORDER BY l LOOP
        PERFORM 1 FROM inventory_stocklevel WHERE id = v_level FOR NO KEY UPDATE;
        PERFORM 1 FROM inventory_stockbucket WHERE level_id = v_level ORDER BY id FOR UPDATE;
    END LOOP;
    WITH held AS (
        SELECT id, level_id, units FROM inventory_stockbucket WHERE level_id = ANY (p_levels) AND units > 0
    ), emptied AS (
        UPDATE inventory_stockbucket AS b SET units = 0 FROM held WHERE b.id = held.id
        RETURNING held.level_id, held.units
    ), per_level AS (
        SELECT level_id, sum(units)::bigint AS units FROM emptied GROUP BY level_id
    ), moved AS (
        UPDATE inventory_stocklevel AS s SET reserved = s.reserved - p.units, updated_at = p_at
          FROM per_level AS p WHERE s.id = p.level_id
        RETURNING s.id, p.units
    )
    SELECT array_agg(id ORDER BY id), array_agg(units ORDER BY id) INTO v_ids, v_units FROM moved;
    IF v_ids IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM inventory_ledger_write(v_ids, array_fill(0::bigint, ARRAY[cardinality(v_ids)]),
                                   array_fill(0::bigint, ARRAY[cardinality(v_ids)]), 'bucket',
                                   array_fill(p_reference, ARRAY[cardinality(v_ids)]), '', p_actor, p_at,
                                   (SELECT array_agg(-u ORDER BY o) FROM unnest(v_units) WITH ORDINALITY AS x(u, o)));
    RETURN (SELECT sum(u) FROM unnest(v_units) AS u);
END
$fn$;

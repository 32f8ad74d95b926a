-- Bucket slots: a level's buckets are numbered 1 .. N (the product's stock_buckets), so an order
-- picks one at random by (level_id, slot), one probe of a unique index, instead of reading every
-- bucket of the level to choose among them. With as many buckets as buyers at once (the point of
-- hot mode), a take costs the same at N = 64 as at N = 1. The rest is 0008's design, unchanged.

DROP FUNCTION IF EXISTS inventory_hot_take(bigint, bigint, text, bigint, timestamptz);

-- inventory_hot_take: take p_qty units of a hot level for an order; false when the level and its
-- buckets together hold fewer (decided with the level and every bucket locked). The caller writes
-- the order's ledger row, reserved +p_qty bucketed -p_qty, and its allocation. p_buckets is the
-- product's stock_buckets as the caller read it (NULL: read it here); a stale value only costs a
-- miss, the slow path reads it again under the level's lock.
--
-- 1. A bucket nobody holds: a slot drawn at random and read; if it shows the units, its row is
--    locked by id with SKIP LOCKED (no recheck can then leave a row locked and passed over). One
--    that shows at least twice the units is locked directly: a subtransaction would cost a tenth of
--    an order. If other orders drained it between the read and the lock, this transaction holds a
--    bucket it cannot give back, and waiting for anything now could deadlock: SQLSTATE SR503, the
--    caller runs the whole transaction again (rare: more than p_qty units taken from that bucket
--    within two statements). One closer to empty is locked in a subtransaction, rolled back if it
--    lacks the units once ours, which gives the lock back. A few draws, then:
-- 2. wait for one bucket that the snapshot shows with the units (another order holds it for one
--    short transaction), given back the same way if it lacks once ours;
-- 3. else the slow path: the level and all of its buckets locked (missing slots created, up to the
--    product's stock_buckets), the order takes from the pool (the level's free units and every
--    bucket's), and what is left is spread evenly over the buckets (ledger `bucket` row). With no
--    bucket (hot mode turned off meanwhile) the units come from the level's free units, as a cold
--    order's would.
-- So a transaction never waits for a level's row or its buckets while it holds one of them that it
-- did not keep: the slow path and inventory_buckets_reclaim, which lock every bucket in id order,
-- cannot deadlock with the picks.
CREATE FUNCTION inventory_hot_take(
    p_level bigint, p_qty bigint, p_reference text, p_actor bigint, p_at timestamptz, p_buckets integer DEFAULT NULL
) RETURNS boolean
LANGUAGE plpgsql AS $fn$
DECLARE
    v_id bigint;
    v_units bigint;
    v_slot integer;
    v_on_hand bigint;
    v_reserved bigint;
    v_ids bigint[];
    v_slots integer[];
    v_held bigint;
    v_n integer;
    v_pool bigint;
    v_left bigint;
    v_want integer;
BEGIN
    v_n := coalesce(p_buckets, (SELECT p.stock_buckets FROM inventory_stocklevel s
                                  JOIN inventory_product p ON p.id = s.product_id WHERE s.id = p_level), 0);
    FOR v_try IN 1 .. least(v_n, 4) LOOP
        v_id := NULL;
        v_slot := 1 + floor(random() * v_n)::integer;  -- drawn once: random() in the WHERE is per row
        SELECT b.id, b.units INTO v_id, v_units FROM inventory_stockbucket b WHERE b.level_id = p_level AND b.slot = v_slot;
        CONTINUE WHEN v_id IS NULL OR v_units < p_qty;  -- not created yet, or short: nothing locked
        IF v_units >= 2 * p_qty THEN
            SELECT units INTO v_units FROM inventory_stockbucket WHERE id = v_id FOR UPDATE SKIP LOCKED;
            CONTINUE WHEN NOT FOUND;  -- held by another order
            IF v_units < p_qty THEN
                RAISE EXCEPTION USING ERRCODE = 'SR503', MESSAGE = 'a hot bucket was drained while it was being locked';
            END IF;
            UPDATE inventory_stockbucket SET units = units - p_qty WHERE id = v_id;
            RETURN true;
        END IF;
        BEGIN
            SELECT units INTO v_units FROM inventory_stockbucket WHERE id = v_id FOR UPDATE SKIP LOCKED;
            IF NOT FOUND THEN
                NULL;  -- held by another order: nothing to give back
            ELSIF v_units >= p_qty THEN
                UPDATE inventory_stockbucket SET units = units - p_qty WHERE id = v_id;
                RETURN true;
            ELSE
                RAISE EXCEPTION USING ERRCODE = 'SR101';  -- it lacks the units: give it back
            END IF;
        EXCEPTION WHEN SQLSTATE 'SR101' THEN
            NULL;
        END;
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
    SELECT coalesce(array_agg(b.id ORDER BY b.id), '{}'), coalesce(array_agg(b.slot), '{}'),
           coalesce(sum(b.units), 0), count(*)
      INTO v_ids, v_slots, v_held, v_n
      FROM (SELECT id, slot, units FROM inventory_stockbucket WHERE level_id = p_level ORDER BY id FOR UPDATE) AS b;
    -- Read after the level's lock: a switch of the product (which locks the level) has committed
    -- or waits for this transaction. Missing slots are created here, by the first order after the
    -- switch or on a level created since.
    SELECT p.stock_buckets INTO v_want
      FROM inventory_stocklevel s JOIN inventory_product p ON p.id = s.product_id WHERE s.id = p_level;
    IF v_n < v_want THEN
        WITH added AS (
            INSERT INTO inventory_stockbucket (level_id, slot, units)
            SELECT p_level, g, 0 FROM generate_series(1, v_want) AS g WHERE g <> ALL (v_slots)
            RETURNING id
        )
        SELECT v_ids || array_agg(id ORDER BY id) INTO v_ids FROM added;
        v_n := cardinality(v_ids);
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

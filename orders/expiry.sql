-- orders_expire_chunk: one chunk of the expiry sweep (orders.jobs.expire_reservations) in one call.
--
-- Claims up to p_limit reserved orders past their deadline that no one else holds (FOR UPDATE SKIP
-- LOCKED, in the (expires_at, id) order of the partial index order_reserved_expiry_id, starting
-- after the previous chunk's last row), moves them to `expired`, writes their emails to the outbox
-- (outbox_write), then locks every stock level they hold in id order in one statement (the
-- system's lock order: order rows, then levels by id) and gives the units back: each level updated
-- once with its totals (reserved and backordered units alike), one `expiry` ledger row per
-- allocation (reference: the order's number), written by inventory_ledger_write.
--
-- Runs inside the caller's transaction, which commits the chunk. Returns how many orders it
-- expired, the (expires_at, id) to continue after, the ledger rows written and the SKUs touched
-- (the caller invalidates their cached reads at commit).

CREATE OR REPLACE FUNCTION orders_expire_chunk(
    p_now timestamptz,
    p_limit integer,
    p_after_expires timestamptz,  -- the previous chunk's last row; '-infinity', 0 for the first
    p_after_id bigint,
    p_order_ids bigint[],         -- NULL: every order; otherwise only these (the admin's selection)
    p_email_task text,
    p_request_id text,
    OUT expired integer,
    OUT last_expires timestamptz,
    OUT last_id bigint,
    OUT ledger_rows integer,
    OUT skus text[]
)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_ids bigint[];
    v_numbers text[];
    v_expires timestamptz[];
    v_moved integer;
    v_a_level bigint[];
    v_a_qty integer[];
    v_a_bo integer[];
    v_bos bigint[];
    v_a_ref text[];
    v_levels bigint[];
    v_units bigint[];
    v_updated integer;
BEGIN
    -- Two static claims rather than one with `p_order_ids IS NULL OR ...`: each keeps a plan that
    -- walks the partial index from (p_after_expires, p_after_id) once PL/pgSQL caches it.
    IF p_order_ids IS NULL THEN
        SELECT array_agg(c.id ORDER BY c.expires_at, c.id), array_agg(c.number ORDER BY c.expires_at, c.id),
               array_agg(c.expires_at ORDER BY c.expires_at, c.id)
          INTO v_ids, v_numbers, v_expires
          FROM (SELECT o.id, o.number, o.expires_at
                  FROM orders_order o
                 WHERE o.status = 'reserved' AND o.expires_at <= p_now
                   AND (o.expires_at, o.id) > (p_after_expires, p_after_id)
                 ORDER BY o.expires_at, o.id
                 LIMIT p_limit
                   FOR UPDATE SKIP LOCKED) c;
    ELSE
        SELECT array_agg(c.id ORDER BY c.expires_at, c.id), array_agg(c.number ORDER BY c.expires_at, c.id),
               array_agg(c.expires_at ORDER BY c.expires_at, c.id)
          INTO v_ids, v_numbers, v_expires
          FROM (SELECT o.id, o.number, o.expires_at
                  FROM orders_order o
                 WHERE o.id = ANY (p_order_ids) AND o.status = 'reserved' AND o.expires_at <= p_now
                   AND (o.expires_at, o.id) > (p_after_expires, p_after_id)
                 ORDER BY o.expires_at, o.id
                 LIMIT p_limit
                   FOR UPDATE SKIP LOCKED) c;
    END IF;
    expired := coalesce(cardinality(v_ids), 0);
    ledger_rows := 0;
    skus := '{}';
    IF expired = 0 THEN
        RETURN;
    END IF;
    last_expires := v_expires[expired];
    last_id := v_ids[expired];

    -- The rows are ours (claimed above) and still `reserved`: move them and write their emails
    -- before any stock level is locked, so those locks are held for the release alone.
    UPDATE orders_order
       SET status = 'expired', expired_at = p_now, updated_at = p_now, version = version + 1
     WHERE id = ANY (v_ids) AND status = 'reserved';
    GET DIAGNOSTICS v_moved = ROW_COUNT;
    IF v_moved <> expired THEN
        RAISE EXCEPTION 'expired % of % claimed orders', v_moved, expired;  -- rolls the chunk back
    END IF;
    -- No NOTIFY here: the caller (orders.jobs) notifies the relay once the chunk is written.
    PERFORM outbox_write(p_email_task, NULL,
                         ARRAY(SELECT jsonb_build_object('order_id', u.id, 'kind', 'expired')
                                 FROM unnest(v_ids) WITH ORDINALITY AS u(id, ord)
                                ORDER BY u.ord),
                         p_request_id, NULL);
    PERFORM orders_webhook_emit('order.expired', v_ids);  -- their webhook events (orders/events.sql)

    -- A reserved order has shipped nothing: its allocations hold quantity - backordered reserved units.
    SELECT array_agg(al.stock_level_id ORDER BY al.id), array_agg(al.quantity - al.backordered ORDER BY al.id),
           array_agg(al.backordered ORDER BY al.id),
           array_agg(o.number ORDER BY al.id), coalesce(array_agg(DISTINCT p.sku), '{}')
      INTO v_a_level, v_a_qty, v_a_bo, v_a_ref, skus
      FROM unnest(v_ids, v_numbers) AS o(id, number)
      JOIN orders_orderline l ON l.order_id = o.id
      JOIN orders_allocation al ON al.line_id = l.id
      JOIN inventory_product p ON p.id = l.product_id;
    IF v_a_level IS NULL THEN
        RETURN;
    END IF;
    SELECT array_agg(v.level_id ORDER BY v.level_id), array_agg(v.units ORDER BY v.level_id),
           array_agg(v.bo ORDER BY v.level_id)
      INTO v_levels, v_units, v_bos
      FROM (SELECT a.level_id, sum(a.quantity) AS units, sum(a.bo) AS bo
              FROM unnest(v_a_level, v_a_qty, v_a_bo) AS a(level_id, quantity, bo)
             GROUP BY a.level_id) v;
    -- Every level of the chunk locked in id order by one statement before any of them changes.
    PERFORM 1 FROM inventory_stocklevel s WHERE s.id = ANY (v_levels) ORDER BY s.id FOR NO KEY UPDATE;
    UPDATE inventory_stocklevel s
       SET reserved = s.reserved - v.units, backordered = s.backordered - v.bo, updated_at = now()
      FROM unnest(v_levels, v_units, v_bos) AS v(id, units, bo)
     WHERE s.id = v.id;
    GET DIAGNOSTICS v_updated = ROW_COUNT;
    IF v_updated <> cardinality(v_levels) THEN
        RAISE EXCEPTION 'updated % of % stock levels', v_updated, cardinality(v_levels);
    END IF;
    ledger_rows := inventory_ledger_write(
        v_a_level, array_fill(0::bigint, ARRAY[cardinality(v_a_level)]),
        ARRAY(SELECT -a.quantity::bigint FROM unnest(v_a_qty) WITH ORDINALITY AS a(quantity, ord) ORDER BY a.ord),
        'expiry', v_a_ref, '', NULL, now(), NULL,
        ARRAY(SELECT -a.bo::bigint FROM unnest(v_a_bo) WITH ORDINALITY AS a(bo, ord) ORDER BY a.ord));
END
$fn$;

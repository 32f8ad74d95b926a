-- orders_place_order: the whole order transaction of the `conditional` strategy in one round trip.
--
-- It writes exactly the rows orders.placement.orm._create_order writes through the ORM, with the
-- same lock order (the new order row, its lines, then stock levels by id ascending): resolve the
-- SKUs, insert the order and its lines, write the confirmation email to the outbox (outbox_write,
-- the outbox's one writer) and the order.placed webhook event (orders_webhook_emit), plan each
-- line over active warehouses by priority (a line may split), write the ledger rows
-- (inventory_ledger_write, the ledger's one writer) and allocations and complete the idempotency
-- key with the response body, then, last, reserve each level: a hot level (one with stock
-- buckets) through inventory_hot_take, any other with a
-- conditional UPDATE (PostgreSQL re-checks `on_hand - reserved >= n` on the newest row version
-- after any lock wait) and re-read the warehouses used in a new statement (a concurrent
-- deactivation makes the attempt start over), all in one transaction.
--
-- The idempotency key is claimed in the same transaction, first: a twin request still running
-- holds a transaction-level advisory lock on (user, key) and this one answers at once
-- {"claim": "in_flight"}; a key already stored answers {"claim": "replay", "status", "body"} or
-- {"claim": "reused"} (another body); a claim left in flight by a request that died before its
-- lease ran out is {"claim": "in_flight"} too, and taken over after it. Refusals carry the
-- claim's id, which is committed with them, so the caller stores the refusal on it.
--
-- A hot level's free units are mostly in its buckets. The first attempt plans it from whether any
-- bucket holds a unit (one index probe) and lets inventory_hot_take, which draws one bucket, decide;
-- if the take finds the level short, the next attempt plans from the exact sum of its buckets. So
-- an order of a hot SKU reads one bucket, not all of them, and every refusal is still decided on
-- exact sums read in one snapshot: a hot level is planned at less than the line only when no
-- bucket of it holds a unit. A plan with two hot allocations is never made optimistically (a take
-- that succeeded cannot be undone by a retry within this call, see SR503 below).
--
-- Safety stock, backorders and limits (inventory.reservation says the same for the ORM path): a
-- level sells greatest(on_hand - reserved - safety_stock, 0) from its shelf; a line still short, of
-- a product that takes backorders (policy `backorder`, or `preorder` until its date), is backordered
-- on its cold levels by priority within backorder_cap - backordered, added to the level's
-- `backordered` by the same conditional UPDATE that reserves. A line above the product's
-- max_per_order, or above what its customer_limit leaves this customer over its period (counted
-- under a transaction-scoped advisory lock on customer and product, from the customer's orders
-- that are not cancelled or expired), is refused as invalid, naming the line.
--
-- Refusals are returned, never half-written: {"refusal": "invalid", "fields": ...} or
-- {"refusal": "insufficient_stock", "items": [...]}; the inner block is rolled back first.
-- Errors: SQLSTATE SR410 (the key was completed by another request), SR503 (availability kept
-- changing: the caller retries), and PostgreSQL's own lock timeout / deadlock errors (retried).

CREATE OR REPLACE FUNCTION orders_iso_time(ts timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE AS $fn$
    -- The text Python's isoformat() gives for a UTC datetime (no fraction when it is zero).
    SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
        || CASE WHEN (date_part('microseconds', ts)::bigint % 1000000) = 0 THEN ''
                ELSE '.' || to_char(ts AT TIME ZONE 'UTC', 'US') END
        || 'Z'
$fn$;

CREATE OR REPLACE FUNCTION orders_place_order(
    p_user_id bigint,
    p_email text,
    p_number text,
    p_lines jsonb,            -- [{"sku": ..., "quantity": ...}] in request order
    p_address jsonb,          -- {"name", "line1", "line2", "city", "postal_code", "country"}
    p_reference text,
    p_currency text,
    p_expires_at timestamptz,
    p_request_id text,
    p_email_task text,
    p_notify_channel text,
    p_attempts integer,
    p_key text,               -- the Idempotency-Key, or NULL for none
    p_fingerprint text,
    p_lease_expires_at timestamptz
) RETURNS jsonb
LANGUAGE plpgsql AS $fn$
DECLARE
    v_now timestamptz := now();
    v_problems jsonb;
    v_bad boolean;
    v_pids bigint[];
    v_qtys integer[];
    v_skus text[];
    v_names text[];
    v_prices numeric[];
    v_buckets integer[];
    v_backorders boolean[];
    v_limits integer[];
    v_limited boolean;
    v_limit_days integer[];
    v_bought bigint;
    v_c_level bigint[];
    v_c_wh bigint[];
    v_c_code text[];
    v_c_room bigint[];
    v_owe integer;
    v_at integer;
    v_a_bo integer[];
    v_total numeric(14, 2);
    v_order_id bigint;
    v_line_ids bigint[];
    v_short jsonb;
    v_remaining integer;
    v_take integer;
    v_seen integer;
    v_cand record;
    v_a_level bigint[];
    v_a_pid bigint[];
    v_a_wh bigint[];
    v_a_code text[];
    v_a_qty integer[];
    v_a_hot boolean[];
    v_done boolean := false;
    v_took_hot boolean := false;
    v_optimistic boolean;
    v_body jsonb;
    v_alloc record;
    v_claim_id bigint;
    v_key orders_idempotencykey%ROWTYPE;
BEGIN
    IF p_key IS NOT NULL THEN
        IF NOT pg_try_advisory_xact_lock(hashtextextended('orders_idempotency_key:' || p_user_id || ':' || p_key, 0)) THEN
            RETURN jsonb_build_object('claim', 'in_flight');
        END IF;
        INSERT INTO orders_idempotencykey (user_id, key, fingerprint, state, lease_expires_at, created_at)
        VALUES (p_user_id, p_key, p_fingerprint, 'in_flight', p_lease_expires_at, v_now)
        ON CONFLICT (user_id, key) DO NOTHING
        RETURNING id INTO v_claim_id;
        IF v_claim_id IS NULL THEN
            SELECT * INTO v_key FROM orders_idempotencykey WHERE user_id = p_user_id AND key = p_key FOR UPDATE;
            IF NOT FOUND THEN  -- pruned between the two statements: the caller runs it all again
                RAISE EXCEPTION USING ERRCODE = 'SR503', MESSAGE = 'the idempotency key vanished while claiming it';
            ELSIF v_key.fingerprint <> p_fingerprint THEN
                RETURN jsonb_build_object('claim', 'reused');
            ELSIF v_key.state = 'complete' THEN
                RETURN jsonb_build_object('claim', 'replay', 'status', v_key.response_status, 'body', v_key.response_body);
            ELSIF v_key.lease_expires_at >= v_now THEN
                RETURN jsonb_build_object('claim', 'in_flight');
            END IF;
            UPDATE orders_idempotencykey SET lease_expires_at = p_lease_expires_at WHERE id = v_key.id;
            v_claim_id := v_key.id;
        END IF;
    END IF;

    SELECT jsonb_agg(
               CASE WHEN p.id IS NULL THEN jsonb_build_object('sku', jsonb_build_array(format('Unknown SKU %s.', quote_literal(l.sku))))
                    WHEN NOT p.active THEN jsonb_build_object('sku', jsonb_build_array(format('%s is no longer sold.', quote_literal(l.sku))))
                    WHEN l.quantity > p.max_per_order THEN jsonb_build_object('quantity', jsonb_build_array(
                        format('At most %s of %s in one order.', p.max_per_order, quote_literal(l.sku))))
                    ELSE '{}'::jsonb END
               ORDER BY l.ord),
           bool_or(p.id IS NULL OR NOT p.active OR coalesce(l.quantity > p.max_per_order, false)),
           bool_or(p.customer_limit IS NOT NULL),
           array_agg(p.id ORDER BY l.ord), array_agg(l.quantity ORDER BY l.ord), array_agg(l.sku ORDER BY l.ord),
           array_agg(p.name ORDER BY l.ord), array_agg(p.price ORDER BY l.ord),
           array_agg(p.stock_buckets ORDER BY l.ord),
           array_agg(p.backorder_policy = 'backorder'
                     OR (p.backorder_policy = 'preorder' AND p.preorder_until >= (v_now AT TIME ZONE 'UTC')::date)
                     ORDER BY l.ord),
           array_agg(p.customer_limit ORDER BY l.ord), array_agg(p.customer_limit_days ORDER BY l.ord),
           sum(p.price * l.quantity)
      INTO v_problems, v_bad, v_limited, v_pids, v_qtys, v_skus, v_names, v_prices, v_buckets, v_backorders, v_limits,
           v_limit_days, v_total
      FROM (SELECT e.item->>'sku' AS sku, (e.item->>'quantity')::integer AS quantity, e.ord
              FROM jsonb_array_elements(p_lines) WITH ORDINALITY AS e(item, ord)) AS l
      -- One unique-index probe per line. A plain join lets the planner, which guesses 100 rows
      -- for jsonb_array_elements, hash the whole product table on every order; the LIMIT (sku
      -- is unique anyway) keeps it from flattening the lateral subquery back into that join.
      LEFT JOIN LATERAL (SELECT * FROM inventory_product WHERE sku = l.sku LIMIT 1) AS p ON true;
    IF v_limited AND NOT v_bad THEN
        -- Limits per customer: products in id order (the lock order of these advisory locks), each
        -- counted after its lock, in a new snapshot that sees every order committed before it.
        FOR v_cand IN
            SELECT u.ord FROM unnest(v_pids, v_limits) WITH ORDINALITY AS u(pid, lim, ord)
             WHERE u.lim IS NOT NULL ORDER BY u.pid
        LOOP
            PERFORM pg_advisory_xact_lock(hashtextextended('orders_customer_limit:' || p_user_id || ':' || v_pids[v_cand.ord], 0));
            SELECT coalesce(sum(ol.quantity), 0) INTO v_bought
              FROM orders_order o JOIN orders_orderline ol ON ol.order_id = o.id
             WHERE o.user_id = p_user_id AND ol.product_id = v_pids[v_cand.ord]
               AND o.created_at > v_now - make_interval(days => v_limit_days[v_cand.ord])
               AND o.status NOT IN ('cancelled', 'expired');
            IF v_bought + v_qtys[v_cand.ord] > v_limits[v_cand.ord] THEN
                v_bad := true;
                v_problems := jsonb_set(v_problems, ARRAY[(v_cand.ord - 1)::text], jsonb_build_object('quantity', jsonb_build_array(
                    format('%s is limited to %s per customer every %s days; %s left for you.', quote_literal(v_skus[v_cand.ord]),
                           v_limits[v_cand.ord], v_limit_days[v_cand.ord], greatest(v_limits[v_cand.ord] - v_bought, 0)))));
            END IF;
        END LOOP;
    END IF;
    IF v_bad THEN
        RETURN jsonb_build_object('refusal', 'invalid', 'fields', jsonb_build_object('lines', v_problems),
                                  'claim_id', v_claim_id);
    END IF;

    BEGIN
        INSERT INTO orders_order (number, user_id, status, total, currency, paid_amount, reference,
                                  shipping_name, shipping_line1, shipping_line2, shipping_city,
                                  shipping_postal_code, shipping_country, version, expires_at, created_at, updated_at)
        VALUES (p_number, p_user_id, 'reserved', v_total, p_currency, NULL, p_reference,
                p_address->>'name', p_address->>'line1', coalesce(p_address->>'line2', ''), p_address->>'city',
                p_address->>'postal_code', p_address->>'country', 1, p_expires_at, v_now, v_now)
        RETURNING id INTO v_order_id;

        WITH inserted AS (
            INSERT INTO orders_orderline (order_id, product_id, quantity, unit_price)
            SELECT v_order_id, u.pid, u.qty, u.price
              FROM unnest(v_pids, v_qtys, v_prices) WITH ORDINALITY AS u(pid, qty, price, ord)
             ORDER BY u.ord
            RETURNING id, product_id
        )
        SELECT array_agg(i.id ORDER BY array_position(v_pids, i.product_id)) INTO v_line_ids FROM inserted i;

        -- p_notify_channel NULL: this process notified the relay a moment ago
        -- (project.outbox.services.outbox_notify_channel): notifying commits are serialised by
        -- PostgreSQL, so they are throttled.
        PERFORM outbox_write(p_email_task, NULL, ARRAY[jsonb_build_object('order_id', v_order_id, 'kind', 'placed')],
                             p_request_id, p_notify_channel);
        -- The order.placed webhook event (orders/events.sql): a lookup when no endpoint wants it.
        -- Written with the email, before any stock level is locked, and rolled back with the
        -- order on a refusal.
        PERFORM orders_webhook_emit('order.placed', ARRAY[v_order_id]);

        FOR v_attempt IN 1 .. p_attempts LOOP
            -- Plan from a plain read (a new snapshot each attempt).
            v_optimistic := v_attempt = 1 AND p_attempts > 1;
            v_short := '[]'::jsonb;
            v_a_level := '{}'; v_a_pid := '{}'; v_a_wh := '{}'; v_a_code := '{}'; v_a_qty := '{}'; v_a_hot := '{}';
            v_a_bo := '{}';
            FOR i IN 1 .. array_length(v_pids, 1) LOOP
                v_remaining := v_qtys[i];
                v_seen := 0;
                IF v_backorders[i] THEN
                    v_c_level := '{}'; v_c_wh := '{}'; v_c_code := '{}'; v_c_room := '{}';
                END IF;
                -- A hot level's buckets hold free units too (counted in its reserved): one
                -- statement reads the level and its buckets in one snapshot, so the sum is exact,
                -- or, planning optimistically, at least the line when any bucket holds a unit.
                -- Hot: the product is in hot mode, or the level still has buckets.
                FOR v_cand IN
                    SELECT s.id, s.warehouse_id, w.code, greatest(s.on_hand - s.reserved - s.safety_stock, 0) + CASE
                               WHEN NOT h.hot THEN 0
                               WHEN v_optimistic THEN CASE
                                   WHEN EXISTS (SELECT 1 FROM inventory_stockbucket k WHERE k.level_id = s.id AND k.units > 0)
                                   THEN v_qtys[i] ELSE 0 END
                               ELSE (SELECT coalesce(sum(k.units), 0) FROM inventory_stockbucket k WHERE k.level_id = s.id)
                           END AS available,
                           h.hot, s.backorder_cap - s.backordered AS room
                      FROM inventory_stocklevel s
                      JOIN inventory_warehouse w ON w.id = s.warehouse_id AND w.active
                     CROSS JOIN LATERAL (SELECT v_buckets[i] > 0
                                                OR EXISTS (SELECT 1 FROM inventory_stockbucket k WHERE k.level_id = s.id) AS hot) AS h
                     WHERE s.product_id = v_pids[i]
                     ORDER BY w.priority, s.id
                LOOP
                    v_seen := v_seen + greatest(v_cand.available, 0);
                    v_take := least(v_remaining, greatest(v_cand.available, 0));
                    IF v_take > 0 THEN
                        v_a_level := v_a_level || v_cand.id;
                        v_a_pid := v_a_pid || v_pids[i];
                        v_a_wh := v_a_wh || v_cand.warehouse_id;
                        v_a_code := v_a_code || v_cand.code;
                        v_a_qty := v_a_qty || v_take;
                        v_a_hot := v_a_hot || v_cand.hot;
                        v_a_bo := v_a_bo || 0;
                        v_remaining := v_remaining - v_take;
                    END IF;
                    IF v_backorders[i] AND NOT v_cand.hot AND v_cand.room > 0 THEN
                        v_c_level := v_c_level || v_cand.id; v_c_wh := v_c_wh || v_cand.warehouse_id;
                        v_c_code := v_c_code || v_cand.code; v_c_room := v_c_room || v_cand.room;
                    END IF;
                END LOOP;
                -- The rest beyond the shelf, on the same levels by priority, within each one's cap.
                IF v_backorders[i] AND v_remaining > 0 THEN
                    FOR c IN 1 .. coalesce(cardinality(v_c_level), 0) LOOP
                        v_seen := v_seen + v_c_room[c];
                        v_owe := least(v_remaining, v_c_room[c]);
                        CONTINUE WHEN v_owe <= 0;
                        v_at := array_position(v_a_level, v_c_level[c]);
                        IF v_at IS NULL THEN
                            v_a_level := v_a_level || v_c_level[c];
                            v_a_pid := v_a_pid || v_pids[i];
                            v_a_wh := v_a_wh || v_c_wh[c];
                            v_a_code := v_a_code || v_c_code[c];
                            v_a_qty := v_a_qty || v_owe;
                            v_a_hot := v_a_hot || false;
                            v_a_bo := v_a_bo || v_owe;
                        ELSE
                            v_a_qty[v_at] := v_a_qty[v_at] + v_owe;
                            v_a_bo[v_at] := v_owe;
                        END IF;
                        v_remaining := v_remaining - v_owe;
                    END LOOP;
                END IF;
                IF v_remaining > 0 THEN
                    v_short := v_short || jsonb_build_array(jsonb_build_object(
                        'sku', v_skus[i], 'requested', v_qtys[i], 'available', v_seen));
                END IF;
            END LOOP;
            IF jsonb_array_length(v_short) > 0 THEN
                RAISE EXCEPTION USING ERRCODE = 'SR409', MESSAGE = v_short::text;
            END IF;
            IF v_optimistic AND (SELECT count(*) FROM unnest(v_a_hot) AS h WHERE h) > 1 THEN
                CONTINUE;  -- plan it again from exact sums
            END IF;

            -- Write everything the plan decides first, then reserve level by level in id order
            -- (the system's lock order) as the last statements: a level's row lock is held only
            -- from its UPDATE to the commit, which is what bounds orders per second on one hot
            -- SKU. A lost race undoes this whole attempt (the block is a subtransaction) and
            -- plans again.
            BEGIN
                PERFORM inventory_ledger_write(array_agg(u.level_id ORDER BY u.level_id), array_agg(0 ORDER BY u.level_id),
                                               array_agg(u.qty - u.bo ORDER BY u.level_id), 'reservation',
                                               array_agg(p_number ORDER BY u.level_id), '', p_user_id, v_now,
                                               array_agg(CASE WHEN u.hot THEN -u.qty ELSE 0 END ORDER BY u.level_id),
                                               array_agg(u.bo ORDER BY u.level_id))
                   FROM unnest(v_a_level, v_a_qty, v_a_hot, v_a_bo) AS u(level_id, qty, hot, bo);

                INSERT INTO orders_allocation (line_id, stock_level_id, quantity, backordered)
                SELECT v_line_ids[array_position(v_pids, u.pid)], u.level_id, u.qty, u.bo
                  FROM unnest(v_a_level, v_a_pid, v_a_qty, v_a_bo) AS u(level_id, pid, qty, bo)
                 ORDER BY u.level_id;

                SELECT jsonb_build_object(
                           'number', p_number, 'status', 'reserved', 'customer', p_email, 'reference', p_reference,
                           'lines', (
                               SELECT jsonb_agg(jsonb_build_object(
                                          'sku', v_skus[n], 'name', v_names[n], 'quantity', v_qtys[n],
                                          'unit_price', v_prices[n]::numeric(12, 2)::text,
                                          'allocations', coalesce((
                                              SELECT jsonb_agg(jsonb_build_object('warehouse', a.code, 'quantity', a.qty, 'backordered', a.bo)
                                                               ORDER BY a.level_id)
                                                FROM unnest(v_a_level, v_a_pid, v_a_code, v_a_qty, v_a_bo) AS a(level_id, pid, code, qty, bo)
                                               WHERE a.pid = v_pids[n]), '[]'::jsonb))
                                      ORDER BY n)
                                 FROM generate_subscripts(v_pids, 1) AS n),
                           'total', v_total::text, 'currency', p_currency, 'paid_amount', NULL,
                           'shipping_address', jsonb_build_object(
                               'name', p_address->>'name', 'line1', p_address->>'line1', 'line2', coalesce(p_address->>'line2', ''),
                               'city', p_address->>'city', 'postal_code', p_address->>'postal_code', 'country', p_address->>'country'),
                           'version', 1, 'expires_at', orders_iso_time(p_expires_at),
                           'created_at', orders_iso_time(v_now), 'updated_at', orders_iso_time(v_now),
                           'paid_at', NULL, 'fulfilled_at', NULL, 'returned_at', NULL, 'cancelled_at', NULL, 'expired_at', NULL)
                  INTO v_body;

                IF v_claim_id IS NOT NULL THEN
                    UPDATE orders_idempotencykey
                       SET state = 'complete', response_status = 201, response_body = v_body, order_id = v_order_id
                     WHERE id = v_claim_id AND state = 'in_flight';
                    IF NOT FOUND THEN
                        RAISE EXCEPTION USING ERRCODE = 'SR410', MESSAGE = 'This Idempotency-Key was completed by another request.';
                    END IF;
                END IF;

                FOR v_alloc IN
                    SELECT u.level_id, u.qty, u.hot, u.pid, u.bo
                      FROM unnest(v_a_level, v_a_qty, v_a_hot, v_a_pid, v_a_bo) AS u(level_id, qty, hot, pid, bo)
                     ORDER BY u.level_id
                LOOP
                    IF v_alloc.hot THEN  -- from a bucket, without queueing on the level's row
                        IF NOT inventory_hot_take(v_alloc.level_id, v_alloc.qty, p_number, p_user_id, v_now,
                                                  v_buckets[array_position(v_pids, v_alloc.pid)]) THEN
                            RAISE EXCEPTION USING ERRCODE = 'SR100';
                        END IF;
                        v_took_hot := true;
                    ELSE
                        UPDATE inventory_stocklevel
                           SET reserved = reserved + (v_alloc.qty - v_alloc.bo), backordered = backordered + v_alloc.bo,
                               updated_at = v_now
                         WHERE id = v_alloc.level_id
                           AND greatest(on_hand - reserved - safety_stock, 0) >= v_alloc.qty - v_alloc.bo
                           AND backordered + v_alloc.bo <= backorder_cap;
                        IF NOT FOUND THEN
                            RAISE EXCEPTION USING ERRCODE = 'SR100';
                        END IF;
                    END IF;
                END LOOP;
                -- A new statement, so a new snapshot: sees a deactivation that committed meanwhile.
                IF EXISTS (SELECT 1 FROM inventory_warehouse WHERE id = ANY(v_a_wh) AND NOT active) THEN
                    RAISE EXCEPTION USING ERRCODE = 'SR100';
                END IF;
                v_done := true;
            EXCEPTION WHEN SQLSTATE 'SR100' THEN
                v_done := false;
                -- A bucket taken in a rolled-back subtransaction still makes others wait for this
                -- whole transaction in PostgreSQL: going on here could deadlock with them, so the
                -- caller runs the whole order again instead (SR503).
                IF v_took_hot THEN
                    RAISE EXCEPTION USING ERRCODE = 'SR503', MESSAGE = 'a hot level was taken from in a lost race';
                END IF;
            END;
            EXIT WHEN v_done;
            IF NOT v_optimistic THEN  -- an optimistic plan that fell short is planned again at once
                PERFORM pg_sleep(random() * 0.001 * v_attempt);
            END IF;
        END LOOP;
        IF NOT v_done THEN
            RAISE EXCEPTION USING ERRCODE = 'SR503', MESSAGE = 'available units kept changing while reserving';
        END IF;
    EXCEPTION WHEN SQLSTATE 'SR409' THEN
        RETURN jsonb_build_object('refusal', 'insufficient_stock', 'items', SQLERRM::jsonb, 'claim_id', v_claim_id);
    END;

    RETURN jsonb_build_object('order_id', v_order_id, 'body', v_body);
END
$fn$;

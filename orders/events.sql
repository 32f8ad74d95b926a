-- orders_webhook_payload and orders_webhook_emit: the webhook events of orders.
--
-- Every change of an order's status emits one event (order.placed, order.paid, ...) in the
-- transaction that made it: orders_place_order and orders_expire_chunk call orders_webhook_emit
-- here, the Python services through orders.events. When no active endpoint wants the type, the
-- cost is one lookup in the (small) endpoint table and no payload is built.
--
-- The payload is the order as the change left it: a part of the API's order body
-- (orders.serializers.order_payload, same names and formats) without allocations and addresses;
-- a receiver that needs everything reads GET /api/v1/orders/{number}. The event's key is its type,
-- order id and the order's new version, and its ordering key the order number, so an endpoint
-- receives the events of one order in the order they happened.

CREATE OR REPLACE FUNCTION orders_webhook_payload(p_order_id bigint) RETURNS jsonb
LANGUAGE sql STABLE AS $fn$
    SELECT jsonb_build_object('order', jsonb_build_object(
               'number', o.number,
               'status', o.status,
               'customer', u.email,
               'reference', o.reference,
               'lines', coalesce((SELECT jsonb_agg(jsonb_build_object('sku', p.sku, 'quantity', l.quantity,
                                                                      'unit_price', l.unit_price::numeric(12, 2)::text)
                                                   ORDER BY l.id)
                                    FROM orders_orderline l
                                    JOIN inventory_product p ON p.id = l.product_id
                                   WHERE l.order_id = o.id), '[]'::jsonb),
               'total', o.total::text,
               'currency', o.currency,
               'paid_amount', o.paid_amount::text,
               'version', o.version,
               'created_at', orders_iso_time(o.created_at),
               'updated_at', orders_iso_time(o.updated_at)))
      FROM orders_order o
      JOIN users_user u ON u.id = o.user_id
     WHERE o.id = p_order_id
$fn$;

CREATE OR REPLACE FUNCTION orders_webhook_emit(p_type text, p_order_ids bigint[]) RETURNS integer
LANGUAGE plpgsql AS $fn$
DECLARE
    v_keys text[];
    v_payloads jsonb[];
    v_ordering text[];
BEGIN
    IF NOT webhook_wanted(p_type) THEN
        RETURN 0;
    END IF;
    SELECT array_agg(p_type || ':' || o.id || ':' || o.version ORDER BY u.ord),
           array_agg(orders_webhook_payload(o.id) ORDER BY u.ord),
           array_agg('order:' || o.number ORDER BY u.ord)
      INTO v_keys, v_payloads, v_ordering
      FROM unnest(p_order_ids) WITH ORDINALITY AS u(id, ord)
      JOIN orders_order o ON o.id = u.id;
    IF v_keys IS NULL THEN
        RETURN 0;
    END IF;
    RETURN webhook_write(p_type, v_keys, v_payloads, v_ordering);
END
$fn$;

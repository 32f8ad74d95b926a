-- One order of one unit of a SKU drawn uniformly from the catalogue, placed by orders_place_order
-- exactly as the app calls it (orders/placement/sql.py): no Idempotency-Key, and the outbox NOTIFY
-- channel NULL, as the app passes it while its notifications are throttled. Set by the driver:
-- :uid (the bench user's id), :products (catalogue size).
\set n random(1, :products)
SELECT orders_place_order(
    :uid, 'bench@example.com', 'P' || substr(md5(random()::text || clock_timestamp()::text), 1, 19),
    jsonb_build_array(jsonb_build_object('sku', 'SKU-' || lpad(:n::text, 5, '0'), 'quantity', 1)),
    '{"name": "Bench", "line1": "1 Load St", "line2": "", "city": "Lyon", "postal_code": "69001", "country": "FR"}',
    '', 'EUR', now() + interval '15 minutes', '', 'orders.send_order_email', NULL, 20, NULL, '', now());

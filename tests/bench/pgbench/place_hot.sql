-- One order of one unit of the one hot SKU (HOT: every client queues on the same stock level),
-- placed by orders_place_order exactly as place_uniform.sql does. Set by the driver: :uid.
SELECT orders_place_order(
    :uid, 'bench@example.com', 'P' || substr(md5(random()::text || clock_timestamp()::text), 1, 19),
    '[{"sku": "HOT", "quantity": 1}]',
    '{"name": "Bench", "line1": "1 Load St", "line2": "", "city": "Lyon", "postal_code": "69001", "country": "FR"}',
    '', 'EUR', now() + interval '15 minutes', '', 'orders.send_order_email', NULL, 20, NULL, '', now());

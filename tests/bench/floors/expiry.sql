-- The floor of the expiry sweep (DESIGN.md §12): every expired reservation released in one
-- set-based transaction straight through psql: no Python, no chunks, no SKIP LOCKED.
--
--   psql -f tests/bench/floors/expiry.sql
--
-- Same effects as orders.jobs.expire_reservations: orders moved to `expired`, one `expiry`
-- ledger row per allocation, reserved units given back, one email message per order (outbox).
\set ON_ERROR_STOP on
\timing on

BEGIN;
WITH expired AS (
    UPDATE orders_order
       SET status = 'expired', expired_at = now(), updated_at = now(), version = version + 1
     WHERE status = 'reserved' AND expires_at <= now()
    RETURNING id, number
), released AS (
    SELECT al.stock_level_id AS level_id, al.quantity, e.number
      FROM expired e
      JOIN orders_orderline l ON l.order_id = e.id
      JOIN orders_allocation al ON al.line_id = l.id
), ledger AS (
    INSERT INTO inventory_stockmovement (level_id, delta_on_hand, delta_reserved, reason, reference, note, created_at)
    SELECT level_id, 0, -quantity, 'expiry', number, '', now() FROM released
), outbox AS (
    INSERT INTO project_outboxmessage (task, args, kwargs, request_id, state, attempts, last_error)
    SELECT 'orders.send_order_email', '[]'::jsonb, jsonb_build_object('order_id', id, 'kind', 'expired'), '', 'pending', 0, ''
      FROM expired
)
UPDATE inventory_stocklevel s
   SET reserved = s.reserved - r.units, updated_at = now()
  FROM (SELECT level_id, sum(quantity) AS units FROM released GROUP BY level_id) r
 WHERE s.id = r.level_id;
COMMIT;

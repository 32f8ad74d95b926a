-- webhook_wanted and webhook_write: the one writer of webhook events and their deliveries.
--
-- An event is written in the transaction of the change that caused it (project.webhooks.services
-- calls webhook_write from Python; SQL functions such as orders_place_order call it directly), with
-- one delivery per active endpoint that wants its type. With no such endpoint nothing is written:
-- callers on hot paths ask webhook_wanted first and build no payload at all.
--
-- Keys make emitting idempotent: an event whose key exists already is skipped with its
-- deliveries, so a message delivered twice emits once. Events are inserted in the order given, so
-- their ids follow it: deliveries of one ordering key reach an endpoint in id order
-- (project.webhooks.delivery). Returns the number of deliveries written.

CREATE OR REPLACE FUNCTION webhook_wanted(p_type text) RETURNS boolean
LANGUAGE sql STABLE AS $fn$
    SELECT EXISTS (SELECT 1 FROM project_webhookendpoint WHERE active AND p_type = ANY (events))
$fn$;

CREATE OR REPLACE FUNCTION webhook_write(
    p_type text,
    p_keys text[],
    p_payloads jsonb[],
    p_ordering_keys text[]
) RETURNS integer
LANGUAGE plpgsql AS $fn$
DECLARE
    v_endpoints bigint[];
    v_count integer;
BEGIN
    SELECT array_agg(id ORDER BY id) INTO v_endpoints
      FROM project_webhookendpoint WHERE active AND p_type = ANY (events);
    IF v_endpoints IS NULL THEN
        RETURN 0;
    END IF;
    WITH new_events AS (
        INSERT INTO project_webhookevent (key, webhook_id, type, payload, ordering_key)
        SELECT u.key, 'msg_' || replace(gen_random_uuid()::text, '-', ''), p_type, u.payload, coalesce(u.okey, '')
          FROM unnest(p_keys, p_payloads, p_ordering_keys) WITH ORDINALITY AS u(key, payload, okey, ord)
         ORDER BY u.ord
        ON CONFLICT (key) DO NOTHING
        RETURNING id, ordering_key
    ), inserted AS (
        INSERT INTO project_webhookdelivery (endpoint_id, event_id, ordering_key, state, attempts, last_error)
        SELECT e.id, n.id, n.ordering_key, 'pending', 0, ''
          FROM new_events n CROSS JOIN unnest(v_endpoints) AS e(id)
         ORDER BY n.id, e.id
        RETURNING 1
    )
    SELECT count(*) INTO v_count FROM inserted;
    RETURN v_count;
END
$fn$;

-- outbox_write: the one writer of outbox rows (project_outboxmessage), for SQL and Python alike.
--
-- Set-based: one call writes every message of one task, in one INSERT. p_kwargs holds one jsonb
-- object per message, in order; p_args one jsonb array per message (the same length), or NULL
-- for `[]` everywhere. Each row is `pending`, with no attempt yet and the request id it was
-- caused by; the database's clock sets its created_at and next_attempt_at (column defaults).
-- p_notify_channel: NOTIFY that channel (delivered at commit, dropped on rollback) so the relay
-- wakes for the new rows; NULL skips it (the caller throttles notifications or sends its own:
-- project.outbox.services.outbox_notify_channel). Returns the new rows' ids in the order of p_kwargs.
--
-- Called by project.outbox.services (outbox_enqueue, outbox_enqueue_many: the INSERT and the NOTIFY stay
-- one statement, one round trip), orders_place_order and orders_expire_chunk. It locks nothing
-- beyond its new rows and must run in the transaction of the change that causes the messages.

CREATE OR REPLACE FUNCTION outbox_write(
    p_task text,
    p_args jsonb[],
    p_kwargs jsonb[],
    p_request_id text,
    p_notify_channel text
) RETURNS bigint[]
LANGUAGE plpgsql AS $fn$
DECLARE
    v_ids bigint[];
BEGIN
    IF p_args IS NOT NULL AND cardinality(p_args) <> coalesce(cardinality(p_kwargs), 0) THEN
        RAISE EXCEPTION 'outbox_write: % args for % messages', cardinality(p_args), coalesce(cardinality(p_kwargs), 0);
    END IF;
    WITH written AS (
        INSERT INTO project_outboxmessage (task, args, kwargs, request_id, state, attempts, last_error)
        SELECT p_task, coalesce(p_args[m.ord], '[]'::jsonb), m.kwargs, p_request_id, 'pending', 0, ''
          FROM unnest(p_kwargs) WITH ORDINALITY AS m(kwargs, ord)
         ORDER BY m.ord
        RETURNING id
    )
    SELECT coalesce(array_agg(w.id ORDER BY w.id), '{}') INTO v_ids FROM written w;
    IF p_notify_channel IS NOT NULL AND cardinality(v_ids) > 0 THEN
        PERFORM pg_notify(p_notify_channel, '');
    END IF;
    RETURN v_ids;
END
$fn$;

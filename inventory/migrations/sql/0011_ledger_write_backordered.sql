-- inventory_ledger_write with p_backordered: the ledger explains on hand, reserved, bucketed and
-- backordered per level. The same one writer as before (0008_stock_buckets.sql), one argument more.
DROP FUNCTION IF EXISTS inventory_ledger_write(bigint[], bigint[], bigint[], text, text[], text, bigint, timestamptz, bigint[]);

-- inventory_ledger_write: the one writer of ledger rows (inventory_stockmovement), for SQL and
-- Python alike. Set-based: one row per element of p_levels, in array order; p_on_hand,
-- p_reserved, p_references (and p_bucketed, p_backordered, when given) have the same length. The
-- reason, note, actor (NULL: the system) and time are shared by the rows of a call. Arrays of
-- different lengths raise: a ledger row is never half-filled. Rows are only ever inserted
-- (migration 0002's trigger).
CREATE FUNCTION inventory_ledger_write(
    p_levels bigint[],
    p_on_hand bigint[],
    p_reserved bigint[],
    p_reason text,
    p_references text[],
    p_note text,
    p_actor bigint,
    p_at timestamptz,
    p_bucketed bigint[] DEFAULT NULL,
    p_backordered bigint[] DEFAULT NULL
) RETURNS integer
LANGUAGE plpgsql AS $fn$
DECLARE
    v_rows integer;
BEGIN
    v_rows := coalesce(cardinality(p_levels), 0);
    IF coalesce(cardinality(p_on_hand), 0) <> v_rows OR coalesce(cardinality(p_reserved), 0) <> v_rows
       OR coalesce(cardinality(p_references), 0) <> v_rows
       OR (p_bucketed IS NOT NULL AND cardinality(p_bucketed) <> v_rows)
       OR (p_backordered IS NOT NULL AND cardinality(p_backordered) <> v_rows) THEN
        RAISE EXCEPTION 'inventory_ledger_write: % levels, % on_hand deltas, % reserved deltas, % references, % bucketed, % backordered',
            v_rows, coalesce(cardinality(p_on_hand), 0), coalesce(cardinality(p_reserved), 0),
            coalesce(cardinality(p_references), 0), cardinality(p_bucketed), cardinality(p_backordered);
    END IF;
    INSERT INTO inventory_stockmovement (level_id, delta_on_hand, delta_reserved, delta_bucketed, delta_backordered,
                                         reason, reference, note, actor_id, created_at)
    SELECT m.level_id, m.on_hand, m.reserved, coalesce(p_bucketed[m.ord], 0), coalesce(p_backordered[m.ord], 0),
           p_reason, m.reference, p_note, p_actor, p_at
      FROM unnest(p_levels, p_on_hand, p_reserved, p_references) WITH ORDINALITY
           AS m(level_id, on_hand, reserved, reference, ord)
     ORDER BY m.ord;
    RETURN v_rows;
END
$fn$;

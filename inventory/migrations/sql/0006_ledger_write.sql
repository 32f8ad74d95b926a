-- inventory_ledger_write: the one writer of ledger rows (inventory_stockmovement), for SQL and
-- Python alike.
--
-- Set-based: one call writes one row per element of p_levels, in array order, in one INSERT:
-- the level, its deltas (p_on_hand, p_reserved: the same length as p_levels) and its reference
-- (p_references, the same length: an order number, an import, a transfer). The reason, note,
-- actor (NULL: the system) and time are the same for every row of a call. Returns the rows
-- written. Arrays of different lengths raise: a ledger row is never half-filled.
--
-- Called by inventory.services._record (every ORM stock change), the import's chunk statement
-- (inventory.imports.apply.APPLY_CHUNK, once per chunk), orders_place_order and orders_expire_chunk,
-- in the transaction of the stock change each row records. Rows are only ever inserted: a
-- trigger (migration 0002) refuses UPDATE and DELETE.

CREATE OR REPLACE FUNCTION inventory_ledger_write(
    p_levels bigint[],
    p_on_hand bigint[],
    p_reserved bigint[],
    p_reason text,
    p_references text[],
    p_note text,
    p_actor bigint,
    p_at timestamptz
) RETURNS integer
LANGUAGE plpgsql AS $fn$
DECLARE
    v_rows integer;
BEGIN
    v_rows := coalesce(cardinality(p_levels), 0);
    IF coalesce(cardinality(p_on_hand), 0) <> v_rows OR coalesce(cardinality(p_reserved), 0) <> v_rows
       OR coalesce(cardinality(p_references), 0) <> v_rows THEN
        RAISE EXCEPTION 'inventory_ledger_write: % levels, % on_hand deltas, % reserved deltas, % references',
            v_rows, coalesce(cardinality(p_on_hand), 0), coalesce(cardinality(p_reserved), 0),
            coalesce(cardinality(p_references), 0);
    END IF;
    INSERT INTO inventory_stockmovement (level_id, delta_on_hand, delta_reserved, reason, reference, note,
                                         actor_id, created_at)
    SELECT m.level_id, m.on_hand, m.reserved, p_reason, m.reference, p_note, p_actor, p_at
      FROM unnest(p_levels, p_on_hand, p_reserved, p_references) WITH ORDINALITY
           AS m(level_id, on_hand, reserved, reference, ord)
     ORDER BY m.ord;
    RETURN v_rows;
END
$fn$;

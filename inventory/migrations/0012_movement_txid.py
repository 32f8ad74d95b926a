from django.db import migrations

# Each ALTER takes the table's ACCESS EXCLUSIVE lock for an instant (no rewrite: the column is
# nullable without a default, and SET DEFAULT applies to new rows only). A short lock_timeout per
# attempt, retried with jittered pauses, so the ledger's writers never queue for long behind a
# migration that waits for a slow transaction. One DO block: one transaction, its own settings.
ALTER_WITH_RETRIES = """
DO $migration$
BEGIN
    PERFORM set_config('lock_timeout', '500ms', true);
    FOR attempt IN 1..40 LOOP
        BEGIN
            {statements}
            RETURN;
        EXCEPTION WHEN lock_not_available THEN
            PERFORM pg_sleep(random() * least(0.05 * 2 ^ attempt, 2));
        END;
    END LOOP;
    RAISE EXCEPTION 'inventory_stockmovement stayed locked: gave up after 40 attempts'
        USING ERRCODE = 'lock_not_available';
END
$migration$;
"""

ADD_TXID = ALTER_WITH_RETRIES.format(
    statements="""
            ALTER TABLE inventory_stockmovement ADD COLUMN IF NOT EXISTS txid xid8;
            -- pg_current_xact_id() is the top-level transaction's id (a savepoint's rows too):
            -- inventory_ledger_write and every plain INSERT get it without naming the column.
            ALTER TABLE inventory_stockmovement ALTER COLUMN txid SET DEFAULT pg_current_xact_id();"""
)

DROP_TXID = ALTER_WITH_RETRIES.format(
    statements="ALTER TABLE inventory_stockmovement DROP COLUMN IF EXISTS txid;"
)

# A CREATE INDEX CONCURRENTLY that failed half-way (a crash, a cancel) leaves an INVALID index
# under the name, which IF NOT EXISTS would keep: drop it first (a plain DROP of an index no
# query uses is instant).
DROP_INVALID_INDEX = ALTER_WITH_RETRIES.format(
    statements="""
            IF EXISTS (SELECT FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                        WHERE c.relname = 'movement_txid_id' AND NOT i.indisvalid) THEN
                DROP INDEX movement_txid_id;
            END IF;"""
)

# The feed's order (inventory.feeds): rows without a txid (written before this migration) sort
# as txid 0, before every later row, by id among themselves. Built CONCURRENTLY, so writers go on
# while it builds; the request's statement_timeout (set per connection) would cut a build on a
# large ledger, so this session lifts it for the build and then takes the default back.
CREATE_INDEX = [
    "SET statement_timeout = 0",
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS movement_txid_id"
    " ON inventory_stockmovement ((COALESCE(txid, '0'::xid8)), id)",
    "RESET statement_timeout",
]


class Migration(migrations.Migration):
    """The ledger's commit order for the movements feed (inventory.feeds): `txid`, the id of the
    transaction that wrote each row, and an index on (txid, id).

    Expand only: the column is nullable and is not backfilled (the ledger is append-only, and a
    trigger refuses UPDATE); old rows keep NULL and sort first. It stays out of Django's model
    state (RunSQL without state_operations): no Django INSERT names it, so every row gets the
    database default, and `makemigrations --check` has nothing to add.

    Not atomic: CREATE INDEX CONCURRENTLY cannot run in a transaction block. Every step can be
    run again after a failure (IF [NOT] EXISTS, an invalid index dropped first)."""

    atomic = False

    dependencies = [("inventory", "0011_backorders_safety_limits_reorder")]

    operations = [
        migrations.RunSQL([ADD_TXID], [DROP_TXID]),
        migrations.RunSQL(
            [DROP_INVALID_INDEX, *CREATE_INDEX], ["DROP INDEX CONCURRENTLY IF EXISTS movement_txid_id"]
        ),
    ]

"""WAL positions as numbers (bytes since 0/0), so Python compares them directly: what the read
replica has replayed (project.db.replica) against what a client or a change wrote
(project.db.own_writes, inventory.cache)."""

from django.db import DEFAULT_DB_ALIAS, connections

PRIMARY_LSN_SQL = "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint"
# A server not in recovery (a promoted replica) has replayed everything it has.
REPLAY_LSN_SQL = "SELECT (COALESCE(pg_last_wal_replay_lsn(), pg_current_wal_lsn()) - '0/0'::pg_lsn)::bigint"


def primary_lsn() -> int:
    """The primary's WAL position now: every commit that finished before this call is at or below
    it. One statement on the request's own connection (it raises as any statement would)."""
    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute(PRIMARY_LSN_SQL)
        return int(cursor.fetchone()[0])

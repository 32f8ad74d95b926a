"""Migrations that never queue live traffic behind them (DESIGN.md §14, docs/operating.md).

An ALTER TABLE waiting for its ACCESS EXCLUSIVE lock queues every later query on that table behind
it, reads included, for as long as it waits. So `manage.py migrate` (project.management.commands.
migrate) waits at most MIGRATION_LOCK_TIMEOUT_MS for a lock, gives the table back to the traffic,
and tries the migration again after a pause. What may be tried again is decided here: an atomic
migration was rolled back whole; a non-atomic one ran some of its operations for good, so only one
whose every operation says it is `idempotent` (the two below) is run again.

Indexes on tables that live traffic writes are built with `AddIndexConcurrentlyRetrying` in a
non-atomic migration: CREATE INDEX CONCURRENTLY lets writers go on, and a build that failed half-way
(a lock timeout while it waits for older transactions, a cancel, a crash) leaves an INVALID index
under its name, which this operation drops before it builds again.
"""

import contextlib
import logging
import random
from collections.abc import Iterator

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations
from django.db.backends.base.base import BaseDatabaseWrapper

logger = logging.getLogger("stockroom.migrations")

# The first pause after a lock timeout; each later one doubles, up to the setting's cap, with jitter
# so two deploys (or a deploy and autovacuum's wraparound run) do not retry in step.
RETRY_BASE_SECONDS = 0.25


class AddIndexConcurrentlyRetrying(AddIndexConcurrently):
    """Django's AddIndexConcurrently that can run again after a failure: an INVALID index left by a
    failed build is dropped (DROP INDEX CONCURRENTLY: no lock that queues writers), a valid one
    already there is kept. The migration must be `atomic = False` (PostgreSQL refuses CONCURRENTLY
    in a transaction). sqlmigrate and the linter see only the CREATE INDEX CONCURRENTLY."""

    idempotent = True

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        self._ensure_not_in_transaction(schema_editor)
        model = to_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(schema_editor.connection.alias, model):
            return
        if not schema_editor.collect_sql:
            valid = index_validity(schema_editor.connection, self.index.name)
            if valid:
                return
            if valid is False:
                logger.warning("dropping the INVALID index %s left by a failed build", self.index.name)
                schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {schema_editor.quote_name(self.index.name)}")
        schema_editor.add_index(model, self.index, concurrently=True)


class IdempotentRunSQL(migrations.RunSQL):
    """RunSQL whose author states that every statement can run again after any of them failed
    (IF [NOT] EXISTS, CREATE OR REPLACE, an UPDATE that finds nothing left to do), so a non-atomic
    migration made of such operations is retried after a lock timeout like an atomic one."""

    idempotent = True


def index_validity(connection: BaseDatabaseWrapper, name: str) -> bool | None:
    """True for a valid index of that name on the search path, False for an INVALID one, None for none."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass(%s)",
            [connection.ops.quote_name(name)],
        )
        row = cursor.fetchone()
    return None if row is None else row[0]


def can_retry(migration: migrations.Migration, connection: BaseDatabaseWrapper) -> bool:
    """Whether a migration that failed on a lock can simply run again: rolled back whole (atomic, and
    PostgreSQL rolls DDL back), or made only of operations that say they are idempotent."""
    if migration.atomic and connection.features.can_rollback_ddl:
        return True
    return all(getattr(operation, "idempotent", False) for operation in migration.operations)


def retry_pause(attempt: int, *, max_seconds: float) -> float:
    """Seconds to wait before the attempt after `attempt` (1-based): jittered, doubling, capped."""
    ceiling = min(RETRY_BASE_SECONDS * 2 ** (attempt - 1), max_seconds)
    return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not a secret


@contextlib.contextmanager
def migration_session(connection: BaseDatabaseWrapper, *, lock_timeout_ms: int) -> Iterator[None]:
    """The migrating session's own limits: a short lock_timeout, no statement_timeout (a data step or
    an index build may run for minutes; the requests' limit would cut it). Set for the session, not
    per transaction: a non-atomic migration has no transaction to SET LOCAL in. Reset afterwards, so
    a pooled connection (a test run migrating in-process) goes back with the ordinary limits."""
    connection.ensure_connection()
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('lock_timeout', %s, false)", [f"{int(lock_timeout_ms)}ms"])
        cursor.execute("SELECT set_config('statement_timeout', '0', false)")
    try:
        yield
    finally:
        if connection.connection is not None and not connection.in_atomic_block and connection.is_usable():
            with connection.cursor() as cursor:
                cursor.execute("RESET lock_timeout")
                cursor.execute("RESET statement_timeout")

"""manage.py migrate against live locks: it waits at most MIGRATION_LOCK_TIMEOUT_MS, lets the queries
queued behind it through, retries, and finishes once the lock is gone; a CONCURRENTLY build that
failed on a lock leaves an INVALID index that the retry drops and builds again.

The migrations are a throwaway app's (tests/scale/schema/throwaway.py), applied by the real command in
a subprocess to the pytest test database; other sessions (psycopg, in this process) hold the locks
and read the table meanwhile.
"""

import time

import psycopg
import pytest
from django.db import connection
from django.db.migrations import Migration, RunSQL
from django.db.models import Index
from psycopg import sql

from project.db.migrations import AddIndexConcurrentlyRetrying, IdempotentRunSQL, can_retry
from tests.scale.schema.throwaway import CREATE_ITEM, manage, manage_popen, migration, write_app
from tests.support import stop_process, wait_for

APP = "lockprobe"
TABLE = f"{APP}_item"
INDEX_NAME = f"{APP}_item_name"
LOCK_TIMEOUT_MS = 300
COUNT_ITEMS = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(TABLE))
MIGRATIONS = {
    "0001_initial": CREATE_ITEM,
    # ADD COLUMN (nullable, no default): no rewrite, but the table's ACCESS EXCLUSIVE lock for an instant.
    "0002_item_sku": migration(
        APP, "0001_initial", ["migrations.AddField(model_name='item', name='sku', field=models.TextField(null=True))"]
    ),
    "0003_item_name_index": migration(
        APP,
        "0002_item_sku",
        [f"AddIndexConcurrentlyRetrying(model_name='item', index=models.Index(fields=['name'], name={INDEX_NAME!r}))"],
        imports="from project.db.migrations import AddIndexConcurrentlyRetrying",
        atomic=False,
    ),
}


@pytest.fixture
def probe(tmp_path, django_db_setup, django_db_blocker):
    """The throwaway app's settings, the test database's URL; its table and history dropped afterwards."""
    settings_module = write_app(tmp_path, APP, MIGRATIONS)
    with django_db_blocker.unblock():
        params = connection.settings_dict
        url = f"postgres://{params['USER']}@{params['HOST'] or '127.0.0.1'}:{params['PORT'] or 5432}/{params['NAME']}"
    env = {
        "DATABASE_URL": url,
        "MIGRATION_LOCK_TIMEOUT_MS": str(LOCK_TIMEOUT_MS),
        "MIGRATION_LOCK_RETRIES": "100",
        "MIGRATION_RETRY_MAX_PAUSE_SECONDS": "0.4",
    }
    yield settings_module, url, env
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(TABLE)))
        conn.execute("DELETE FROM django_migrations WHERE app = %s", [APP])


def migrate_to(tmp_path, probe, target: str) -> None:
    settings_module, _url, env = probe
    result = manage(tmp_path, settings_module, "migrate", APP, target, "--noinput", **env)
    assert result.returncode == 0, result.stdout + result.stderr


def retries(log) -> int:
    return log.read_text().count("retrying in")


def applied(url: str, name: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM django_migrations WHERE app = %s AND name = %s", [APP, name]).fetchone()


@pytest.mark.slow
def test_a_migration_behind_a_held_lock_lets_readers_through_retries_and_applies_once_released(tmp_path, probe):
    settings_module, url, env = probe
    migrate_to(tmp_path, probe, "0001_initial")
    log = tmp_path / "migrate.log"
    waits = []
    with psycopg.connect(url) as holder, psycopg.connect(url, autocommit=True) as watcher:
        holder.execute(COUNT_ITEMS)  # ACCESS SHARE, held until the transaction ends
        proc = manage_popen(tmp_path, settings_module, log, "migrate", APP, "0002_item_sku", "--noinput", **env)
        try:

            def migrate_waiting():
                assert proc.poll() is None, log.read_text()
                return watcher.execute(
                    "SELECT 1 FROM pg_locks WHERE relation = to_regclass(%s) AND mode = 'AccessExclusiveLock'"
                    " AND NOT granted",
                    [TABLE],
                ).fetchone()

            # Readers that arrive while the migration waits for its lock queue behind it, and get
            # through once it gives up: after the migration's lock_timeout, not the holder's whole
            # transaction. Some arrive between two attempts and are not held at all.
            while len([wait for wait in waits if wait > 0.05]) < 3:
                assert len(waits) < 40, f"readers never queued behind the migration: {waits}"
                wait_for(migrate_waiting, timeout=20, interval=0.01, what="the migration to wait for its lock")
                with psycopg.connect(url, autocommit=True) as reader:
                    started = time.monotonic()
                    reader.execute(COUNT_ITEMS)
                    waits.append(time.monotonic() - started)
            wait_for(lambda: retries(log) >= 3, timeout=20, what="three retries of the migration")
            assert proc.poll() is None, "the migration ended while the lock was still held"
            assert not applied(url, "0002_item_sku")
        finally:
            holder.rollback()
        try:
            assert proc.wait(timeout=30) == 0, log.read_text()
        finally:
            stop_process(proc)

    assert max(waits) < LOCK_TIMEOUT_MS / 1000 + 1.0, waits
    assert applied(url, "0002_item_sku")
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute(
            "SELECT 1 FROM information_schema.columns WHERE table_name = %s AND column_name = 'sku'", [TABLE]
        ).fetchone()
        # The migrating session's limits were its own: nothing like them on a new connection.
        assert conn.execute("SHOW lock_timeout").fetchone()[0] != f"{LOCK_TIMEOUT_MS}ms"
    assert "waited 300 ms for a lock and gave up (LockNotAvailable)" in log.read_text()


@pytest.mark.slow
def test_a_concurrent_index_build_that_failed_on_a_lock_is_dropped_invalid_and_built_again(tmp_path, probe):
    settings_module, url, env = probe
    migrate_to(tmp_path, probe, "0002_item_sku")
    log = tmp_path / "migrate.log"
    with psycopg.connect(url) as writer, psycopg.connect(url, autocommit=True) as watcher:
        # A writer's open transaction: CREATE INDEX CONCURRENTLY waits for it after creating the
        # (still INVALID) index, and gives up on the lock_timeout.
        writer.execute(sql.SQL("INSERT INTO {} (name, note) VALUES ('held', '')").format(sql.Identifier(TABLE)))
        proc = manage_popen(tmp_path, settings_module, log, "migrate", APP, "--noinput", **env)
        try:

            def invalid_index_seen():
                assert proc.poll() is None, log.read_text()
                row = watcher.execute(
                    "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", [INDEX_NAME]
                ).fetchone()
                return row is not None and not row[0]

            wait_for(invalid_index_seen, timeout=20, interval=0.02, what="an INVALID index left by a failed build")
            wait_for(
                lambda: log.read_text().count(f"dropping the INVALID index {INDEX_NAME}") >= 2,
                timeout=20,
                what="retries that drop the INVALID index",
            )
            assert not applied(url, "0003_item_name_index")
            writer.commit()
            assert proc.wait(timeout=30) == 0, log.read_text()
        finally:
            stop_process(proc)

    assert applied(url, "0003_item_name_index")
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute(
            "SELECT indisvalid AND indisready FROM pg_index WHERE indexrelid = to_regclass(%s)", [INDEX_NAME]
        ).fetchone() == (True,)
        assert conn.execute(sql.SQL("SELECT name FROM {}").format(sql.Identifier(TABLE))).fetchall() == [("held",)]


def test_only_a_migration_that_can_run_again_is_retried():
    index = AddIndexConcurrentlyRetrying(model_name="item", index=Index(fields=["name"], name="item_name"))
    cases = {
        "atomic": (True, [RunSQL("ALTER TABLE t ADD COLUMN c int")]),
        "non-atomic, idempotent operations": (False, [index, IdempotentRunSQL("DROP INDEX IF EXISTS i")]),
        "non-atomic, a plain RunSQL": (False, [index, RunSQL("INSERT INTO t VALUES (1)")]),
    }
    verdicts = {}
    for name, (atomic, operations) in cases.items():
        migration_ = type("Migration", (Migration,), {"atomic": atomic, "operations": operations})("0002_x", "app")
        verdicts[name] = can_retry(migration_, connection)

    assert verdicts == {
        "atomic": True,
        "non-atomic, idempotent operations": True,
        "non-atomic, a plain RunSQL": False,
    }

"""Django's migrate, waiting at most MIGRATION_LOCK_TIMEOUT_MS for any lock and trying again.

A migration that waits for a table's lock queues every later query on that table behind it; with a
short lock_timeout it gives up first, and the traffic goes on. The failed migration is then tried
again (project.db.migrations.can_retry says when that is safe) after a jittered, doubling pause, at
most MIGRATION_LOCK_RETRIES times, each retry logged. Migrations applied before the failed one are
recorded, so a retry starts at the failed one: running the whole command again is the retry.
"""

import logging
import time

from django.conf import settings
from django.core.management.base import CommandError
from django.core.management.commands import migrate
from django.db import OperationalError, connections

from project.db.migrations import can_retry, migration_session, retry_pause
from project.db.transactions import is_lock_error

logger = logging.getLogger("stockroom.migrations")


class Command(migrate.Command):
    help = migrate.Command.help + " Waits at most MIGRATION_LOCK_TIMEOUT_MS for a lock, then retries."

    def migration_progress_callback(self, action, migration=None, fake=False):
        # The migration being applied when an error comes out of Django's executor.
        if action in ("apply_start", "unapply_start"):
            self.running_migration = migration
        elif action in ("apply_success", "unapply_success"):
            self.running_migration = None
        super().migration_progress_callback(action, migration, fake)

    def handle(self, *args, **options):
        connection = connections[options["database"]]
        if connection.settings_dict.get("POOLER"):
            # Its session limits (project.db.migrations) would stay on a pooled server connection.
            raise CommandError("migrate needs a session of its own: run it with DB_DIRECT=1 (DATABASE_DIRECT_URL)")
        retries = settings.MIGRATION_LOCK_RETRIES
        for attempt in range(1, retries + 2):
            self.running_migration = None
            try:
                with migration_session(connection, lock_timeout_ms=settings.MIGRATION_LOCK_TIMEOUT_MS):
                    return super().handle(*args, **options)
            except OperationalError as exc:
                migration = self.running_migration
                if not is_lock_error(exc) or migration is None:
                    raise
                if not can_retry(migration, connection):
                    raise CommandError(
                        f"{migration.app_label}.{migration.name} met a lock ({exc}) and is not retried: it is not"
                        " atomic and not every operation is idempotent (project.db.migrations). Some of its"
                        " operations may have run; check them, then run migrate again."
                    ) from exc
                if attempt > retries:
                    raise CommandError(
                        f"{migration.app_label}.{migration.name} still met a lock after {attempt} attempts"
                        f" of {settings.MIGRATION_LOCK_TIMEOUT_MS} ms each: {exc}"
                    ) from exc
                pause = retry_pause(attempt, max_seconds=settings.MIGRATION_RETRY_MAX_PAUSE_SECONDS)
                logger.warning(
                    "migration %s.%s waited %d ms for a lock and gave up (%s); attempt %d of %d in %.2f s",
                    migration.app_label,
                    migration.name,
                    settings.MIGRATION_LOCK_TIMEOUT_MS,
                    type(exc.__cause__).__name__,
                    attempt + 1,
                    retries + 1,
                    pause,
                )
                if options["verbosity"] >= 1:
                    self.stdout.write(
                        self.style.WARNING(
                            f"\n  {migration.app_label}.{migration.name}: lock not granted within"
                            f" {settings.MIGRATION_LOCK_TIMEOUT_MS} ms, retrying in {pause:.2f} s"
                        )
                    )
                time.sleep(pause)
        raise AssertionError("unreachable")

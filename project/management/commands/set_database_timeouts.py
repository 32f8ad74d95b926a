import psycopg
from django.core.management.base import BaseCommand
from django.db import connections
from psycopg import sql as psql

from project.db.pooler import session_connection_params, timeout_statements


class Command(BaseCommand):
    help = (
        "Make DB_STATEMENT_TIMEOUT_MS, DB_LOCK_TIMEOUT_MS and DB_IDLE_IN_TRANSACTION_TIMEOUT_MS the database's own"
        " defaults (ALTER DATABASE ... SET), over the direct connection. Needed behind PgBouncer"
        " (DATABASE_POOLER=pgbouncer), where no startup options carry them; run again when they change."
    )

    def add_arguments(self, parser):
        parser.add_argument("--sql", action="store_true", help="Print the statements instead of running them.")

    def handle(self, *args, sql=False, **options):
        # The session's own database: behind a pooler the direct URL's (the pooler may name it otherwise).
        params = session_connection_params(connections["default"])
        statements = timeout_statements(params["dbname"], lambda name: psql.Identifier(name).as_string())
        if sql:
            self.stdout.write(";\n".join(statements) + ";")
            return
        with psycopg.connect(**params, autocommit=True) as connection:
            for statement in statements:
                connection.execute(statement)
        self.stdout.write(
            f"{params['dbname']}: {len(statements)} defaults set. New sessions start with them; behind PgBouncer"
            " run RECONNECT on its admin console so its open server connections are replaced."
        )

"""Behind a transaction-mode pooler (DATABASE_POOLER=pgbouncer): the limits every session must
carry, their check, and the way to a session of one's own.

PgBouncer in transaction mode lends a server connection for one transaction, then gives it to
another client. Whatever a client leaves in the session is lost to it, or leaks to the next:

- the limits (statement_timeout, lock_timeout, idle_in_transaction_session_timeout) can no longer
  ride in the `options` startup parameter: PgBouncer 1.18 refuses it, and listing it in
  `ignore_startup_parameters` would drop them without a word. They are the database's own
  defaults instead (`ALTER DATABASE ... SET`, `manage.py set_database_timeouts`), which every
  server connection PgBouncer opens starts with, for nothing per transaction (a `SET LOCAL` in
  every transaction would cost a statement each, and Django's autocommit reads have no
  transaction to put it in). Defaults can be missing or stale, so every new connection through
  the pooler checks them (`verify_session_limits`) and is refused if they differ.
- prepared statements, LISTEN and WITH HOLD cursors live in a session: preparation is off and
  server-side cursors are disabled (project.settings.base.database_settings); what needs a session
  (the relay's LISTEN, migrate) connects to PostgreSQL itself (`session_connection_params`,
  DB_DIRECT=1).
"""

import logging

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connections

logger = logging.getLogger("stockroom.db")

SESSION_LIMITS = ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout")


class SessionLimitsMissing(ImproperlyConfigured):
    """A connection through the pooler runs without the configured limits."""


def configured_limits() -> dict[str, int]:
    """The limits every session must carry, in milliseconds (DB_*_TIMEOUT_MS)."""
    return {
        "statement_timeout": settings.DB_STATEMENT_TIMEOUT_MS,
        "lock_timeout": settings.DB_LOCK_TIMEOUT_MS,
        "idle_in_transaction_session_timeout": settings.DB_IDLE_IN_TRANSACTION_TIMEOUT_MS,
    }


def session_limits(pg_connection) -> dict[str, int]:
    """The limits in force on a psycopg connection, in milliseconds (one round trip)."""
    with pg_connection.cursor() as cursor:
        cursor.execute(
            "SELECT name, setting::bigint FROM pg_settings WHERE name = ANY(%s)",
            [list(SESSION_LIMITS)],
        )
        return dict(cursor.fetchall())


def verify_session_limits(pg_connection, *, alias: str, pooler: str) -> None:
    """Raise SessionLimitsMissing (and log it as critical) unless the connection carries the
    configured limits. Run on every new connection through the pooler: with PgBouncer a missing
    `ALTER DATABASE ... SET` would otherwise leave every query without a timeout, unnoticed."""
    found = session_limits(pg_connection)
    expected = configured_limits()
    wrong = {name: found.get(name) for name, value in expected.items() if found.get(name) != value}
    if wrong:
        shown = ", ".join(f"{name}={value}ms (configured {expected[name]}ms)" for name, value in wrong.items())
        message = (
            f"database {alias!r} through {pooler}: {shown}. Set them as the"
            " database's defaults with `manage.py set_database_timeouts` (PgBouncer: then RECONNECT on its console)"
        )
        logger.critical("connection refused: %s", message)
        raise SessionLimitsMissing(message)


def timeout_statements(database: str, quote_name) -> list[str]:
    """`ALTER DATABASE ... SET` for each limit: what every new session on `database` starts with."""
    return [
        f"ALTER DATABASE {quote_name(database)} SET {name} = {int(value)}"
        for name, value in configured_limits().items()
    ]


def session_connection_params(connection) -> dict:
    """psycopg.connect() keywords for a session of its own on `connection`'s database: PostgreSQL
    itself (DATABASE_DIRECT_URL) behind a pooler, else the connection's own parameters. No Django
    cursor class, nothing of the pool: for LISTEN and other session work beside Django's."""
    direct = connection.settings_dict.get("DIRECT")
    if direct is None:
        params = connection.get_connection_params()
        for key in ("cursor_factory", "context", "prepare_threshold", "pool"):
            params.pop(key, None)
        return params
    params = {"dbname": direct["NAME"], "client_encoding": "UTF8"}
    for key, param in (("USER", "user"), ("PASSWORD", "password"), ("HOST", "host"), ("PORT", "port")):
        if direct[key]:
            params[param] = direct[key]
    params.update({key: value for key, value in direct["OPTIONS"].items() if key != "prepare_threshold"})
    return params


def check_pooler_limits(app_configs=None, databases=None, **kwargs) -> list[checks.CheckMessage]:
    """`manage.py check --database default`: each pooled database's connections carry the limits."""
    errors = []
    for alias in databases or ():
        if not connections.settings[alias].get("POOLER"):
            continue
        try:
            connections[alias].ensure_connection()
        except SessionLimitsMissing as exc:
            errors.append(checks.Error(str(exc), id="stockroom.E101"))
        except DatabaseError as exc:
            message = f"database {alias!r} unreachable through the pooler: {exc}"
            errors.append(checks.Error(message, id="stockroom.E102"))
    return errors

"""PostgreSQL backend: django-prometheus's instrumented wrapper plus the circuit breaker, a pool
check that costs no round trip (project.db.backend.health) and a pool whose reconnection attempts
stay close together (project.db.backend.pool)."""

import psycopg
from django.core.exceptions import ImproperlyConfigured
from django.db.backends.postgresql import base as django_base
from django.db.backends.postgresql.psycopg_any import register_tzloader
from django.utils.asyncio import async_unsafe
from django_prometheus.db.backends.postgresql import base
from django_prometheus.db.common import ExportingCursorWrapper
from psycopg import pq
from psycopg.pq import Format

from project.db.backend.creation import DatabaseCreation
from project.db.backend.health import check_pooled_connection
from project.db.backend.pool import ReconnectingPool
from project.db.circuit import CircuitOpen, breaker_for
from project.db.pooler import verify_session_limits

# django-prometheus's instrumented cursor class, one per (cursor class, alias, vendor).
_cursor_classes: dict[tuple, type] = {}


class DatabaseWrapper(base.DatabaseWrapper):
    creation_class = DatabaseCreation  # behind a pooler: the test database over the direct connection

    def get_connection_params(self):
        """django-prometheus's parameters, without building a new cursor class on every call:
        Django asks for them on every connect, which with the pool is every request."""
        params = django_base.DatabaseWrapper.get_connection_params(self)
        params["cursor_factory"] = self._instrumented(params["cursor_factory"])
        return params

    def _instrumented(self, cursor_class: type) -> type:
        """django-prometheus's instrumented subclass of `cursor_class` for this alias, built once."""
        key = (cursor_class, self.alias, self.vendor)
        if key not in _cursor_classes:
            _cursor_classes[key] = ExportingCursorWrapper(*key)
        return _cursor_classes[key]

    # Django's private pool internals are used here and nowhere else: the class-level registry
    # `_connection_pools` (alias -> pool, shared by every thread's wrapper) and
    # `_configure_connection`, which Django's own `pool` property hands the pool. Django 5.1 added
    # both with the pool; tests/project/db/test_backend.py fails if either changes.

    def opened_pool(self):
        """This alias's pool if one was built, else None: unlike `pool`, never builds or opens one
        (the pool metrics read it on every request, project.observability.pool)."""
        return self._connection_pools.get(self.alias)

    @property
    def pool(self):
        """Django's pool property, building project.db.backend.pool.ReconnectingPool (reconnection
        attempts at most DB_POOL_MAX_RECONNECT_DELAY apart) lending through the check of
        project.db.backend.health. Django names both the class and psycopg_pool's own check."""
        pool_options = self.settings_dict["OPTIONS"].get("pool")
        if self.alias == django_base.NO_DB_ALIAS or not pool_options:
            return None
        if self.alias not in self._connection_pools:
            if self.settings_dict.get("CONN_MAX_AGE", 0) != 0:
                raise ImproperlyConfigured("Pooling doesn't support persistent connections.")
            connect_kwargs = self.get_connection_params()
            connect_kwargs["autocommit"] = True  # as Django does; it sets autocommit later on
            pool = ReconnectingPool(
                kwargs=connect_kwargs,
                open=False,  # opened on first use, as Django does
                configure=self._configure_pooled_connection,
                check=check_pooled_connection if self.settings_dict["CONN_HEALTH_CHECKS"] else None,
                **pool_options,
            )
            # Threads racing here each build a pool; the first one stored wins, as in Django.
            self._connection_pools.setdefault(self.alias, pool)
        return self._connection_pools[self.alias]

    def _configure_pooled_connection(self, connection) -> None:
        """Django's configuration of a new pool connection, then (behind a pooler) the check of its
        limits: a connection without them is discarded by the pool, never lent."""
        self._configure_connection(connection)
        self._verify_behind_pooler(connection)

    def _verify_behind_pooler(self, connection) -> None:
        """Behind a transaction-mode pooler the limits are the database's defaults, not startup
        options: refuse a connection that does not carry them (project.db.pooler)."""
        if pooler := self.settings_dict.get("POOLER"):
            try:
                verify_session_limits(connection, alias=self.alias, pooler=pooler)
            finally:
                if connection.info.transaction_status != pq.TransactionStatus.IDLE:
                    connection.rollback()  # the check's own transaction (not in autocommit yet)

    @async_unsafe
    def prepared_cursor(self):
        """A cursor that binds its parameters on the server, so psycopg prepares a statement once it
        has run `prepare_threshold` times on a connection (settings: 5) and PostgreSQL then skips
        parsing and planning it. Django's cursors bind on the client: nothing they send is ever
        prepared. For the fixed statements of every request (psycopg keeps 100 per connection,
        dropping the least recently used): the bearer key lookup's PostgreSQL CPU went from about
        200 to 90-130 µs. Execute wrappers (the slow-query log) and query metrics see its
        statements like any other.

        Behind a transaction-mode pooler (PgBouncer 1.18 keeps no prepared statement across
        transactions, and two clients' statements of one name would meet on one server) it is a
        plain cursor."""
        if self.settings_dict.get("POOLER"):
            return self.cursor()
        self.close_if_health_check_failed()
        self.ensure_connection()
        with self.wrap_database_errors:
            cursor = self._instrumented(django_base.ServerBindingCursor)(self.connection)
            # As Django's create_cursor: the cursor's time zone, if the connection's differs.
            if self.timezone != self.connection.adapters.get_loader(django_base.TIMESTAMPTZ_OID, Format.TEXT).timezone:
                register_tzloader(self.timezone, cursor)
            return self._prepare_cursor(cursor)

    def get_new_connection(self, conn_params):
        breaker = breaker_for(self.alias)
        try:
            breaker.before_attempt()
        except CircuitOpen as exc:
            # A DB-API error, so Django wraps it as django.db.OperationalError like any outage.
            raise psycopg.OperationalError(str(exc)) from exc
        try:
            connection = super().get_new_connection(conn_params)
        except psycopg.OperationalError:
            breaker.failed()
            raise
        breaker.succeeded()
        if not self.settings_dict["OPTIONS"].get("pool"):  # the pool checked it when it connected
            try:
                self._verify_behind_pooler(connection)
            except BaseException:
                connection.close()
                raise
        return connection
